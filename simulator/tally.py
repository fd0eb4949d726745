"""The summary's running totals, kept as jobs end, so a replay can forget a job once it has ended.

Every figure of summary.json is a sum, a count, a minimum or a quantile over jobs, nodes or
solves; the world adds each job here when it ends (`add_job`, with its exact cost from the
ledger), each node event as it happens, each solve as it reports. Money stays an exact
fraction until the report rounds it; quantiles are exact (`simulator.quantiles.Stream`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from scheduler.decision import SolverReport
from simulator.inference_economics import InferenceTally
from simulator.ledger import MS_PER_HOUR
from simulator.measured import MeasuredTally
from simulator.quantiles import Stream
from simulator.runs import MS, JobRun

OUTCOMES = ("completed", "failed", "killed", "unfinished")
DENIED = "denied"  # the outcome of a job a guardrail rejected: it never completes, so it has no JCT
LABELS = ("team", "project", "model")


def cents(usd: Fraction | float) -> float:
    """Dollars rounded to the cent, for reports (the ledger keeps exact fractions)."""
    return round(float(usd), 2)


def job_row(run: JobRun, cost: float, reason: str = "") -> dict[str, Any]:
    """The job's jobs.csv row (`cost`: its exact cost in dollars as the nearest float; `reason`:
    why it did not run, when it is unfinished)."""
    job = run.job
    start, end = run.first_start_ms, run.end_ms
    return {
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
        "cost_usd": cents(cost),
        "reason": reason,
    }


@dataclass(slots=True)
class SolverTally:
    """How a batch placer's solves went: cycles, outcomes, gaps."""

    cycles: int = 0
    optimal: int = 0
    greedy_kept: int = 0
    gap_sum: float = 0.0  # added in order, as `sum` over the list of gaps would
    gap_count: int = 0
    gap_max: float = 0.0

    def add(self, report: SolverReport) -> None:
        self.cycles += 1
        self.optimal += report.status == "OPTIMAL"
        self.greedy_kept += report.used == "greedy"
        if report.used == "cpsat":
            self.gap_sum += report.gap
            self.gap_count += 1
            self.gap_max = max(self.gap_max, report.gap)

    def document(self) -> dict[str, Any]:
        count = self.gap_count
        return {
            "cycles": self.cycles, "optimal": self.optimal, "greedy_kept": self.greedy_kept,
            "gap_mean": round(self.gap_sum / count, 6) if count else 0.0, "gap_max": round(self.gap_max, 6),
        }  # fmt: skip


@dataclass(slots=True)
class Tally:
    """Running totals over the jobs that ended and the nodes and solves seen so far."""

    jobs: int = 0
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    queue_s: Stream = field(default_factory=Stream)
    jct_s: Stream = field(default_factory=Stream)
    lost_gpu_ms: int = 0
    preemptions: int = 0
    interruptions: int = 0
    first_submit_s: float = math.inf
    by_label: dict[str, dict[str, int]] = field(default_factory=lambda: {label: {} for label in LABELS})  # ledger units
    unfinished_by_reason: dict[str, int] = field(default_factory=dict)
    node_events: dict[str, int] = field(default_factory=dict)  # node-add, and node-remove by reason
    solver: SolverTally | None = None
    inference: InferenceTally = field(default_factory=InferenceTally)  # inference services' replicas
    measured: MeasuredTally = field(default_factory=MeasuredTally)  # jobs that carry measured utilisation

    def arrived(self, submit_s: float) -> None:
        self.jobs += 1
        self.first_submit_s = min(self.first_submit_s, submit_s)

    def add_job(self, run: JobRun, cost_units: int, reason: str = "") -> None:
        """A job that ended (or was still unfinished when the replay ended) and what it cost
        (in the ledger's units: `Ledger.units`)."""
        job = run.job
        outcome = run.outcome or "unfinished"
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if run.first_start_ms is not None:
            self.queue_s.add(run.first_start_ms / MS - job.submit_s)
        if run.end_ms is not None and outcome != DENIED:
            self.jct_s.add(run.end_ms / MS - job.submit_s)
        if reason:
            self.unfinished_by_reason[reason] = self.unfinished_by_reason.get(reason, 0) + 1
        self.lost_gpu_ms += run.lost_gpu_ms
        self.preemptions += run.preemptions
        self.interruptions += run.interruptions
        labels, by_label = job.labels, self.by_label
        for totals, value in ((by_label["team"], labels.team), (by_label["project"], labels.project),
                              (by_label["model"], labels.model)):  # fmt: skip
            key = value or "(none)"
            totals[key] = totals.get(key, 0) + cost_units
        if job.served is not None:
            self.inference.add(run, cost_units)

    def node_event(self, name: str, reason: str = "") -> None:
        key = f"{name}:{reason}" if reason else name
        self.node_events[key] = self.node_events.get(key, 0) + 1

    def solved(self, report: SolverReport) -> None:
        if self.solver is None:
            self.solver = SolverTally()
        self.solver.add(report)

    def close(self) -> None:
        """Removes the spilled values' files."""
        self.queue_s.close()
        self.jct_s.close()
