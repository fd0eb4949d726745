"""Microsoft Philly traces as canonical jobs: Pollux's compact extract and the original job log.

**Extract** (`pollux-adaptdl/traces/philly.csv`): `timestamp` (submit, "YYYY-MM-DD HH:MM:SS"),
`duration` (s), `num_gpus`, `gpu_time` (GPU-s), `cluster` (virtual cluster hash).
- id = `<cluster>-<line>`; team = cluster; submit_s = seconds after the earliest timestamp in
  the file (found by a first pass); duration_s = duration; status completed (the extract keeps
  no outcome).
- `gpu_time` must equal duration x num_gpus (checked, then dropped as redundant).

**Job log** (`cluster_job_log`, a JSON list from msr-fiddle/philly-traces): `jobid, vc, user,
status (Pass | Killed | Failed), submitted_time, attempts[{start_time, end_time, detail[{ip,
gpus[]}]}]`. It is parsed object by object, so memory does not grow with the file.
- id = jobid; team = vc; project = user; status Pass -> completed, Failed -> failed,
  Killed -> killed; submit_s relative to the earliest submitted_time (first pass).
- duration_s = the run time of every attempt summed (retries re-run the job); GPUs = those of
  the last attempt that lists any (servers x their GPUs). Attempts without both times are
  skipped (Philly's logging gaps); a job with none left is dropped, as is a job that never
  lists a GPU.

Both: a job of up to 8 GPUs is one replica; a larger one becomes a gang of replicas of the
largest power of two up to 8 that divides its GPU count (16 -> 2 x 8, 12 -> 3 x 4), since
Philly's servers hold at most 8 GPUs. Dropped: machine names (ip), GPU indices, user for the
extract (absent), and attempt boundaries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, Labels
from traces.base import Fields, TraceFormat, TraceRow, csv_column, csv_rows, open_text

EXTRACT_COLUMNS = ("timestamp", "duration", "num_gpus", "gpu_time", "cluster")
STATUS = {"Pass": "completed", "Failed": "failed", "Killed": "killed"}
NO_ATTEMPT = "no attempt with start and end times"
NO_GPU = "no GPU recorded in any attempt"
MAX_GPUS_PER_SERVER = 8


def gang(gpus: int) -> tuple[int, int]:
    """(replicas, GPUs per replica) for a job of `gpus` GPUs on servers of at most 8.

    >>> gang(4), gang(16), gang(12), gang(24)
    ((1, 4), (2, 8), (3, 4), (3, 8))
    """
    if gpus <= MAX_GPUS_PER_SERVER:
        return 1, gpus
    per_replica = next(size for size in (8, 4, 2, 1) if gpus % size == 0)
    return gpus // per_replica, per_replica


@lru_cache(maxsize=64)
def _request(gpus: int) -> GpuRequest:
    return GpuRequest(gpus=gpus)  # requests are immutable: jobs of one size share one


@lru_cache(maxsize=1024)
def _team(team: str) -> Labels:
    return Labels(team=team)


def _time(fields: Fields, name: str, value: Any = None) -> datetime:
    text = fields.text(name) if value is None else str(value)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise fields.fail(name, f"not a time like 2017-10-09 07:01:55: {text!r}") from None


class PhillyExtract(TraceFormat):
    """Pollux's philly.csv."""

    name = "philly"
    description = "Philly job-log extract (pollux-adaptdl traces/philly.csv)"

    def detect(self, path: Path, first_line: str) -> bool:
        return tuple(first_line.split(",")) == EXTRACT_COLUMNS

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        return csv_rows(path, EXTRACT_COLUMNS)

    def prepare(self, path: Path) -> datetime | None:
        # Timestamps are fixed-width ISO text, so the smallest string is the earliest time;
        # malformed ones are left for the second pass to report with their line.
        earliest = min((text for text in csv_column(path, "timestamp") if len(text) == 19), default=None)
        return datetime.fromisoformat(earliest) if earliest else None

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        submitted = _time(fields, "timestamp")
        duration_s = fields.number("duration")
        gpus = fields.integer("num_gpus", least=1)
        if abs(fields.number("gpu_time") - duration_s * gpus) > 1e-6 * max(1.0, duration_s * gpus):
            raise fields.fail("gpu_time", f"is not duration x num_gpus ({duration_s:g} x {gpus})")
        cluster = fields.text("cluster")
        replicas, per_replica = gang(gpus)
        job = Job(
            id=f"{cluster}-{fields.line}",
            request=_request(per_replica),
            replicas=replicas,
            submit_s=(submitted - context).total_seconds() if context else 0.0,
            duration_s=duration_s,
            labels=_team(cluster),
        )
        return TraceRow(fields.line, job)


