"""SenseTime Helios (SC'21, HeliosData, CC BY 4.0) cluster logs as canonical gang jobs.

Each cluster's `cluster_log.csv` has a header: `job_id, user, vc, gpu_num, cpu_num, node_num,
state, submit_time, start_time, end_time, duration, queue`; times are wall-clock
"YYYY-MM-DD HH:MM:SS" with no zone, `duration` (= end - start) and `queue` (= start - submit)
are seconds.

How fields map:
- `job_id` -> id; `vc` (virtual cluster, the quota holder) -> labels.team; `user` -> labels.project.
- `gpu_num` over `node_num` nodes -> `node_num` replicas of `gpu_num / node_num` whole GPUs
  (a gang); GPUs that do not split evenly over the nodes are a bad field.
- `submit_time` -> submit_s, seconds after the earliest submit_time in the file (found by
  `prepare`, a constant-memory first pass).
- `duration` -> duration_s; when empty, `end_time - start_time`; when those are empty too, 0
  (a job cancelled before it started).
- `state` -> status: COMPLETED -> completed; FAILED, NODE_FAIL, TIMEOUT -> failed;
  CANCELLED -> killed.

What is dropped, and counted: CPU-only jobs (`gpu_num` 0); jobs still RUNNING, PENDING or
SUSPENDED when the log ends (their run time is unknown; the job is kept for inspection).
Not modelled, so ignored: `cpu_num` and `queue` (the replay makes its own queue). Helios has
no GPU models, shares or priorities: every job asks for whole GPUs of any model, priority 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.model import GpuRequest, Job, Labels, RequestKind
from traces.base import CPU_ONLY, Fields, TraceFormat, TraceRow, csv_rows

COLUMNS = (
    "job_id", "user", "vc", "gpu_num", "cpu_num", "node_num",
    "state", "submit_time", "start_time", "end_time", "duration", "queue",
)
REQUIRED = ("job_id", "user", "vc", "gpu_num", "node_num", "state", "submit_time", "start_time", "end_time", "duration")
STATE_STATUS = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "NODE_FAIL": "failed",
    "TIMEOUT": "failed",
    "CANCELLED": "killed",
}
UNFINISHED = ("RUNNING", "PENDING", "SUSPENDED")
NOT_FINISHED = "not finished when the log ends (run time unknown)"


def wall_clock(text: str) -> datetime | None:
    """A "YYYY-MM-DD HH:MM:SS" time, or None when it is not one."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


class HeliosJobs(TraceFormat):
    """Helios cluster logs (Venus, Earth, Saturn, Uranus): Slurm jobs of whole GPUs over nodes."""

    name = "helios"
    description = "SenseTime Helios cluster log (cluster_log.csv)"

    def detect(self, path: Path, first_line: str) -> bool:
        names = {name.strip() for name in first_line.split(",")}
        return names.issuperset(REQUIRED)

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        return csv_rows(path, REQUIRED)

    def prepare(self, path: Path) -> datetime | None:
        """The time origin: the earliest submit_time in the file (None when it has none)."""
        origin: datetime | None = None
        for fields in csv_rows(path, REQUIRED):
            submitted = wall_clock(str(fields.values["submit_time"]))
            if submitted is not None and (origin is None or submitted < origin):
                origin = submitted
        return origin

    def time(self, fields: Fields, column: str) -> datetime | None:
        """A time column: None when empty, a bad field when not "YYYY-MM-DD HH:MM:SS"."""
        text = str(fields.values.get(column) or "").strip()
        if not text:
            return None
        value = wall_clock(text)
        if value is None:
            raise fields.fail(column, f"not a YYYY-MM-DD HH:MM:SS time: {text!r}")
        return value

    def run_time_s(self, fields: Fields) -> float:
        """end_time - start_time, or 0 when either is empty (a job that never ran)."""
        started = self.time(fields, "start_time")
        ended = self.time(fields, "end_time")
        if started is None or ended is None:
            return 0.0
        if ended < started:
            raise fields.fail("end_time", f"{ended} is before start_time {started}")
        return (ended - started).total_seconds()

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        job_id = fields.text("job_id")
        state = fields.text("state")
        if state not in STATE_STATUS and state not in UNFINISHED:
            raise fields.fail("state", f"must be one of {', '.join((*STATE_STATUS, *UNFINISHED))}, got {state!r}")
        submitted = self.time(fields, "submit_time")
        if submitted is None:
            raise fields.fail("submit_time", "required")
        duration_s = fields.optional("duration")
        if duration_s is None:
            duration_s = self.run_time_s(fields)
        gpus = fields.integer("gpu_num")
        if gpus == 0:
            return TraceRow(fields.line, None, CPU_ONLY)
        nodes = fields.integer("node_num", least=1)
        if gpus % nodes:
            raise fields.fail("gpu_num", f"{gpus} GPUs do not split evenly over node_num {nodes} nodes")
        origin = context if isinstance(context, datetime) else submitted
        job = Job(
            id=job_id,
            request=GpuRequest(kind=RequestKind.WHOLE, gpus=gpus // nodes),
            submit_s=max(0.0, (submitted - origin).total_seconds()),
            duration_s=duration_s,
            replicas=nodes,
            labels=Labels(team=fields.text("vc"), project=fields.text("user", "")),
            status=STATE_STATUS.get(state, "killed"),
        )
        return TraceRow(fields.line, job, NOT_FINISHED if state in UNFINISHED else "")
