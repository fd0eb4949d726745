"""Alibaba cluster-trace-gpu-v2025 (disaggregated DLRM serving, NSDI'25) instances as canonical service jobs.

`disaggregated_DLRM_trace.csv` holds one row per inference instance: `instance_sn, role,
app_name, cpu_request, cpu_limit, gpu_request, gpu_limit, rdma_request, rdma_limit,
memory_request, memory_limit, disk_request, disk_limit, max_instance_per_node, creation_time,
scheduled_time, deletion_time` (seconds from the trace start; empty or NaN = outside the window).

How fields map:
- `instance_sn` -> id; `app_name` -> labels.project and labels.model (the app is the service).
- every instance is a latency-sensitive, long-running, high-priority inference service:
  kind service, priority SERVICE_PRIORITY (10), not preemptible, status completed.
- `gpu_request` -> the request: 1 (or any whole number n) -> n whole GPUs; a value below 1
  (none in the published file) -> a share of `gpu_request * 1000` milli-GPU, with no GPU memory.
- `creation_time` -> submit_s; empty means the instance existed before the window: submit_s 0.
- `deletion_time` -> the end; empty means the instance outlived the window: it ends at the
  trace end, the largest time in the file (found by `prepare`, a constant-memory first pass).
- duration_s = end - start, where start is `scheduled_time`, else `creation_time`, else 0.
- `role` (CN = CPU node, HN = heterogeneous GPU node) is checked but not kept: the GPU request
  decides; in the published file every CN row asks for 0 GPUs and every HN row for 1.

What is dropped, and counted: CPU-only instances (`gpu_request` 0, the CN role) as CPU_ONLY.
Not modelled, so ignored: cpu/memory/rdma/disk requests and limits, `gpu_limit`, and the
density limit `max_instance_per_node` (-1 = none; fleetsched has no anti-affinity rule).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, JobKind, Labels, RequestKind
from traces.base import CPU_ONLY, Fields, TraceFormat, TraceRow, csv_rows

COLUMNS = (
    "instance_sn", "role", "app_name", "cpu_request", "cpu_limit", "gpu_request", "gpu_limit",
    "rdma_request", "rdma_limit", "memory_request", "memory_limit", "disk_request", "disk_limit",
    "max_instance_per_node", "creation_time", "scheduled_time", "deletion_time",
)
REQUIRED = ("instance_sn", "role", "app_name", "gpu_request", "creation_time", "scheduled_time", "deletion_time")
TIME_COLUMNS = ("creation_time", "scheduled_time", "deletion_time")
ROLES = ("CN", "HN")
SERVICE_PRIORITY = 10


def lenient_number(value: object) -> float | None:
    """A finite number, or None for anything else (for first passes that must not fail)."""
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def gpu_request_of(fields: Fields, column: str = "gpu_request") -> GpuRequest | None:
    """A GPU count as a request: n whole GPUs, a share of one below 1, None for 0."""
    gpus = fields.number(column)
    if gpus == 0:
        return None
    if gpus < 1:
        return GpuRequest(kind=RequestKind.SHARE, milli=max(1, round(gpus * FULL_GPU_MILLI)))
    if gpus != int(gpus):
        raise fields.fail(column, f"a request above 1 GPU must be a whole number, got {fields.values.get(column)!r}")
    return GpuRequest(kind=RequestKind.WHOLE, gpus=int(gpus))


class DlrmInstances(TraceFormat):
    """The DLRM serving trace: each instance a non-preemptible, high-priority service."""

    name = "alibaba-dlrm-2025"
    description = "Alibaba cluster-trace-gpu-v2025 DLRM serving instances (disaggregated_DLRM_trace.csv)"

    def detect(self, path: Path, first_line: str) -> bool:
        return tuple(first_line.split(",")[:3]) == COLUMNS[:3]

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        return csv_rows(path, REQUIRED)

    def prepare(self, path: Path) -> float:
        """The trace end: the largest time in the file (0 when it has none)."""
        end_s = 0.0
        for fields in csv_rows(path, REQUIRED):
            for column in TIME_COLUMNS:
                value = lenient_number(fields.values[column])
                if value is not None and value > end_s:
                    end_s = value
        return end_s

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        trace_end_s = float(context or 0.0)
        name = fields.text("instance_sn")
        role = fields.text("role")
        if role not in ROLES:
            raise fields.fail("role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        app = fields.text("app_name")
        request = gpu_request_of(fields)
        created = fields.optional("creation_time")
        scheduled = fields.optional("scheduled_time")
        deleted = fields.optional("deletion_time")
        if created is not None and scheduled is not None and scheduled < created:
            raise fields.fail("scheduled_time", f"{scheduled:g} is before creation_time {created:g}")
        start_s = scheduled if scheduled is not None else (created or 0.0)
        if deleted is not None and deleted < start_s:
            raise fields.fail("deletion_time", f"{deleted:g} is before the instance started ({start_s:g})")
        if request is None:
            return TraceRow(fields.line, None, CPU_ONLY)
        end_s = trace_end_s if deleted is None else deleted
        job = Job(
            id=name,
            request=request,
            submit_s=created or 0.0,
            duration_s=max(0.0, end_s - start_s),
            priority=SERVICE_PRIORITY,
            preemptible=False,
            kind=JobKind.SERVICE,
            labels=Labels(project=app, model=app),
        )
        return TraceRow(fields.line, job)
