"""`fleetsched simulate` and `fleetsched compare`: outputs, the summary table, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fleetsched.cli import main

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(ROOT / "traces/samples/synth-2days.jsonl")
CLUSTER = str(ROOT / "traces/samples/elastic-spot-cluster.toml")


def test_simulate_writes_the_run_directory_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "--trace", TRACE, "--cluster", CLUSTER, "--profile", "cost-greedy", "--out", str(out),
                 "--check"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("profile cost-greedy, seed 0: 400 jobs, 400 completed")
    assert "pool h100-spot" in text and "cost        $" in text
    assert sorted(p.name for p in out.iterdir()) == [".fleetsched-run", "events.jsonl", "jobs.csv", "summary.json",
                                                    "timeline.csv"]
    document = json.loads((out / "summary.json").read_text())
    assert document["schema_version"] == 1 and document["run"]["trace"] == "synth-2days.jsonl"
    assert set(document["cost_usd"]) >= {"total", "idle", "attributed", "lost_work", "by_pool", "by_team"}
    assert abs(document["cost_usd"]["attributed"] + document["cost_usd"]["idle"] - document["cost_usd"]["total"]) < 0.011
    rows = list(csv.DictReader((out / "jobs.csv").open()))
    assert len(rows) == 400 and {row["outcome"] for row in rows} == {"completed"}
    assert abs(sum(float(r["cost_usd"]) for r in rows) - document["cost_usd"]["attributed"]) < 0.01 * len(rows)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[0]["event"] == "arrive" and all("t_s" in e for e in events)
    timeline = list(csv.DictReader((out / "timeline.csv").open()))
    assert {row["pool"] for row in timeline} == {"h100-od", "h100-spot", "h100-reserved"}
    assert not list(tmp_path.glob(".*partial*"))


def test_round_mode_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--trace", TRACE, "--cluster", CLUSTER, "--round-s", "600", "--out", str(tmp_path / "r")]) == 0
    document = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert document["queue_s"]["p50"] > 0, "jobs wait for the next round"
    capsys.readouterr()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--cluster": "bad-cluster"}, ":3: pool[0] (x).gpu: unknown GPU model"),
        ({"--trace": "bad-trace"}, ":2: duration_s: must be a finite number >= 0"),
        ({"--profile": "nope"}, "no bundled profile 'nope'"),
        ({"--trace": "empty-trace"}, "the trace has no job to replay"),
    ],
    ids=["cluster", "trace", "profile", "empty"],
)
def test_bad_input_fails_before_the_simulation_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, str], expected: str
) -> None:
    (tmp_path / "bad-cluster").write_text('[[pool]]\nname = "x"\ngpu = "Z9000"\ngpus_per_node = 8\nusd_per_node_hour = 1\n')
    (tmp_path / "bad-trace").write_text('{"id": "a", "duration_s": 5}\n{"id": "b", "duration_s": -5}\n')
    (tmp_path / "empty-trace").write_text("")
    arguments = {"--trace": TRACE, "--cluster": CLUSTER, "--profile": "default", "--out": str(tmp_path / "out")}
    for key, name in change.items():
        arguments[key] = name if key == "--profile" else str(tmp_path / name)
    if change.get("--trace") in ("bad-trace", "empty-trace"):
        arguments["--format"] = "jsonl"
    argv = ["simulate", *[item for pair in arguments.items() for item in pair]]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert expected in error and error.count("\n") == 1 and error.startswith("fleetsched: ")
    assert not (tmp_path / "out").exists()
    compare_argv = ["compare", *[item for key, value in arguments.items() if key != "--profile" for item in (key, value)],
                    "--profiles", change.get("--profile", "default")]
    assert main(compare_argv) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out" / "comparison.csv").exists()


def test_compare_runs_profiles_and_seeds_in_parallel_and_draws(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--trace", TRACE, "--cluster", CLUSTER, "--profiles", "default,cost-greedy", "--seeds", "2",
                 "--workers", "2", "--out", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["profile", "runs", "cost"]
    assert [line.split()[0] for line in table[1:3]] == ["default", "cost-greedy"]
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [(r["profile"], r["seed"]) for r in rows] == [("default", "0"), ("default", "1"), ("cost-greedy", "0"),
                                                          ("cost-greedy", "1")]
    by_profile = {r["profile"]: float(r["cost_usd"]) for r in rows if r["seed"] == "0"}
    assert by_profile["cost-greedy"] < by_profile["default"]
    for picture in ("cost_vs_queue.png", "jct_cdf.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["cost-greedy-seed0", "cost-greedy-seed1",
                                                                "default-seed0", "default-seed1"]
    assert main(["compare", "--trace", TRACE, "--cluster", CLUSTER, "--profiles", "default,cost-greedy", "--seeds", "2",
                 "--workers", "1", "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "comparison.csv").read_bytes() == (out / "comparison.csv").read_bytes()
    assert (tmp_path / "again" / "cost_vs_queue.png").read_bytes() == (out / "cost_vs_queue.png").read_bytes()


def test_progress_goes_to_stderr_in_whole_percent_steps(capsys: pytest.CaptureFixture[str]) -> None:
    from fleetsched.simulate_verbs import _progress

    for done in range(1, 201):
        _progress(done, 200)
    err = capsys.readouterr().err
    assert err.count("\r") == 100 and err.endswith("replayed 200/200 jobs (100%)\n")
