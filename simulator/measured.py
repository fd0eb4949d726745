"""Allocated-but-idle GPU time and dollars of a replay's jobs that carry measured utilisation.

A job whose trace measured its GPU utilisation (`scheduler.observed.MeasuredUtilisation`) is
judged, when it ends, by the one idle rule (`scheduler.idleness`): sample i covers the i-th
period of its *allocation* (the time it held GPUs, counted from its first start and summed
over restarts), so a series never speaks for time the job waited. The rule is the default
`IdleRule` with the series' own sampling period (and a gap of three periods, the default's
ratio), so `fleetsched usage` over the same series, as the agent would export it, finds the
same spans to the millisecond.

Money comes from the ledger: a job's idle dollars are its attributed cost times the share of
its allocation that was idle (its cost rate: what it paid per held millisecond, the pools it
ran in averaged), so measured idle dollars are part of the bill, never beside it. Everything
is exact (integer milliseconds, fractions of dollars) until the summary rounds it.

The summary's `measured` key (only when some job carried a measurement): totals, per team,
per job. A job with a mean and no series counts as measured but cannot be judged idle: the
rule needs to know when the quiet time was.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

from scheduler.idleness import IdleRule, idle_spans
from scheduler.model import Job, RequestKind
from scheduler.observed import MeasuredUtilisation
from simulator.ledger import MS_PER_HOUR, PARTS, Ledger, parts_of
from simulator.runs import MS, JobRun

#: A gap is this many sampling periods (the default rule's 180 s over 60 s).
GAP_PERIODS = IdleRule().max_gap_s / IdleRule().period_s


def rule_for(period_s: float, base: IdleRule | None = None) -> IdleRule:
    """`base` (the default rule) for a series sampled every `period_s`: its gap scaled with it."""
    base = base or IdleRule()
    return replace(base, period_s=period_s, max_gap_s=GAP_PERIODS * period_s)


def covered_s(samples: Sequence[tuple[float, float]], rule: IdleRule, end_s: float) -> float:
    """Seconds of `[first sample, end_s)` the samples speak for (`scheduler.idleness`: each
    until the next, or `period_s` when the next comes after a gap or never)."""
    total = 0.0
    for index, (t_s, _) in enumerate(samples):
        following = samples[index + 1][0] if index + 1 < len(samples) else None
        # A sample speaks until the next one, unless a gap (or the end) comes first.
        stop = following if following is not None and following - t_s <= rule.max_gap_s else t_s + rule.period_s
        total += max(0.0, min(stop, end_s) - t_s)
    return total


def span_ms(seconds: float) -> int:
    """Seconds as integer milliseconds, as the replay's clock counts."""
    return round(seconds * MS)


@dataclass(frozen=True, slots=True)
class IdleTime:
    """What the rule found in one series over one allocation: milliseconds held, measured, idle."""

    allocated_ms: int
    measured_ms: int
    idle_ms: int


def idle_time(series: Sequence[tuple[float, float]], rule: IdleRule, allocated_s: float) -> IdleTime:
    """The idle and measured time of samples `(t_s from the allocation's start, percent)` over an
    allocation `allocated_s` long (samples at or after its end are not its)."""
    samples = [(t_s, percent) for t_s, percent in series if t_s < allocated_s]
    spans = idle_spans(samples, rule, end_s=allocated_s)
    idle_ms = sum(span_ms(span.end_s) - span_ms(span.start_s) for span in spans)
    return IdleTime(span_ms(allocated_s), span_ms(covered_s(samples, rule, allocated_s)), idle_ms)


def allocation_samples(measured: MeasuredUtilisation) -> list[tuple[float, float]]:
    """The samples present, at their time from the allocation's start (missing ones left out:
    the rule treats the hole as the agent's scrapes would leave it)."""
    period = measured.period_s
    return [(index * period, value) for index, value in enumerate(measured.samples_percent) if value is not None]


def held_ms(job: Job, ledger: Ledger) -> int:
    """How long `job` held its GPUs, from its part-milliseconds in the ledger: each pool's
    part-ms over the parts one replica holds there, summed, over the replicas (a gang is held
    whole, so this is exact wherever its replicas ran)."""
    grants = 1 if job.request.kind is RequestKind.SHARE else job.request.gpus
    replica_ms = sum(
        (Fraction(part_ms, parts_of(ledger.pools[pool], job.request) * grants)
         for pool, part_ms in ledger.jobs.get(job.id, {}).items()),
        Fraction(0),
    )  # fmt: skip
    return round(replica_ms / job.replicas)


