"""`fleetsched usage report`: idle GPU-hours and dollars per team and pod from the agent's metrics, by hand.

Oracle (rule: under 5 % for 30 min, samples every 60 s; H100-80GB at $4 a GPU-hour):
- pod p1 (team a, a whole H100): 40 minutes at 0 %, then 20 at 50 %: allocated 1 GPU-hour
  ($4.00), idle 2,400 s = 0.666667 GPU-hours, $2.67. Its series comes in two record lines.
- pod p2 (team b, a MIG 3g.40gb instance, 3/7 of the GPU): 30 minutes at 0 %: allocated and
  idle 0.5 h x 3/7 = 0.214286 GPU-hours, $0.86 (exactly 6/7 dollars).
- a device no pod holds (no `pod` label) is skipped; a memory metric is ignored.
Total: allocated 1.214286 GPU-hours, $4.86; idle 0.880952 GPU-hours, $3.52 (8/3 + 6/7 = 74/21).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from fleetsched.cli import main
from tests.loopback_http import LoopbackHttp

LABELS = {"gpu": "0", "UUID": "GPU-1", "device": "nvidia0", "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "n1",
          "GPU_I_ID": "", "GPU_I_PROFILE": "", "namespace": "ml", "container": "c", "fleetsched_job": ""}  # fmt: skip


def element(
    pod: str, team: str, values: list[float], start_s: float = 1_700_000_000.0, **labels: str
) -> dict[str, Any]:
    metric = {"__name__": "DCGM_FI_DEV_GPU_UTIL", **LABELS, "pod": pod, "team": team, **labels}
    return {"metric": metric, "values": [[start_s + 60 * i, str(v)] for i, v in enumerate(values)]}


P1 = [0.0] * 40 + [50.0] * 20
P2_LABELS = {"UUID": "GPU-2", "GPU_I_ID": "2", "GPU_I_PROFILE": "3g.40gb"}


def elements() -> list[dict[str, Any]]:
    second_half = element("p1", "a", P1[30:], start_s=1_700_000_000.0 + 30 * 60)
    return [
        second_half,  # a series may span lines, in any order: joined by its labels, in time order
        element("p1", "a", P1[:30]),
        element("p2", "b", [0.0] * 30, **P2_LABELS),
        element("", "", [0.0] * 60, UUID="GPU-3"),
        {"metric": {"__name__": "DCGM_FI_DEV_FB_USED", **LABELS, "pod": "p1", "team": "a"}, "values": [[1.0, "9"]]},
    ]


def write_record(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["usage", "report", *argv, "--price", "H100-80GB=4", "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_the_report_matches_the_hand_computation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = report(capsys, str(write_record(tmp_path / "record.jsonl", elements())))
    p1, p2 = document["by_pod"]["ml/p1"], document["by_pod"]["ml/p2"]
    assert p1["gpu_hours"] == {"allocated": 1.0, "measured": 1.0, "idle": 0.666667}
    assert p1["usd"] == {"allocated": 4.0, "idle": 2.67} and p1["team"] == "a"
    assert p2["gpu_hours"] == {"allocated": 0.214286, "measured": 0.214286, "idle": 0.214286}
    assert p2["usd"] == {"allocated": 0.86, "idle": 0.86}
    assert document["gpu_hours"] == {"allocated": 1.214286, "measured": 1.214286, "idle": 0.880952}
    assert document["usd"] == {"allocated": 4.86, "idle": 3.52}
    assert document["by_team"]["a"]["usd"] == {"allocated": 4.0, "idle": 2.67}
    assert document["unallocated_series"] == 1
    assert document["rule"] == {"threshold_percent": 5.0, "window_s": 1800.0, "period_s": 60.0, "max_gap_s": 180.0}


def test_a_query_range_response_gives_the_same_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = report(capsys, str(write_record(tmp_path / "record.jsonl", elements())))
    response = {"status": "success", "data": {"resultType": "matrix", "result": elements()[1:]}}
    response["data"]["result"][0] = element("p1", "a", P1)  # Prometheus answers each series whole
    path = tmp_path / "range.json"
    path.write_text(json.dumps(response, indent=1), encoding="utf-8")
    assert report(capsys, str(path)) == record


def _query_range(path: str) -> tuple[int, bytes]:
    """Prometheus's /api/v1/query_range, answering the test's series."""
    if urlparse(path).path != "/api/v1/query_range":
        return 404, b""
    result = [element("p1", "a", P1), *elements()[2:]]
    return 200, json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}).encode()


@pytest.fixture
def prometheus_server() -> Iterator[LoopbackHttp]:
    server = LoopbackHttp(_query_range)
    yield server
    server.stop()


@pytest.fixture
def prometheus(prometheus_server: LoopbackHttp) -> str:
    return prometheus_server.url


def test_prometheus_is_asked_for_the_utilisation_over_the_range(
    prometheus_server: LoopbackHttp, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = report(capsys, str(write_record(tmp_path / "record.jsonl", elements())))
    fetched = report(capsys, "--prometheus", prometheus_server.url, "--start", "1700000000", "--end", "1700003600",
                     "--step", "60")  # fmt: skip
    assert fetched == record
    asked = [parse_qs(urlparse(path).query) for path in prometheus_server.paths]
    assert asked == [{"query": ["DCGM_FI_DEV_GPU_UTIL"], "start": ["1700000000"],
                                  "end": ["1700003600"], "step": ["60"]}]  # fmt: skip


def test_pods_sharing_one_device_split_it_evenly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = [element("p1", "a", [0.0] * 60), element("p3", "a", [0.0] * 60)]  # the same UUID and host
    document = report(capsys, str(write_record(tmp_path / "record.jsonl", lines)))
    assert document["by_pod"]["ml/p1"]["gpu_hours"]["allocated"] == 0.5
    assert document["by_team"]["a"]["usd"] == {"allocated": 4.0, "idle": 4.0}


def test_prices_come_from_a_cluster_files_pools(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[[pool]]\nname = "h"\ngpu = "H100-80GB"\ngpus_per_node = 8\nusd_per_node_hour = 20\n'
                       'nodes = 1\n', encoding="utf-8")  # fmt: skip
    record = str(write_record(tmp_path / "record.jsonl", [element("p1", "a", P1)]))
    assert main(["usage", "report", record, "--cluster", str(cluster), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["usd_per_gpu_hour"] == {"H100-80GB": 2.5}
    assert document["usd"] == {"allocated": 2.5, "idle": round(2.5 * 2 / 3, 2)}


def test_the_table_and_csv_say_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = str(write_record(tmp_path / "record.jsonl", elements()))
    assert main(["usage", "report", record, "--price", "H100-80GB=4", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("scope,name,team,series,allocated_gpu_hours")
    assert rows[1] == "total,,,2,1.214286,1.214286,0.880952,4.86,3.52"
    assert "pod,ml/p2,b,1,0.214286,0.214286,0.214286,0.86,0.86" in rows
    assert main(["usage", "report", record, "--price", "H100-80GB=4", "--top", "1"]) == 0
    table = capsys.readouterr().out
    assert "ml/p1" in table and "ml/p2" not in table and "$        3.52" in table


def test_the_same_input_gives_the_same_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = str(write_record(tmp_path / "record.jsonl", elements()))
    outputs = []
    for _ in range(2):
        assert main(["usage", "report", record, "--price", "H100-80GB=4", "--json"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(["usage", "report", *argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("fleetsched: ")
    return error


def test_a_line_that_is_not_json_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    path.write_text(path.read_text() + "{oops\n")
    assert f"{path}:2: not valid JSON" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_value_that_is_not_a_number_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = element("p1", "a", P1)
    line["values"][3][1] = "busy"
    path = write_record(tmp_path / "r.jsonl", [element("p2", "a", P1), line])
    assert f"{path}:2: values[3]: not a number: 'busy'" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_utilisation_over_100_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", [0.0, 130.0])])
    assert f"{path}:1: values[1]: a utilisation is a percentage" in refused(capsys, [str(path), "--price", "H100=4"])


def test_an_instant_given_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1[:3]), element("p1", "a", P1[:2])])
    assert f"{path}:2: values: a sample at 1.7e+09 already came (line 1)" in refused(capsys, [str(path), "--price",
                                                                                              "H100=4"])  # fmt: skip


def test_a_gpu_model_without_a_price_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    message = refused(capsys, [str(path), "--price", "A100-80GB=3"])
    assert f"{path}:1: modelName: no price for H100-80GB" in message


def test_an_unknown_gpu_model_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1, modelName="Voodoo 5")])
    assert f"{path}:1: modelName: unknown GPU model 'Voodoo 5'" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_mig_profile_the_gpu_lacks_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1, GPU_I_PROFILE="5g.50gb")])
    assert f"{path}:1: GPU_I_PROFILE: H100-80GB has no MIG profile" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_bad_price_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    assert "--price: not a price in dollars: 'four'" in refused(capsys, [str(path), "--price", "H100=four"])


def test_pools_pricing_one_model_differently_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "cluster.toml"
    pool = '[[pool]]\nname = "{}"\ngpu = "H100-80GB"\ngpus_per_node = 8\nusd_per_node_hour = {}\nnodes = 1\n'
    cluster.write_text(pool.format("od", 80) + pool.format("spot", 30), encoding="utf-8")
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    assert "price H100-80GB differently" in refused(capsys, [str(path), "--cluster", str(cluster)])


def test_a_failed_prometheus_response_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "range.json"
    path.write_text(json.dumps({"status": "error", "error": "bad query"}), encoding="utf-8")
    assert f"{path}: status: not a successful Prometheus response" in refused(capsys, [str(path), "--price", "H100=4"])


def test_prometheus_out_of_reach_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port just free: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    message = refused(capsys, ["--prometheus", closed, "--start", "0", "--end", "60", "--step", "60", "--price",
                               "H100=4"])  # fmt: skip
    assert "cannot reach Prometheus" in message


def test_prometheus_needs_its_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--end: --prometheus needs" in refused(
        capsys, ["--prometheus", "http://x", "--start", "0", "--price", "H100=1"]
    )


def test_an_http_error_from_prometheus_is_one_line(prometheus: str, capsys: pytest.CaptureFixture[str]) -> None:
    message = refused(capsys, ["--prometheus", f"{prometheus}/elsewhere", "--start", "0", "--end", "60", "--step",
                               "60", "--price", "H100=4"])  # fmt: skip
    assert "Prometheus answered HTTP 404" in message


def test_a_series_that_is_not_an_object_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(element("p1", "a", P1)) + "\n[1, 2]\n", encoding="utf-8")
    assert f"{path}:2: metric: a series is an object" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_nan_sample_is_refused_as_not_a_finite_number(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = element("p1", "a", [0.0] * 41)
    line["values"][20][1] = "NaN"  # kept, it would split 41 quiet minutes into two runs under the window: 0 % idle
    path = write_record(tmp_path / "r.jsonl", [line])
    assert f"{path}:1: values[20]: not a finite number: 'NaN'" in refused(capsys, [str(path), "--price", "H100=4"])


def test_a_negative_window_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    assert "--window-s: window_s must be" in refused(capsys, [str(path), "--price", "H100=4", "--window-s", "-1"])


def test_a_record_of_one_sample_a_line_reads_as_whole_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = report(capsys, str(write_record(tmp_path / "whole.jsonl", [element("p1", "a", P1)])))
    series = element("p1", "a", P1)
    ticks = [{"metric": series["metric"], "values": [[t_s, str(int(float(v)))]]} for t_s, v in series["values"]]
    assert report(capsys, str(write_record(tmp_path / "ticks.jsonl", ticks))) == whole  # as the agent appends them
