"""The Azure LLM inference reader: a replica schedule worked out by hand, bad input, the rate table, determinism.

The hand-made trace (`TINY`), read with a replica of 100 input and 10 output tokens/s
(2 GPUs at 50 and 5 each), 60 s windows, target utilisation 0.5 (30 busy seconds per replica
per window), at least 1 replica, scale-down after 2 windows:

| window | requests (line: input, output) | busy s | need | replicas = max(1, need of the last 2) |
|---|---|---|---|---|
| 0 [0, 60) | 2: 1000, 100; 3: 500, 200 | 20 + 25 = 45 | 2 | 2 |
| 1 [60, 120) | 4: 300, 0 | 3 | 1 | 2 |
| 2 [120, 180) | none | 0 | 0 | 1 |
| 3 [180, 240) | 5: 2000, 500; 6: 100, 10 | 70 + 2 = 72 | 3 | 3 |
| 4 [240, 300) | 7: 0, 5 | 0.5 | 1 | 3 |

Round-robin (request k of a window to replica k mod n): replica 0 runs windows 0-4 and serves
lines 2, 4, 5, 7 (4 requests, 3,300 input, 605 output tokens); replica 1 runs windows 0-1
(line 3) and again 3-4 (line 6); replica 2 runs windows 3-4 and serves nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fleetsched.cli import main
from fleetsched.trace_verbs import WRITERS
from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, JobKind, Labels
from scheduler.observed import Served
from traces.azure_llm import (
    SERVICE_PRIORITY,
    AzureLlmServices,
    Scaling,
    ThroughputTable,
    service_name,
    shipped_throughputs,
    two_point_fit,
)
from traces.base import ReadReport, read_rows, replayed
from traces.canonical import to_job, to_record
from traces.formats import FORMATS, detect, read_trace_jobs

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"
SAMPLE = SAMPLES / "azure-llm-conv.csv"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
TINY = HEADER + (
    "2023-11-16 18:00:00.0000000,1000,100\n"
    "2023-11-16 18:00:30.0000000,500,200\n"
    "2023-11-16 18:01:10.5000000,300,0\n"
    "2023-11-16 18:03:20.0000001,2000,500\n"
    "2023-11-16 18:03:50.0000000,100,10\n"
    "2023-11-16 18:04:10.0000000,0,5\n"
)
TABLE: dict[str, Any] = {"llm": "Tiny-LLM", "gpus": {"A100-80GB": {"gpus_per_replica": 2, "prefill_tokens_per_s_per_gpu": 50,
                                                   "decode_tokens_per_s_per_gpu": 5, "source": "by hand"}}}  # fmt: skip
SCALING = Scaling(window_s=60.0, target_utilisation=0.5, min_replicas=1, scale_down_windows=2)


def tiny_reader() -> AzureLlmServices:
    return AzureLlmServices("A100-80GB", SCALING, ThroughputTable.from_json(TABLE, "hand", default_catalog()))


def write(tmp_path: Path, text: str, name: str = "AzureLLMInferenceTrace_chat.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def replica(job_id: str, submit_s: float, duration_s: float, served: tuple[int, int, int]) -> Job:
    requests, input_tokens, output_tokens = served
    return Job(
        id=job_id, request=GpuRequest(gpus=2), submit_s=submit_s, duration_s=duration_s,
        gpu_models=frozenset({"A100-80GB"}), priority=SERVICE_PRIORITY, kind=JobKind.SERVICE,
        labels=Labels(team="inference", project="chat", model="Tiny-LLM"),
        served=Served(service="chat", requests=requests, input_tokens=input_tokens, output_tokens=output_tokens),
    )  # fmt: skip


def test_the_replica_schedule_of_a_tiny_trace_is_the_hand_computed_one(tmp_path: Path) -> None:
    report = ReadReport("tiny")
    rows = list(read_rows(write(tmp_path, TINY), tiny_reader(), report=report))
    assert [row.job for row in rows] == [
        replica("chat-r1-w0", 0.0, 120.0, (1, 500, 200)),  # ended first, submitted with replica 0
        replica("chat-r0-w0", 0.0, 300.0, (4, 3300, 605)),
        replica("chat-r1-w3", 180.0, 120.0, (1, 100, 10)),
        replica("chat-r2-w3", 180.0, 120.0, (0, 0, 0)),
    ]
    assert [row.line for row in rows] == [2, 2, 5, 5]  # the first request of the window a run began in
    assert (report.rows, report.jobs, report.skipped) == (4, 4, [])


def test_every_request_and_token_of_the_sample_is_served_by_exactly_one_replica() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[1:]
    columns = [line.split(",") for line in lines]
    jobs = list(read_trace_jobs(SAMPLE))
    served = [job.served for job in jobs if job.served is not None]
    assert len(served) == len(jobs) and {each.service for each in served} == {"conv"}
    assert sum(each.requests for each in served) == len(lines) == 2932
    assert sum(each.input_tokens for each in served) == sum(int(values[1]) for values in columns)
    assert sum(each.output_tokens for each in served) == sum(int(values[2]) for values in columns)
    assert [job.submit_s for job in jobs] == sorted(job.submit_s for job in jobs)


def test_scale_down_waits_for_the_stabilisation_window_and_min_replicas_holds(tmp_path: Path) -> None:
    table = ThroughputTable.from_json(TABLE, "hand", default_catalog())
    path = write(tmp_path, TINY)
    without = AzureLlmServices("A100-80GB", replace(SCALING, scale_down_windows=1, min_replicas=0), table)
    ids = {job.id: job.duration_s for job in replayed(read_rows(path, without))}
    # Need 2, 1, 0, 3, 1: replica 1 leaves after window 0, replica 0 after window 1 and comes back.
    assert ids == {"chat-r0-w0": 120.0, "chat-r1-w0": 60.0, "chat-r0-w3": 120.0, "chat-r1-w3": 60.0, "chat-r2-w3": 60.0}
    floor = AzureLlmServices("A100-80GB", replace(SCALING, min_replicas=4), table)
    assert {job.id for job in replayed(read_rows(path, floor))} == {f"chat-r{i}-w0" for i in range(4)}


def test_the_format_is_detected_and_the_h100_variant_pins_h100(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    assert detect(path).name == "azure-llm" and detect(SAMPLE).name == "azure-llm"
    a100 = next(read_trace_jobs(SAMPLE))
    h100 = next(read_trace_jobs(SAMPLE, "azure-llm-h100"))
    assert a100.gpu_models == frozenset({"A100-80GB"}) and h100.gpu_models == frozenset({"H100-80GB"})
    assert a100.request.gpus == h100.request.gpus == 4 and a100.labels.model == "Llama-2-70B"
    assert service_name(SAMPLE) == "conv" and service_name(Path("AzureLLMInferenceTrace_code.csv")) == "code"
    assert service_name(Path("mine.csv")) == "mine"
    assert "azure-llm-h100" in FORMATS


def test_replicas_are_preemptible_only_when_the_reader_is_told(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    table = ThroughputTable.from_json(TABLE, "hand", default_catalog())
    spot = AzureLlmServices("A100-80GB", SCALING, table, preemptible=True)
    assert {job.preemptible for job in replayed(read_rows(path, spot))} == {True}
    assert {job.preemptible for job in replayed(read_rows(path, tiny_reader()))} == {False}


def test_requests_without_tokens_still_get_a_replica(tmp_path: Path) -> None:
    table = ThroughputTable.from_json(TABLE, "hand", default_catalog())
    reader = AzureLlmServices("A100-80GB", replace(SCALING, min_replicas=0, scale_down_windows=1), table)
    text = HEADER + "2023-11-16 18:00:00,0,0\n2023-11-16 18:02:00,0,0\n"
    jobs = list(replayed(read_rows(write(tmp_path, text), reader)))
    assert [(job.id, job.duration_s, job.served) for job in jobs] == [
        ("chat-r0-w0", 60.0, Served(service="chat", requests=1)),
        ("chat-r0-w2", 60.0, Served(service="chat", requests=1)),
    ]


def test_reading_twice_gives_the_same_jobs(tmp_path: Path) -> None:
    path = write(tmp_path, TINY)
    assert list(replayed(read_rows(path, tiny_reader()))) == list(replayed(read_rows(path, tiny_reader())))
    assert list(read_trace_jobs(SAMPLE)) == list(read_trace_jobs(SAMPLE))


def test_a_replica_round_trips_through_the_canonical_record() -> None:
    job = replica("chat-r0-w0", 0.0, 300.0, (4, 3300, 605))
    record = to_record(job)
    assert (record["service"], record["requests"], record["input_tokens"], record["output_tokens"]) == (
        "chat", 4, 3300, 605)  # fmt: skip
    assert to_job(record) == job
    assert "service" not in to_record(replace(job, served=None))


def test_a_record_with_tokens_but_no_service_is_named() -> None:
    with pytest.raises(InputError) as caught:
        to_job({"id": "x", "duration_s": 60, "requests": 3}, source="r.jsonl", line=7)
    assert (caught.value.source, caught.value.line, caught.value.field) == ("r.jsonl", 7, "service")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_converted_replicas_keep_what_they_serve(tmp_path: Path, suffix: str) -> None:
    jobs = list(replayed(read_rows(write(tmp_path, TINY), tiny_reader())))
    out = tmp_path / f"converted{suffix}"
    assert WRITERS[suffix](jobs, out) == 4
    assert list(read_trace_jobs(out)) == jobs


# -- the rate table -----------------------------------------------------------------------------


def test_the_shipped_rates_are_the_fit_of_their_published_points() -> None:
    from importlib import resources

    data = json.loads((resources.files("scheduler") / "data" / "llm_throughput.json").read_text(encoding="utf-8"))
    table = shipped_throughputs()
    assert set(table.rates) == {"A100-80GB", "H100-80GB"} and table.llm == "Llama-2-70B"
    for model, entry in data["gpus"].items():
        points = [(p["input_tokens"], p["output_tokens"], p["output_tokens_per_s_per_gpu"]) for p in entry["measured"]]
        prefill, decode = two_point_fit(points)
        assert (round(prefill), round(decode)) == (entry["prefill_tokens_per_s_per_gpu"],
                                                   entry["decode_tokens_per_s_per_gpu"])  # fmt: skip
        rate = table.rates[model]
        assert rate.prefill_tokens_per_s == round(prefill) * rate.gpus_per_replica
        assert rate.decode_tokens_per_s == round(decode) * rate.gpus_per_replica
        assert "77d24b5fa178f11ed7fafdd9833b7245e075f721" in rate.source


def test_the_two_point_fit_recovers_known_rates() -> None:
    # A replica at 1,000 prefill and 100 decode tokens/s: 100 in + 100 out takes 1.1 s (90.9 out/s),
    # 1,000 in + 10 out 1.1 s (9.09 out/s).
    prefill, decode = two_point_fit([(100, 100, 100 / 1.1), (1000, 10, 10 / 1.1)])
    assert prefill == pytest.approx(1000.0) and decode == pytest.approx(100.0)


# -- bad input, one case each -------------------------------------------------------------------


def failure(tmp_path: Path, text: str, reader: AzureLlmServices | None = None) -> InputError:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        list(read_rows(path, reader or tiny_reader()))
    assert caught.value.source == str(path)
    return caught.value


def located(error: InputError) -> tuple[int | None, str | None]:
    return error.line, error.field


def test_a_missing_column_is_named_at_line_1(tmp_path: Path) -> None:
    error = failure(tmp_path, "TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,1\n")
    assert located(error) == (1, "GeneratedTokens")


def test_a_bad_timestamp_is_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:00,1,1\nyesterday,1,1\n")
    assert located(error) == (3, "TIMESTAMP") and "yesterday" in error.problem


def test_a_timestamp_with_a_time_zone_is_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:00,1,1\n2023-11-16 18:00:01+00:00,1,1\n")
    assert located(error) == (3, "TIMESTAMP") and "time zone" in error.problem


def test_a_request_out_of_time_order_is_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:10,1,1\n2023-11-16 18:00:09,1,1\n")
    assert located(error) == (3, "TIMESTAMP") and "time order" in error.problem


def test_negative_context_tokens_are_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:00,-5,1\n")
    assert located(error) == (2, "ContextTokens")


def test_fractional_generated_tokens_are_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:00,5,1.5\n")
    assert located(error) == (2, "GeneratedTokens") and "whole number" in error.problem


def test_a_row_of_the_wrong_width_is_named(tmp_path: Path) -> None:
    error = failure(tmp_path, HEADER + "2023-11-16 18:00:00,5\n")
    assert error.line == 2 and "2 values for 3 columns" in error.problem


def test_a_gpu_model_without_a_rate_is_refused() -> None:
    with pytest.raises(InputError, match="no Llama-2-70B throughput for 'T4'; known: A100-80GB, H100-80GB"):
        AzureLlmServices("T4")


def test_a_table_naming_an_unknown_gpu_is_refused() -> None:
    table: dict[str, Any] = {"gpus": {"Z9000": TABLE["gpus"]["A100-80GB"]}}
    with pytest.raises(InputError) as caught:
        ThroughputTable.from_json(table, "t.json", default_catalog())
    assert (caught.value.source, caught.value.field) == ("t.json", "gpus.Z9000")


def test_a_table_rate_that_is_not_positive_is_named(tmp_path: Path) -> None:
    entry = {**TABLE["gpus"]["A100-80GB"], "decode_tokens_per_s_per_gpu": 0}
    path = write(tmp_path, json.dumps({"gpus": {"A100-80GB": entry}}), "t.json")
    with pytest.raises(InputError) as caught:
        ThroughputTable.load(path)
    assert caught.value.field == "gpus.A100-80GB.decode_tokens_per_s_per_gpu"


def test_a_target_utilisation_outside_0_1_is_refused() -> None:
    with pytest.raises(InputError) as caught:
        Scaling(target_utilisation=1.5)
    assert caught.value.field == "target_utilisation"


def test_the_cli_names_file_line_and_field_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, HEADER + "2023-11-16 18:00:00,5,1\n2023-11-16 18:00:01,5,x\n")
    out = tmp_path / "run"
    code = main(["simulate", "--trace", str(path), "--cluster", str(SAMPLES / "azure-llm-a100-cluster.toml"),
                 "--out", str(out)])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == f"fleetsched: {path}:3: GeneratedTokens: not a number: 'x'"
    assert not out.exists()
