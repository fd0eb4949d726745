"""Alibaba PAI cluster-trace-gpu-v2020 ("MLaaS in the Wild", NSDI'22) task tables as canonical gang jobs.

`pai_task_table.csv` has no header row; its columns are `job_name, task_name, inst_num,
status, start_time, end_time, plan_cpu, plan_mem, plan_gpu, gpu_type` (times in seconds,
shifted by a constant; plan_cpu in % of a core, plan_mem in GB, plan_gpu in % of a GPU).

How fields map (one job per task, as a task's instances start together):
- `job_name` and `task_name` -> id `job_name/task_name`; `inst_num` -> replicas (a gang).
- `plan_gpu` -> the per-replica request: below 100 a share of one GPU (50 = 500 milli-GPU,
  rounded to the milli, no GPU memory); 100 one whole GPU; a multiple of 100 that many GPUs.
- `gpu_type` -> gpu_models: MISC (or empty) -> any model; P100, T4, V100, V100M32 resolved by
  the catalog.
- `start_time` -> submit_s, relative to the earliest start_time in the file (found by
  `prepare`, a constant-memory first pass); `end_time - start_time` -> duration_s. The task
  table has no submit time (the job table's start_time is the submit), so queueing before
  the task started is not replayed.
- `status` -> status: Terminated -> completed, Failed -> failed.

What is dropped, and counted: CPU-only tasks (`plan_gpu` 0 or empty); tasks Running or
Waiting at the trace end (no end time, so no run time; the job is kept for inspection when
it started); finished tasks whose start or end time is missing. Not modelled, so ignored:
`plan_cpu` and `plan_mem`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, RequestKind
from traces.base import CPU_ONLY, Fields, TraceFormat, TraceRow, csv_rows
from traces.dlrm import lenient_number
from traces.openb import models_of

COLUMNS = (
    "job_name", "task_name", "inst_num", "status", "start_time", "end_time",
    "plan_cpu", "plan_mem", "plan_gpu", "gpu_type",
)
STATUS = {"Terminated": "completed", "Failed": "failed"}
UNFINISHED = ("Running", "Waiting")
ANY_MODEL = "MISC"
PERCENT_PER_GPU = 100
NOT_FINISHED = "running or waiting at the trace end (no end time)"
NO_TIMES = "finished without a start or end time"


def plan_gpu_request(fields: Fields, column: str = "plan_gpu") -> GpuRequest | None:
    """The request a plan_gpu percentage stands for, None for 0 (CPU-only)."""
    percent = fields.number(column, 0.0)
    if percent == 0:
        return None
    if percent < PERCENT_PER_GPU:
        milli = max(1, round(percent * FULL_GPU_MILLI / PERCENT_PER_GPU))
        return GpuRequest(kind=RequestKind.SHARE, milli=milli)
    if percent % PERCENT_PER_GPU:
        raise fields.fail(column, f"above {PERCENT_PER_GPU} it must be whole GPUs (a multiple of 100), got {percent:g}")
    return GpuRequest(kind=RequestKind.WHOLE, gpus=int(percent // PERCENT_PER_GPU))


class PaiTasks(TraceFormat):
    """PAI 2020 task tables: each task a gang of `inst_num` identical instances."""

    name = "pai-2020"
    description = "Alibaba PAI cluster-trace-gpu-v2020 task table (pai_task_table.csv, no header)"

    def detect(self, path: Path, first_line: str) -> bool:
        return "pai_task_table" in path.name

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        return csv_rows(path, COLUMNS, header=COLUMNS)

    def prepare(self, path: Path) -> float:
        """The time origin: the earliest start_time in the file (0 when it has none)."""
        origin_s: float | None = None
        for fields in csv_rows(path, COLUMNS, header=COLUMNS):
            value = lenient_number(fields.values["start_time"])
            if value is not None and (origin_s is None or value < origin_s):
                origin_s = value
        return origin_s or 0.0

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        origin_s = float(context or 0.0)
        task = f"{fields.text('job_name')}/{fields.text('task_name')}"
        status = fields.text("status")
        if status not in STATUS and status not in UNFINISHED:
            raise fields.fail("status", f"must be one of {', '.join((*STATUS, *UNFINISHED))}, got {status!r}")
        start_s = fields.optional("start_time")
        end_s = fields.optional("end_time")
        if start_s is not None and end_s is not None and end_s < start_s:
            raise fields.fail("end_time", f"{end_s:g} is before start_time {start_s:g}")
        request = plan_gpu_request(fields)
        replicas = fields.integer("inst_num", least=1)
        if request is None:
            return TraceRow(fields.line, None, CPU_ONLY)
        gpu_type = fields.text("gpu_type", ANY_MODEL)
        models = frozenset() if gpu_type == ANY_MODEL else models_of(fields, "gpu_type", catalog)
        if start_s is None:
            return TraceRow(fields.line, None, NOT_FINISHED if status in UNFINISHED else NO_TIMES)
        job = Job(
            id=task,
            request=request,
            submit_s=start_s - origin_s,
            duration_s=0.0 if end_s is None else end_s - start_s,
            replicas=replicas,
            gpu_models=models,
            status=STATUS.get(status, "killed"),
        )
        if status in UNFINISHED:
            return TraceRow(fields.line, job, NOT_FINISHED)
        return TraceRow(fields.line, job, NO_TIMES if end_s is None else "")
