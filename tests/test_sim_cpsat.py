"""The CP-SAT profile in the simulator: cheaper than greedy on the bundled mixed cluster, reproducible."""

from __future__ import annotations

import csv
import filecmp
import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.world import Scheduler
from simulator.compare import compare
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from simulator.outputs import write_run
from tests.builders import make_job, make_pool, share, whole
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces/samples/synth-mixed.jsonl"
CLUSTER = ROOT / "traces/samples/mixed-cluster.toml"


def replay(profile: str, seed: int = 0, jobs: int | None = None, round_s: float = 0.0) -> object:
    trace = list(read_jobs(TRACE))[:jobs]
    options = SimOptions(seed=seed, check=True, round_s=round_s)
    return simulate(trace, load_cluster(CLUSTER), Scheduler(policies.profile(profile)), options)


def test_cost_cpsat_spends_less_than_cost_greedy_with_no_worse_queueing(tmp_path: Path) -> None:
    """The README's comparison: the bundled mixed trace and cluster, seeds 0-15 (the solver's
    work limit is deterministic, so these figures are the same on any machine with the same
    OR-Tools)."""
    rows, _ = compare(str(TRACE), str(CLUSTER), ["cost-greedy", "cost-cpsat"], 16, tmp_path)
    by_profile = {name: [r for r in rows if r["profile"] == name] for name in ("cost-greedy", "cost-cpsat")}
    greedy, cpsat = by_profile["cost-greedy"], by_profile["cost-cpsat"]
    assert all(r["completed"] == 600 for r in rows)
    assert sum(r["cost_usd"] for r in cpsat) < sum(r["cost_usd"] for r in greedy)
    assert max(r["queue_p95_s"] for r in cpsat) <= 1.1 * max(r["queue_p95_s"] for r in greedy)
    document = json.loads((tmp_path / "runs" / "cost-cpsat-seed0" / "summary.json").read_text(encoding="utf-8"))
    solver = document["solver"]
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
    assert {row["status"] for row in rows} <= {"OPTIMAL", "FEASIBLE", "UNKNOWN", "INFEASIBLE"}
    assert {row["used"] for row in rows} <= {"cpsat", "greedy"}
    assert all(float(row["gap"]) >= 0 and int(row["jobs"]) >= 1 for row in rows)
    assert "wall" not in rows[0]


def test_a_greedy_profile_writes_no_solver_record(tmp_path: Path) -> None:
    write_run(replay("cost-greedy", jobs=40), tmp_path / "run")  # type: ignore[arg-type]
    assert not (tmp_path / "run" / "solver.csv").exists()


def test_a_burst_that_greedy_strands_costs_it_a_new_node_and_cpsat_none() -> None:
    """Two jobs arrive together. cost-greedy gives the whole-GPU job the cheap shared node's free
    GPU; the 600m share then fits nowhere, and a shared node is bought for it. CP-SAT puts the
    whole-GPU job on the always-on plain node and the share beside the running one."""
    shared = replace(make_pool("shared", gpu="A10G", gpus_per_node=2, sharing=True, usd_per_node_hour=4.0,
                               nodes=1, max_nodes=2), provision_delay_s=300.0, idle_release_s=600.0)
    plain = make_pool("plain", gpus_per_node=1, usd_per_node_hour=10.0, nodes=1)
    cluster = Cluster("burst.toml", MappingProxyType({"shared": shared, "plain": plain}))
    jobs = [
        make_job("first", share(500, 2), submit_s=0, duration_s=4 * 3600),
        make_job("a-whole", whole(1), submit_s=10, duration_s=3600),
        make_job("b-share", share(600, 2), submit_s=10, duration_s=3600),
    ]
    runs = {}
    for profile in ("cost-greedy", "cost-cpsat"):
        result = simulate(jobs, cluster, Scheduler(policies.profile(profile)), SimOptions(check=True))
        runs[profile] = summary(result)
    greedy, cpsat = runs["cost-greedy"], runs["cost-cpsat"]
    assert greedy["nodes"]["provisioned"] == 1 and cpsat["nodes"]["provisioned"] == 0
    assert cpsat["cost_usd"]["total"] < greedy["cost_usd"]["total"]
    assert cpsat["queue_s"]["p95"] < greedy["queue_s"]["p95"]
