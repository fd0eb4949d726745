"""The CP-SAT profile in the simulator: cheaper than greedy on the bundled mixed cluster, reproducible."""

from __future__ import annotations

import csv
import filecmp
import json
from pathlib import Path

import policies
from scheduler.cluster import load_cluster
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from simulator.outputs import write_run
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces/samples/synth-mixed.jsonl"
CLUSTER = ROOT / "traces/samples/mixed-cluster.toml"


def replay(profile: str, seed: int = 0, jobs: int | None = None, round_s: float = 0.0) -> object:
    trace = list(read_jobs(TRACE))[:jobs]
    options = SimOptions(seed=seed, check=True, round_s=round_s)
    return simulate(trace, load_cluster(CLUSTER), Scheduler(policies.profile(profile)), options)


def test_cost_cpsat_spends_less_than_cost_greedy_with_no_worse_queueing() -> None:
    """Scheduling sessions of 60 s (the README's comparison), seeds 0-2: the mean cost is lower."""
    greedy = [summary(replay("cost-greedy", seed, round_s=60)) for seed in range(3)]  # type: ignore[arg-type]
    cpsat = [summary(replay("cost-cpsat", seed, round_s=60)) for seed in range(3)]  # type: ignore[arg-type]
    assert all(run["jobs"]["completed"] == 600 for run in greedy + cpsat)
    assert sum(run["cost_usd"]["total"] for run in cpsat) < sum(run["cost_usd"]["total"] for run in greedy)
    for mine, theirs in zip(cpsat, greedy, strict=True):
        assert mine["queue_s"]["p95"] <= 1.1 * theirs["queue_s"]["p95"]
    assert "solver" not in greedy[0]
    solver = cpsat[0]["solver"]
    assert solver["cycles"] > 0 and solver["optimal"] <= solver["cycles"]
    assert 0 <= solver["gap_mean"] <= solver["gap_max"]


def test_same_trace_and_seed_give_byte_identical_runs_with_the_solver_record(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_run(replay("cost-cpsat", seed=3, jobs=150), tmp_path / name)  # type: ignore[arg-type]
    files = ["summary.json", "jobs.csv", "events.jsonl", "timeline.csv", "solver.csv"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert match == files and not mismatch and not errors
    with (tmp_path / "a" / "solver.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    document = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert len(rows) == document["solver"]["cycles"]
    assert {row["status"] for row in rows} <= {"OPTIMAL", "FEASIBLE", "UNKNOWN"}
    assert {row["used"] for row in rows} <= {"cpsat", "greedy"}
    assert all(float(row["gap"]) >= 0 and int(row["jobs"]) >= 1 for row in rows)
    assert "wall" not in rows[0]


def test_a_greedy_profile_writes_no_solver_record(tmp_path: Path) -> None:
    write_run(replay("cost-greedy", jobs=40), tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run" / "solver.csv").exists()