def json_objects(path: Path, chunk_chars: int = 1 << 16) -> Iterator[tuple[int, Any]]:
    """Streams the elements of a top-level JSON list with the line each starts on."""
    decoder = json.JSONDecoder()
    with open_text(path) as handle:
        buffer, position, line = handle.read(chunk_chars), 0, 1
        opening = len(buffer) - len(buffer.lstrip())
        if buffer[opening : opening + 1] != "[":
            raise InputError("not a JSON list of jobs", source=str(path), line=1)
        line += buffer.count("\n", 0, opening)
        position = opening + 1
        while True:
            skipped = position
            while position < len(buffer) and buffer[position] in " \t\r\n,":
                position += 1
            line += buffer.count("\n", skipped, position)
            if position < len(buffer) and buffer[position] == "]":
                return
            try:
                value, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError as error:
                more = handle.read(chunk_chars)
                if not more:
                    raise InputError(f"not valid JSON: {error.msg}", source=str(path), line=line) from None
                buffer, position = buffer[position:] + more, 0
                continue
            yield line, value
            line += buffer.count("\n", position, end)
            position = end
            if position > chunk_chars:
                buffer, position = buffer[position:], 0


class PhillyJobLog(TraceFormat):
    """Philly's cluster_job_log (JSON)."""

    name = "philly-log"
    description = "Microsoft Philly cluster_job_log (JSON list of jobs with attempts)"
    suffixes = (".json",)

    def detect(self, path: Path, first_line: str) -> bool:
        return path.name.startswith("cluster_job_log") or (first_line.startswith("[") and '"attempts"' in first_line)

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        for line, value in json_objects(path):
            if not isinstance(value, dict):
                raise InputError("a job must be a JSON object", source=str(path), line=line)
            yield Fields(value, str(path), line)

    def prepare(self, path: Path) -> datetime | None:
        times = (str(f.values.get("submitted_time", "")) for f in self.raw_rows(path))
        earliest = min((t for t in times if len(t) == 19), default=None)
        return datetime.fromisoformat(earliest) if earliest else None

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        job_id = fields.text("jobid")
        status = fields.text("status")
        if status not in STATUS:
            raise fields.fail("status", f"must be one of {', '.join(STATUS)}, got {status!r}")
        submitted = _time(fields, "submitted_time")
        attempts = fields.values.get("attempts") or []
        if not isinstance(attempts, list):
            raise fields.fail("attempts", "must be a list")
        duration_s, gpus = self._attempts(fields, attempts)
        labels = Labels(team=fields.text("vc", ""), project=fields.text("user", ""))
        if not gpus:
            return TraceRow(fields.line, None, NO_GPU)
        replicas, per_replica = gang(gpus)
        job = Job(
            id=job_id,
            request=_request(per_replica),
            replicas=replicas,
            submit_s=(submitted - context).total_seconds() if context else 0.0,
            duration_s=duration_s or 0.0,
            labels=labels,
            status=STATUS[status],
        )
        return TraceRow(fields.line, job, NO_ATTEMPT if duration_s is None else "")

    @staticmethod
    def _attempts(fields: Fields, attempts: Sequence[Any]) -> tuple[float | None, int]:
        """(run seconds summed over timed attempts or None, GPUs of the last attempt listing any)."""
        duration_s: float | None = None
        gpus = 0
        for number, attempt in enumerate(attempts):
            if not isinstance(attempt, Mapping):
                raise fields.fail(f"attempts[{number}]", "must be an object")
            detail = attempt.get("detail") or []
            counted = sum(len(server.get("gpus") or []) for server in detail if isinstance(server, Mapping))
            gpus = counted or gpus
            start, end = attempt.get("start_time"), attempt.get("end_time")
            if start and end:
                begun = _time(fields, f"attempts[{number}].start_time", start)
                ended = _time(fields, f"attempts[{number}].end_time", end)
                if ended < begun:
                    raise fields.fail(f"attempts[{number}].end_time", f"{end} is before start_time {start}")
                duration_s = (duration_s or 0.0) + (ended - begun).total_seconds()
        return duration_s, gpus
