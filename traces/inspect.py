"""Trace inspection: what a trace holds before anyone replays it.

One streaming pass over the rows: jobs replayed and rows dropped (by reason), bad rows
skipped, time span, GPU demand by request kind and size (every row that asks for something,
including dropped ones, so the mix matches what the trace's README states), GPU-hours,
per-team jobs and GPU-hours, status mix, and duration quantiles.
"""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scheduler.model import FULL_GPU_MILLI, Job, RequestKind
from traces.base import CPU_ONLY, ReadReport, TraceRow

SECONDS_PER_HOUR = 3600.0


def gpus_of(job: Job) -> float:
    """GPUs' worth one job holds: whole GPUs, shares by milli, MIG instances by compute slices (of 7)."""
    request = job.request
    if request.kind is RequestKind.SHARE:
        per_replica = request.milli / FULL_GPU_MILLI
    elif request.kind is RequestKind.MIG:
        slices = int(request.mig_profile.split("g", 1)[0]) if request.mig_profile[:1].isdigit() else 7
        per_replica = request.gpus * slices / 7
    else:
        per_replica = float(request.gpus)
    return per_replica * job.replicas


@dataclass(slots=True)
class TraceSummary:
    """What `summarise` found; `as_dict` is the `--json` form."""

    report: ReadReport
    cpu_only: int = 0
    whole_by_gpus: Counter[int] = field(default_factory=Counter)
    gangs: int = 0
    shares: int = 0
    share_milli: Counter[int] = field(default_factory=Counter)
    mig_by_profile: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    teams_jobs: Counter[str] = field(default_factory=Counter)
    teams_gpu_hours: dict[str, float] = field(default_factory=dict)
    gpu_hours: float = 0.0
    first_submit_s: float | None = None
    last_submit_s: float | None = None
    last_end_s: float | None = None
    durations_s: array[float] = field(default_factory=lambda: array("d"))

    def add(self, row: TraceRow) -> None:
        if row.dropped == CPU_ONLY:
            self.cpu_only += 1
        if row.job is None:
            return
        job = row.job
        request = job.request
        if request.kind is RequestKind.SHARE:
            self.shares += 1
            self.share_milli[request.milli] += 1
        elif request.kind is RequestKind.MIG:
            self.mig_by_profile[request.mig_profile] += request.gpus * job.replicas
        else:
            self.whole_by_gpus[request.gpus * job.replicas] += 1
        self.gangs += job.replicas > 1
        if row.dropped:
            return
        hours = gpus_of(job) * job.duration_s / SECONDS_PER_HOUR
        self.gpu_hours += hours
        self.statuses[job.status] += 1
        team = job.labels.team or "(none)"
        self.teams_jobs[team] += 1
        self.teams_gpu_hours[team] = self.teams_gpu_hours.get(team, 0.0) + hours
        end_s = job.submit_s + job.duration_s
        self.first_submit_s = job.submit_s if self.first_submit_s is None else min(self.first_submit_s, job.submit_s)
        self.last_submit_s = job.submit_s if self.last_submit_s is None else max(self.last_submit_s, job.submit_s)
        self.last_end_s = end_s if self.last_end_s is None else max(self.last_end_s, end_s)
        self.durations_s.append(job.duration_s)

    def duration_quantiles(self) -> dict[str, float]:
        if not self.durations_s:
            return {}
        ordered = sorted(self.durations_s)
        cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
        return {"p50": statistics.median(ordered), "p95": cuts[94], "max": ordered[-1]}

    def as_dict(self) -> dict[str, Any]:
        report = self.report
        span = None if self.first_submit_s is None else (self.last_submit_s or 0.0) - self.first_submit_s
        return {
            "source": report.source,
            "format": report.format,
            "rows": report.rows,
            "jobs": report.jobs,
            "dropped": dict(sorted(report.dropped.items())),
            "skipped_bad_rows": len(report.skipped),
            "skipped_examples": [{"line": line, "problem": problem} for line, problem in report.skipped[:5]],
            "submit_span_s": span,
            "first_submit_s": self.first_submit_s,
            "last_end_s": self.last_end_s,
            "requests": {
                "cpu_only": self.cpu_only,
                "whole_by_gpus": {str(gpus): n for gpus, n in sorted(self.whole_by_gpus.items())},
                "gangs": self.gangs,
                "shares": self.shares,
                "top_share_milli": {str(milli): n for milli, n in self.share_milli.most_common(5)},
                "mig_instances_by_profile": dict(sorted(self.mig_by_profile.items())),
            },
            "gpu_hours": round(self.gpu_hours, 3),
            "duration_s": {key: round(value, 3) for key, value in self.duration_quantiles().items()},
            "statuses": dict(sorted(self.statuses.items())),
            "teams": {
                team: {"jobs": self.teams_jobs[team], "gpu_hours": round(self.teams_gpu_hours[team], 3)}
                for team in sorted(self.teams_gpu_hours, key=lambda t: (-self.teams_gpu_hours[t], t))
            },
        }


def summarise(rows: Iterable[TraceRow], report: ReadReport) -> TraceSummary:
    """Reads every row once and returns the summary (the report fills in as rows are read)."""
    summary = TraceSummary(report)
    for row in rows:
        summary.add(row)
    return summary


def render(summary: TraceSummary, top_teams: int = 10) -> str:
    """The summary as text for a terminal."""
    data = summary.as_dict()
    requests = data["requests"]
    hours = (data["submit_span_s"] or 0.0) / SECONDS_PER_HOUR
    lines = [
        f"{data['source']} ({data['format']})",
        f"rows {data['rows']:,}: jobs {data['jobs']:,}, dropped {sum(data['dropped'].values()):,},"
        f" bad rows skipped {data['skipped_bad_rows']:,}",
    ]
    lines += [f"  dropped {n:,}: {reason}" for reason, n in data["dropped"].items()]
    lines += [f"  skipped line {e['line']}: {e['problem']}" for e in data["skipped_examples"]]
    lines.append(f"submit span {hours:,.1f} h ({hours / 24:,.1f} days); GPU-hours {data['gpu_hours']:,.1f}")
    if data["duration_s"]:
        d = data["duration_s"]
        lines.append(f"duration p50 {d['p50']:,.0f} s, p95 {d['p95']:,.0f} s, max {d['max']:,.0f} s")
    lines.append("requests (every row that asks for GPUs, dropped ones included):")
    lines.append(
        f"  CPU-only {requests['cpu_only']:,}; shares of one GPU {requests['shares']:,}; gangs {requests['gangs']:,}"
    )
    whole = ", ".join(f"{gpus} GPU x {n:,}" for gpus, n in requests["whole_by_gpus"].items())
    lines.append(f"  whole GPUs per job: {whole or 'none'}")
    shares = requests["top_share_milli"].items()
    if shares:
        lines.append("  most common shares: " + ", ".join(f"{milli}m x {n:,}" for milli, n in shares))
    instances = requests["mig_instances_by_profile"].items()
    if instances:
        lines.append("  MIG instances: " + ", ".join(f"{profile} x {n:,}" for profile, n in instances))
    lines.append("statuses: " + ", ".join(f"{status} {n:,}" for status, n in data["statuses"].items()))
    teams = list(data["teams"].items())
    lines.append(f"teams ({len(teams)}), by GPU-hours:")
    lines += [f"  {team:<20} {t['jobs']:>9,} jobs {t['gpu_hours']:>14,.1f} GPU-h" for team, t in teams[:top_teams]]
    if len(teams) > top_teams:
        lines.append(f"  ... {len(teams) - top_teams} more")
    return "\n".join(lines)
