"""Where a replay's history goes as it happens: kept in memory, or written to a run directory's files.

The world hands every event, every ended job's row, every timeline row and every solver
report to a `Sink` the moment it has it, and forgets it (unless the world keeps its history):
a replay's memory is then what runs and waits, not the length of the trace. `Memory` keeps
it all (tests, notebooks, `write_run` afterwards); `Files` writes events.jsonl, jobs.csv,
timeline.csv and solver.csv as it goes. Both give the same rows in the same order, and the
files are the same whichever wrote them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from scheduler.decision import SolverReport
from simulator.ledger import PARTS
from simulator.runs import MS, JobRun
from simulator.tally import job_row

Event = tuple[int, str, dict[str, Any]]
TimelineRow = tuple[int, str, int, int, int]  # t_ms, pool, nodes, busy parts, nodes provisioning
JOB_COLUMNS = (
    "id", "team", "project", "model", "kind", "submit_s", "start_s", "end_s", "queue_s", "jct_s", "outcome",
    "replicas", "request", "pools", "preemptions", "interruptions", "lost_gpu_hours", "cost_usd", "reason",
)  # fmt: skip
TIMELINE_COLUMNS = ("t_s", "pool", "nodes", "provisioning", "gpus_busy", "usd_per_hour")
SOLVER_COLUMNS = ("t_s", "status", "used", "jobs", "objective", "bound", "gap", "cost_usd_per_hour")


class Sink(Protocol):
    """What a world tells of its history, in the order it happens."""

    def event(self, event: Event) -> None: ...

    def job(self, run: JobRun, cost_usd: float, reason: str) -> None:
        """A job that ended (or was unfinished when the replay ended, and why), and its exact
        cost rounded to a float."""

    def timeline(self, row: TimelineRow) -> None: ...

    def solver(self, t_ms: int, report: SolverReport) -> None: ...


@dataclass(slots=True)
class Memory:
    """The whole history, kept."""

    log: list[Event] = field(default_factory=list)
    ended: list[tuple[JobRun, float, str]] = field(default_factory=list)
    timeline_rows: list[TimelineRow] = field(default_factory=list)
    solver_log: list[tuple[int, SolverReport]] = field(default_factory=list)

    def event(self, event: Event) -> None:
        self.log.append(event)

    def job(self, run: JobRun, cost_usd: float, reason: str) -> None:
        self.ended.append((run, cost_usd, reason))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The jobs.csv rows, made when asked (a replay that is never written never pays for them)."""
        return [job_row(run, cost_usd, reason) for run, cost_usd, reason in self.ended]

    def timeline(self, row: TimelineRow) -> None:
        self.timeline_rows.append(row)

    def solver(self, t_ms: int, report: SolverReport) -> None:
        self.solver_log.append((t_ms, report))

    def replay(self, sink: Sink) -> None:
        """Tells `sink` everything kept, in order."""
        for event in self.log:
            sink.event(event)
        for run, cost_usd, reason in self.ended:
            sink.job(run, cost_usd, reason)
        for timeline_row in self.timeline_rows:
            sink.timeline(timeline_row)
        for t_ms, report in self.solver_log:
            sink.solver(t_ms, report)


def solver_row(t_ms: int, report: SolverReport) -> dict[str, Any]:
    """One solver.csv row; wall time is left out (it is not reproducible)."""
    return {
        "t_s": t_ms / MS, "status": report.status, "used": report.used, "jobs": report.jobs,
        "objective": report.objective, "bound": report.bound, "gap": round(report.gap, 6),
        "cost_usd_per_hour": round(report.cost_usd_per_hour, 3),
    }  # fmt: skip


class Files:
    """Writes the history into `folder` as it comes (solver.csv only if a solver reports)."""

    def __init__(self, folder: Path, usd_per_node_hour: Mapping[str, float]) -> None:
        self.folder = folder
        self._usd_per_node_hour = usd_per_node_hour
        self._handles: list[IO[str]] = []
        self._events = self._open("events.jsonl")
        self._jobs = csv.DictWriter(self._open("jobs.csv"), fieldnames=JOB_COLUMNS, lineterminator="\n")
        self._jobs.writeheader()
        self._timeline = csv.writer(self._open("timeline.csv"), lineterminator="\n")
        self._timeline.writerow(TIMELINE_COLUMNS)
        self._solver: csv.DictWriter[str] | None = None

    def _open(self, name: str) -> IO[str]:
        handle = (self.folder / name).open("w", encoding="utf-8", newline="")
        self._handles.append(handle)
        return handle

    def event(self, event: Event) -> None:
        t_ms, name, data = event
        self._events.write(json.dumps({"t_s": t_ms / MS, "event": name, **data}, sort_keys=True) + "\n")

    def job(self, run: JobRun, cost_usd: float, reason: str) -> None:
        self._jobs.writerow(job_row(run, cost_usd, reason))

    def timeline(self, row: TimelineRow) -> None:
        t_ms, pool, nodes, busy_parts, provisioning = row
        usd = round(nodes * self._usd_per_node_hour[pool], 6)
        self._timeline.writerow((t_ms / MS, pool, nodes, provisioning, round(busy_parts / PARTS, 4), usd))

    def solver(self, t_ms: int, report: SolverReport) -> None:
        if self._solver is None:
            self._solver = csv.DictWriter(self._open("solver.csv"), fieldnames=SOLVER_COLUMNS, lineterminator="\n")
            self._solver.writeheader()
        self._solver.writerow(solver_row(t_ms, report))

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        self._handles.clear()
