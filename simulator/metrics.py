"""Metrics of a finished replay: the summary (schema version 1) and the per-job rows.

Everything is computed afterwards from the world's runs, ledger and log, so the engine never
keeps running statistics. Dollars are exact fractions in the ledger and rounded to cents here.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from scheduler.decision import SolverReport
from scheduler.feasibility import count_by_reason
from simulator.engine import SimResult
from simulator.ledger import MS_PER_HOUR, PARTS
from simulator.runs import MS, JobRun

SCHEMA_VERSION = 1
OUTCOMES = ("completed", "failed", "killed", "unfinished")


def cents(usd: Fraction) -> float:
    """Dollars rounded to the cent, for reports (the ledger keeps exact fractions)."""
    return round(float(usd), 2)


def quantiles(values: Sequence[float], names: Sequence[str]) -> dict[str, float]:
    """mean, p50, p95, p99 (those named) of `values`, rounded to milliseconds; zeros when empty."""
    if not values:
        return dict.fromkeys(names, 0.0)
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    known = {"mean": statistics.fmean(ordered), "p50": statistics.median(ordered), "p95": cuts[94], "p99": cuts[98]}
    return {name: round(known[name], 3) for name in names}


def job_cost(result: SimResult, run: JobRun) -> Fraction:
    return result.world.ledger.usd_of(result.world.ledger.jobs.get(run.job.id, {}))


def job_rows(result: SimResult) -> list[dict[str, Any]]:
    """One row per job, in submit order (the jobs.csv columns)."""
    rows = []
    for run in sorted(result.world.runs.values(), key=lambda r: (r.job.submit_s, r.job.id)):
        job = run.job
        start = run.first_start_ms
        end = run.end_ms
        rows.append({
            "id": job.id,
            "team": job.labels.team,
            "project": job.labels.project,
            "model": job.labels.model,
            "kind": str(job.kind),
            "submit_s": job.submit_s,
            "start_s": "" if start is None else start / MS,
            "end_s": "" if end is None else end / MS,
            "queue_s": "" if start is None else round(start / MS - job.submit_s, 3),
            "jct_s": "" if end is None else round(end / MS - job.submit_s, 3),
            "outcome": run.outcome or "unfinished",
            "replicas": job.replicas,
            "request": job.request.describe(),
            "pools": "|".join(sorted(run.pools)),
            "preemptions": run.preemptions,
            "interruptions": run.interruptions,
            "lost_gpu_hours": round(run.lost_gpu_ms / MS_PER_HOUR, 6),
            "cost_usd": cents(job_cost(result, run)),
            "reason": result.reasons.get(job.id, ""),
        })
    return rows


def _by_label(result: SimResult, label: str) -> dict[str, float]:
    totals: dict[str, Fraction] = {}
    for run in result.world.runs.values():
        key = getattr(run.job.labels, label) or "(none)"
        totals[key] = totals.get(key, Fraction(0)) + job_cost(result, run)
    return {key: cents(value) for key, value in sorted(totals.items())}


def summary(result: SimResult, run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary.json document (see the README for the schema)."""
    world = result.world
    ledger = world.ledger
    runs = list(world.runs.values())
    outcomes = dict.fromkeys(OUTCOMES, 0)
    for run in runs:
        outcomes[run.outcome or "unfinished"] += 1
    started = [run for run in runs if run.first_start_ms is not None]
    ended = [run for run in runs if run.end_ms is not None]
    queue = [run.first_start_ms / MS - run.job.submit_s for run in started if run.first_start_ms is not None]
    jct = [run.end_ms / MS - run.job.submit_s for run in ended if run.end_ms is not None]
    part_hours = PARTS * MS_PER_HOUR
    busy_h = sum(sum(by_pool.values()) for by_pool in ledger.jobs.values()) / part_hours
    idle_h = sum(ledger.idle.values()) / part_hours
    lost_h = sum(run.lost_gpu_ms for run in runs) / MS_PER_HOUR
    total = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.bill.items()), Fraction(0))
    idle = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.idle.items()), Fraction(0))
    lost = sum((ledger.usd_of(by_pool) for by_pool in ledger.lost.values()), Fraction(0))
    first_submit = min((run.job.submit_s for run in runs), default=0.0)
    events = [name for _, name, _ in world.log]
    removals = [data.get("reason") for _, name, data in world.log if name == "node-remove"]

    def idle_of(pool: str) -> int:
        return ledger.idle.get(pool, 0)

    delivered_h = busy_h - lost_h
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {**(run_info or {}), "profile": result.profile, "seed": result.seed, "end_s": result.end_ms / MS},
        "jobs": {"total": len(runs), **outcomes, "unfinished_by_reason": count_by_reason(result.reasons)},
        "queue_s": quantiles(queue, ("mean", "p50", "p95", "p99")),
        "jct_s": quantiles(jct, ("mean", "p50", "p95")),
        "makespan_s": round(result.end_ms / MS - first_submit, 3),
        "gpu_hours": {"busy": round(busy_h, 3), "idle": round(idle_h, 3), "lost": round(lost_h, 3)},
        "utilisation": round(busy_h / (busy_h + idle_h), 4) if busy_h + idle_h else 0.0,
        "cost_usd": {
            "total": cents(total),
            "attributed": cents(total - idle),
            "idle": cents(idle),
            "lost_work": cents(lost),
            "by_pool": {
                pool: {"total": cents(ledger.usd(pool, billed)), "idle": cents(ledger.usd(pool, idle_of(pool)))}
                for pool, billed in sorted(ledger.bill.items())
            },
            "by_team": _by_label(result, "team"),
            "by_project": _by_label(result, "project"),
            "by_model": _by_label(result, "model"),
        },
        "usd_per_completed_job": cents(total / outcomes["completed"]) if outcomes["completed"] else None,
        "usd_per_gpu_hour_delivered": round(float(total) / delivered_h, 4) if delivered_h > 0 else None,
        "preemptions": sum(run.preemptions for run in runs),
        "job_interruptions": sum(run.interruptions for run in runs),
        "nodes": {
            "spot_interruptions": removals.count("spot-interruption"),
            "provisioned": events.count("node-add"),
            "released_idle": removals.count("idle"),
        },
        **({"solver": solver_summary(world.solver_log)} if world.solver_log else {}),
    }


def solver_summary(reports: Sequence[tuple[int, SolverReport]]) -> dict[str, Any]:
    """How the batch placer's solves went over a run (cycles, outcomes, gaps)."""
    gaps = [report.gap for _, report in reports if report.used == "cpsat"]
    return {
        "cycles": len(reports),
        "optimal": sum(report.status == "OPTIMAL" for _, report in reports),
        "greedy_kept": sum(report.used == "greedy" for _, report in reports),
        "gap_mean": round(sum(gaps) / len(gaps), 6) if gaps else 0.0,
        "gap_max": round(max(gaps), 6) if gaps else 0.0,
    }


SOLVER_COLUMNS = ("t_s", "status", "used", "jobs", "objective", "bound", "gap", "cost_usd_per_hour")


def solver_rows(reports: Sequence[tuple[int, SolverReport]]) -> list[dict[str, Any]]:
    """One row per cycle the batch placer solved; wall time is left out (it is not reproducible)."""
    return [
        {
            "t_s": t_ms / MS, "status": r.status, "used": r.used, "jobs": r.jobs, "objective": r.objective,
            "bound": r.bound, "gap": round(r.gap, 6), "cost_usd_per_hour": round(r.cost_usd_per_hour, 3),
        }
        for t_ms, r in reports
    ]
