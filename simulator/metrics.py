"""Metrics of a finished replay: the summary (schema version 1); the per-job rows are `simulator.tally.job_row`.

The figures come from the world's `Tally` (totals kept as jobs ended) and its ledger, so a
replay that forgot its jobs as they ended reports exactly what one that kept them does.
Dollars are exact fractions in the ledger and rounded to cents here.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from simulator import economics
from simulator.engine import SimResult
from simulator.inference_economics import inference_section
from simulator.ledger import MS_PER_HOUR, PARTS
from simulator.measured import summary_section
from simulator.runs import MS
from simulator.tally import DENIED, OUTCOMES, cents

SCHEMA_VERSION = 1


def summary(result: SimResult, run_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The summary.json document (see the README for the schema)."""
    world = result.world
    ledger, tally = world.ledger, world.tally
    part_hours = PARTS * MS_PER_HOUR
    busy_h = sum(ledger.attributed().values()) / part_hours
    idle_h = sum(ledger.idle.values()) / part_hours
    lost_h = tally.lost_gpu_ms / MS_PER_HOUR
    total = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.bill.items()), Fraction(0))
    idle = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.idle.items()), Fraction(0))
    lost = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.lost_by_pool.items()), Fraction(0))
    first_submit = tally.first_submit_s if tally.jobs else 0.0
    outcomes = {name: tally.outcomes[name] for name in OUTCOMES}
    if world.guardrails is not None:  # a governed run: the jobs a guardrail denied, so the counts add up to the total
        outcomes[DENIED] = tally.outcomes.get(DENIED, 0)
    by_reason = dict(sorted(tally.unfinished_by_reason.items()))

    def idle_of(pool: str) -> int:
        return ledger.idle.get(pool, 0)

    delivered_h = busy_h - lost_h
    return {
        "schema_version": SCHEMA_VERSION,
        "run": {**(run_info or {}), "profile": result.profile, "seed": result.seed, "end_s": result.end_ms / MS},
        "jobs": {"total": tally.jobs, **outcomes, "unfinished_by_reason": by_reason},
        "queue_s": tally.queue_s.summary(("mean", "p50", "p95", "p99")),
        "jct_s": tally.jct_s.summary(("mean", "p50", "p95")),
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
            "by_team": _cents(tally.by_label["team"], ledger.denominator),
            "by_project": _cents(tally.by_label["project"], ledger.denominator),
            "by_model": _cents(tally.by_label["model"], ledger.denominator),
        },
        "usd_per_completed_job": cents(total / outcomes["completed"]) if outcomes["completed"] else None,
        "usd_per_gpu_hour_delivered": round(float(total) / delivered_h, 4) if delivered_h > 0 else None,
        "preemptions": tally.preemptions,
        "job_interruptions": tally.interruptions,
        "nodes": {
            "spot_interruptions": tally.node_events.get("node-remove:spot-interruption", 0),
            "provisioned": tally.node_events.get("node-add", 0),
            "released_idle": tally.node_events.get("node-remove:idle", 0),
        },
        **({"solver": tally.solver.document()} if tally.solver is not None else {}),
        **_governance(result),
        "economics": economics.section(result),  # unit economics, showback, spot, idle by cause
        **inference_section(result),
        **summary_section(tally.measured),
    }


def _governance(result: SimResult) -> dict[str, Any]:
    """The `governance` section (`simulator.guardrail_report`), and denied jobs, of a governed run."""
    guardrails = result.world.guardrails
    if guardrails is None:
        return {}
    return {"governance": {"jobs_denied": result.world.tally.outcomes.get("denied", 0),
                           **guardrails.document(result.end_ms)}}  # fmt: skip


def _cents(totals: Mapping[str, int], denominator: int) -> dict[str, float]:
    return {key: cents(units / denominator) for key, units in sorted(totals.items())}


__all__ = ["SCHEMA_VERSION", "summary"]
