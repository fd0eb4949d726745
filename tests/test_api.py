"""The Python API is what the command runs: the same inputs give the same results either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fleetsched
from fleetsched.cli import main
from scheduler.errors import InputError
from simulator.metrics import summary
from simulator.outputs import write_run
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"


def test_simulate_gives_what_the_simulate_verb_writes(tmp_path: Path) -> None:
    trace, cluster = str(SAMPLES / "synth-2days.jsonl"), str(SAMPLES / "elastic-spot-cluster.toml")
    assert main(["simulate", "--trace", trace, "--cluster", cluster, "--profile", "cost-greedy", "--seed", "2",
                 "--out", str(tmp_path / "cli")]) == 0
    result = fleetsched.simulate(trace, cluster, "cost-greedy", seed=2)
    write_run(result, tmp_path / "api", {"trace": "synth-2days.jsonl", "cluster": "elastic-spot-cluster.toml"})
    for name in ("summary.json", "jobs.csv", "events.jsonl", "timeline.csv"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    assert summary(result)["jobs"]["total"] == 400


def test_plan_takes_paths_or_values_and_explains_what_waits() -> None:
    jobs = list(read_jobs(SAMPLES / "demo-jobs.jsonl"))
    by_path = fleetsched.plan(SAMPLES / "demo-cluster.toml", SAMPLES / "demo-jobs.jsonl", "cost-greedy")
    by_value = fleetsched.plan(SAMPLES / "demo-cluster.toml", jobs, fleetsched.load_profile("cost-greedy"))
    assert by_path.decision == by_value.decision and by_path.profile == "cost-greedy"
    assert len(by_path.decision.placements) + len(by_path.decision.pending) == len(jobs)
    assert all(pending.verdicts for pending in by_path.decision.pending.values() if pending.fits_nowhere)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda out: fleetsched.compare(SAMPLES / "synth-2days.jsonl", SAMPLES / "demo-cluster.toml", [], 1, out),
         "profiles"),
        (lambda out: fleetsched.compare(SAMPLES / "synth-2days.jsonl", SAMPLES / "demo-cluster.toml", ["default"], 0,
                                        out), "seeds"),
        (lambda out: fleetsched.simulate(SAMPLES / "synth-2days.jsonl", SAMPLES / "demo-cluster.toml", round_s=-1),
         "round_s"),
    ],
    ids=["no-profile", "no-seed", "negative-round"],
)
def test_bad_arguments_name_the_argument_and_write_nothing(call: object, field: str, tmp_path: Path) -> None:
    with pytest.raises(InputError) as raised:
        call(tmp_path / "out")  # type: ignore[operator]
    assert raised.value.field == field and not (tmp_path / "out").exists()


def test_compare_runs_every_profile_and_seed(tmp_path: Path) -> None:
    rows, jcts = fleetsched.compare(SAMPLES / "synth-2days.jsonl", SAMPLES / "elastic-spot-cluster.toml",
                                    ["default", "cost-greedy"], 2, tmp_path, workers=1)
    assert [(row["profile"], row["seed"]) for row in rows] == [("default", 0), ("default", 1), ("cost-greedy", 0),
                                                                ("cost-greedy", 1)]
    assert set(jcts) == {"default", "cost-greedy"}
    saved = json.loads((tmp_path / "runs" / "cost-greedy-seed1" / "summary.json").read_text(encoding="utf-8"))
    assert saved["run"]["seed"] == 1 and rows[3]["cost_usd"] == saved["cost_usd"]["total"]