@dataclass(slots=True)
class Account:
    """Sums for one team (or the whole replay): GPU-milliseconds in parts, dollars exact."""

    jobs: int = 0
    allocated_part_ms: int = 0
    measured_part_ms: Fraction = Fraction(0)
    idle_part_ms: Fraction = Fraction(0)
    allocated_usd: Fraction = Fraction(0)
    idle_usd: Fraction = Fraction(0)

    def add(self, other: Account) -> None:
        self.jobs += other.jobs
        self.allocated_part_ms += other.allocated_part_ms
        self.measured_part_ms += other.measured_part_ms
        self.idle_part_ms += other.idle_part_ms
        self.allocated_usd += other.allocated_usd
        self.idle_usd += other.idle_usd

    def document(self) -> dict[str, Any]:
        hours = PARTS * MS_PER_HOUR
        return {
            "jobs": self.jobs,
            "gpu_hours": {"allocated": round(self.allocated_part_ms / hours, 6),
                          "measured": round(float(self.measured_part_ms / hours), 6),
                          "idle": round(float(self.idle_part_ms / hours), 6)},
            "usd": {"allocated": round(float(self.allocated_usd), 2), "idle": round(float(self.idle_usd), 2)},
        }  # fmt: skip


@dataclass(slots=True)
class MeasuredTally:
    """The measured jobs' accounts, kept as they end (`simulator.tally.Tally.measured`)."""

    base_rule: IdleRule = field(default_factory=IdleRule)
    total: Account = field(default_factory=Account)
    by_team: dict[str, Account] = field(default_factory=dict)
    by_job: dict[str, tuple[str, float | None, Account]] = field(default_factory=dict)
    without_series: int = 0

    def add(self, run: JobRun, ledger: Ledger, cost_units: int) -> None:
        """A job that ended, with its cost in the ledger's units; nothing when it carries no measurement."""
        job = run.job
        measured = job.measured
        if measured is None:
            return
        allocated_part_ms = sum(ledger.jobs.get(job.id, {}).values())
        allocated_usd = Fraction(cost_units, ledger.denominator)
        account = Account(jobs=1, allocated_part_ms=allocated_part_ms, allocated_usd=allocated_usd)
        held = held_ms(job, ledger)
        if measured.samples_percent and held:
            time = idle_time(allocation_samples(measured), rule_for(measured.period_s, self.base_rule), held / MS)
            account.measured_part_ms = Fraction(allocated_part_ms * time.measured_ms, held)
            account.idle_part_ms = Fraction(allocated_part_ms * time.idle_ms, held)
            account.idle_usd = allocated_usd * Fraction(time.idle_ms, held)
        elif not measured.samples_percent:
            self.without_series += 1
        self.total.add(account)
        self.by_team.setdefault(job.labels.team or "(none)", Account()).add(account)
        self.by_job[job.id] = (job.labels.team, measured.mean(), account)

    def document(self) -> dict[str, Any]:
        """The summary's `measured` section (see the module docstring)."""
        rule = self.base_rule
        return {
            "rule": {"threshold_percent": rule.threshold_percent, "window_s": rule.window_s,
                     "period_s": "each series' own", "max_gap_periods": GAP_PERIODS},
            **self.total.document(),
            "jobs_without_series": self.without_series,
            "by_team": {team: account.document() for team, account in sorted(self.by_team.items())},
            "by_job": {job_id: {"team": team, "mean_percent": None if mean is None else round(mean, 4),
                                **account.document()}
                       for job_id, (team, mean, account) in sorted(self.by_job.items())},
        }  # fmt: skip


def summary_section(tally: MeasuredTally) -> Mapping[str, Any]:
    """`{"measured": ...}` when some job carried a measurement, else nothing (summaries of
    traces without measurements stay as they were)."""
    return {"measured": tally.document()} if tally.total.jobs else {}


def summary_lines(document: Mapping[str, Any]) -> list[str]:
    """The `measured` section as a line for the terminal (none when the summary has none)."""
    measured = document.get("measured")
    if measured is None:
        return []
    hours, usd, rule = measured["gpu_hours"], measured["usd"], measured["rule"]
    return [f"  measured    {measured['jobs']:,} jobs: {hours['idle']:,.1f} of {hours['allocated']:,.1f} allocated "
            f"GPU-hours idle (under {rule['threshold_percent']:g} % for {rule['window_s']:g} s), "
            f"${usd['idle']:,.2f} of ${usd['allocated']:,.2f}"]  # fmt: skip


__all__ = ["IdleTime", "MeasuredTally", "covered_s", "idle_time", "rule_for", "summary_lines", "summary_section"]
