"""Comparing profiles: the same trace and cluster under several profiles and seeds, in parallel.

Each run is a separate process that reads its inputs itself and writes its own run directory
(`runs/<profile>-seed<N>/`); the parent gathers the summaries into `comparison.csv`, a table,
and the plots `cost_vs_queue.png` and `jct_cdf.png`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import policies
from scheduler.cluster import load_cluster
from scheduler.model import Job
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.outputs import run_into
from traces.formats import read_trace_jobs

COLUMNS = (
    "profile", "seed", "jobs", "completed", "unfinished", "cost_usd", "idle_usd", "lost_work_usd", "queue_mean_s",
    "queue_p95_s", "jct_mean_s", "jct_p95_s", "utilisation", "preemptions", "job_interruptions", "lost_gpu_hours",
)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of a comparison (plain paths and names, so it crosses process boundaries)."""

    trace: str
    trace_format: str | None
    cluster: str
    profile: str = ""
    seed: int = 0
    out: str = ""
    round_s: float = 0.0
    in_order: bool = True  # the trace comes in submit order: it is streamed


def run_one(spec: RunSpec) -> tuple[dict[str, Any], list[float]]:
    """Runs one replay, writing its run directory as it goes; returns its summary and its jobs' JCTs."""
    jobs = read_trace_jobs(spec.trace, spec.trace_format)
    cluster = load_cluster(spec.cluster)
    scheduler = Scheduler(policies.profile(spec.profile), explain=False)
    options = SimOptions(seed=spec.seed, round_s=spec.round_s)
    info = {"trace": Path(spec.trace).name, "cluster": Path(spec.cluster).name}
    arriving: Iterable[Job] = jobs if spec.in_order else list(jobs)  # a list is sorted by the replay
    result, document = run_into(lambda sink: simulate(arriving, cluster, scheduler, options, sink), spec.out,
                                cluster.pools, info)  # fmt: skip
    return document, sorted(result.world.tally.jct_s)


def row(document: dict[str, Any]) -> dict[str, Any]:
    jobs, cost = document["jobs"], document["cost_usd"]
    return {
        "profile": document["run"]["profile"], "seed": document["run"]["seed"], "jobs": jobs["total"],
        "completed": jobs["completed"], "unfinished": jobs["unfinished"], "cost_usd": cost["total"],
        "idle_usd": cost["idle"], "lost_work_usd": cost["lost_work"], "queue_mean_s": document["queue_s"]["mean"],
        "queue_p95_s": document["queue_s"]["p95"], "jct_mean_s": document["jct_s"]["mean"],
        "jct_p95_s": document["jct_s"]["p95"], "utilisation": document["utilisation"],
        "preemptions": document["preemptions"], "job_interruptions": document["job_interruptions"],
        "lost_gpu_hours": document["gpu_hours"]["lost"],
    }


def compare(
    template: RunSpec, profiles: Sequence[str], seeds: int, out: Path, *, workers: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Runs `template` (its trace, cluster and options) under every profile and seed 0..seeds-1,
    each into `out/runs/<profile>-seed<N>/`; returns the comparison rows and each profile's
    JCTs (all seeds)."""
    specs = [
        replace(template, profile=profile, seed=seed, out=str(out / "runs" / f"{Path(profile).stem}-seed{seed}"))
        for profile in profiles for seed in range(seeds)
    ]
    workers = max(1, min(len(specs), workers or os.cpu_count() or 1))
    if workers == 1:
        results = [run_one(spec) for spec in specs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run_one, specs))
    rows = [row(document) for document, _ in results]
    jcts: dict[str, list[float]] = {}
    for spec, (_, values) in zip(specs, results, strict=True):
        jcts.setdefault(spec.profile, []).extend(values)
    return rows, jcts


def write_comparison(rows: Sequence[dict[str, Any]], out: Path) -> None:
    temporary = out / ".comparison.csv.partial"
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(out / "comparison.csv")


def render_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """Mean over seeds per profile, as a table."""
    lines = [f"{'profile':<14} {'runs':>4} {'cost $':>12} {'idle $':>10} {'lost $':>9} {'p95 queue s':>12} "
             f"{'mean JCT s':>11} {'util':>6} {'preempt':>8} {'interrupt':>9} {'unfinished':>10}"]
    for profile in dict.fromkeys(row["profile"] for row in rows):
        mine = [row for row in rows if row["profile"] == profile]

        def mean(key: str, runs: list[dict[str, Any]] = mine) -> float:
            return sum(float(run[key]) for run in runs) / len(runs)

        lines.append(
            f"{profile:<14} {len(mine):>4} {mean('cost_usd'):>12,.2f} {mean('idle_usd'):>10,.2f} "
            f"{mean('lost_work_usd'):>9,.2f} {mean('queue_p95_s'):>12,.0f} {mean('jct_mean_s'):>11,.0f} "
            f"{mean('utilisation'):>6.1%} {mean('preemptions'):>8.1f} {mean('job_interruptions'):>9.1f} "
            f"{mean('unfinished'):>10.1f}"
        )
    return "\n".join(lines)
