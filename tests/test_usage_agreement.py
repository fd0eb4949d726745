"""Both paths agree: a replay of GenTD26's sample and `fleetsched usage` on the same series written as
the agent's record file find the same allocated, idle GPU-hours and dollars, per pod, team and in all."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import policies
from fleetsched.cli import main
from scheduler.cluster import load_cluster
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from traces.formats import read_trace_jobs

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"
TRACE = SAMPLES / "gentd26" / "pod_gpu_duty_cycle_anon.csv"
CLUSTER = SAMPLES / "gentd26-cluster.toml"


def replayed() -> dict[str, Any]:
    jobs = list(read_trace_jobs(TRACE))
    result = simulate(jobs, load_cluster(CLUSTER), Scheduler(policies.profile("default")), SimOptions(check=True))
    measured: dict[str, Any] = summary(result)["measured"]
    return measured


def reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    record = tmp_path / "record.jsonl"
    assert main(["usage", "agent-record", str(TRACE), "--gpu-model", "A100-80GB", "--out", str(record)]) == 0
    capsys.readouterr()
    assert main(["usage", "report", str(record), "--cluster", str(CLUSTER), "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_the_replay_and_the_agent_path_agree_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replay, usage = replayed(), reported(tmp_path, capsys)
    assert usage["rule"]["period_s"] == 57.0  # the series' own period, found in the record
    assert usage["gpu_hours"] == replay["gpu_hours"] and usage["usd"] == replay["usd"]
    assert 0 < usage["gpu_hours"]["idle"] < usage["gpu_hours"]["allocated"]
    assert {pod.removeprefix("gentd26/") for pod in usage["by_pod"]} == set(replay["by_job"])
    for job, expected in replay["by_job"].items():
        found = usage["by_pod"][f"gentd26/{job}"]
        assert (found["gpu_hours"], found["usd"], found["team"]) == (expected["gpu_hours"], expected["usd"],
                                                                      expected["team"]), job  # fmt: skip
    for team, expected in replay["by_team"].items():
        assert (usage["by_team"][team]["gpu_hours"], usage["by_team"][team]["usd"]) == (expected["gpu_hours"],
                                                                                        expected["usd"])  # fmt: skip


def test_the_idle_pod_of_the_sample_is_idle_all_but_its_unmeasured_minutes() -> None:
    # 9032a010 reads 0 % in every sample it has: idle wherever samples speak, its five missed
    # scrapes inside the gap (<= 171 s) included; what its series does not cover is not idle.
    pod = next(value for key, value in replayed()["by_job"].items() if key.startswith("9032a010"))
    assert pod["gpu_hours"]["idle"] == pod["gpu_hours"]["measured"] > 0


def test_the_record_is_the_same_bytes_each_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("one.jsonl", "two.jsonl"):
        assert (
            main(["usage", "agent-record", str(TRACE), "--gpu-model", "A100-80GB", "--out", str(tmp_path / name)]) == 0
        )
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    first = json.loads((tmp_path / "one.jsonl").read_text().splitlines()[0])
    assert first["metric"]["__name__"] == "DCGM_FI_DEV_GPU_UTIL" and first["metric"]["modelName"] == "NVIDIA A100-80GB"


def test_a_job_without_a_gpu_model_needs_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["usage", "agent-record", str(TRACE), "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "gpu_models: the job names no single GPU model; give --gpu-model" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists() and not list(tmp_path.iterdir())


def test_a_share_cannot_be_written_as_agent_metrics(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "jobs.jsonl"
    trace.write_text('{"id": "s", "duration_s": 120, "gpu_milli": 500, "gpu_util_percent": [0, 1]}\n', encoding="utf-8")
    assert main(["usage", "agent-record", str(trace), "--gpu-model", "H100", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "s: gpu_milli: a share of a GPU cannot be written" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()
