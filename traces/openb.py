"""Alibaba cluster-trace-gpu-v2023 ("openb", FGD, ATC'23) pod lists as canonical jobs.

Columns: `name, cpu_milli, memory_mib, num_gpu, gpu_milli, gpu_spec, qos, pod_phase,
creation_time, deletion_time, scheduled_time` (seconds from the trace start). The
`openb_pod_list_multigpu*.csv` variants have only the first five columns.

How fields map:
- `name` -> id; `creation_time` -> submit_s; `deletion_time - scheduled_time` -> duration_s.
- `num_gpu` and `gpu_milli` -> the request: `num_gpu` whole GPUs, or a share of one GPU when
  `gpu_milli` < 1000 (openb gives no GPU memory, so shares carry none).
- `gpu_spec` ("A|B") -> gpu_models, resolved by the catalog (G1-G3 are placeholder models).
- `qos` -> priority: Guaranteed 3, LS (latency-sensitive) 2, Burstable 1, BE (best effort) 0;
  only BE pods are preemptible.
- `pod_phase` -> status: Failed -> failed; Succeeded and Running (cut at the trace end) -> completed.

What is dropped, and counted: CPU-only pods (`num_gpu` 0: fleetsched schedules GPUs); pods
never scheduled in the trace (`Pending`, no `scheduled_time`: their run time is unknown,
though inspection still counts what they asked for); CPU and host memory requests (not
modelled). The five-column variants have no times: every pod is submitted at 0 with no
duration, as the FGD simulator uses them (placement only, nobody leaves).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, RequestKind
from traces.base import CPU_ONLY, Fields, TraceFormat, TraceRow, csv_rows, first_line

FIVE_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
ALL_COLUMNS = (*FIVE_COLUMNS, "gpu_spec", "qos", "pod_phase", "creation_time", "deletion_time", "scheduled_time")
QOS_PRIORITY = {"Guaranteed": 3, "LS": 2, "Burstable": 1, "BE": 0}
PHASE_STATUS = {"Failed": "failed", "Succeeded": "completed", "Running": "completed", "Pending": "killed"}
NEVER_SCHEDULED = "never scheduled in the trace (run time unknown)"


def request_of(fields: Fields, gpus_column: str = "num_gpu", milli_column: str = "gpu_milli") -> GpuRequest | None:
    """The GPU request of an Alibaba-style row (num_gpu, gpu_milli), None when CPU-only."""
    gpus = fields.integer(gpus_column)
    milli = fields.integer(milli_column, FULL_GPU_MILLI if gpus else 0)
    if gpus == 0:
        if milli:
            raise fields.fail(milli_column, f"a share needs {gpus_column} = 1, got 0")
        return None
    if not 0 < milli <= FULL_GPU_MILLI:
        raise fields.fail(milli_column, f"must be 1..{FULL_GPU_MILLI} for a GPU pod, got {milli}")
    if milli < FULL_GPU_MILLI:
        if gpus != 1:
            raise fields.fail(milli_column, f"a share (< {FULL_GPU_MILLI}) is part of one GPU; {gpus_column} = {gpus}")
        return GpuRequest(kind=RequestKind.SHARE, milli=milli)
    return GpuRequest(kind=RequestKind.WHOLE, gpus=gpus)


def models_of(fields: Fields, column: str, catalog: Catalog) -> frozenset[str]:
    """Catalog keys for an "A|B" list of model names; an unknown name is a bad field."""
    keys = set()
    for name in filter(None, (part.strip() for part in fields.text(column, "").split("|"))):
        key = catalog.key_of(name)
        if key is None:
            raise fields.fail(column, f"unknown GPU model {name!r}")
        keys.add(key)
    return frozenset(keys)


class OpenbPods(TraceFormat):
    """openb pod lists, eleven columns with times, or the five-column multigpu variants."""

    name = "openb"
    description = "Alibaba cluster-trace-gpu-v2023 pod list (openb_pod_list_*.csv)"

    def detect(self, path: Path, first_line: str) -> bool:
        return tuple(first_line.split(",")[:5]) == FIVE_COLUMNS

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        timed = len(first_line(path).split(",")) > len(FIVE_COLUMNS)
        return csv_rows(path, ALL_COLUMNS if timed else FIVE_COLUMNS)

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        name = fields.text("name")
        request = request_of(fields)
        if "creation_time" not in fields.values:
            job = None if request is None else Job(id=name, request=request)
            return TraceRow(fields.line, job, CPU_ONLY if request is None else "")
        submit_s = fields.number("creation_time")
        deleted_s = fields.number("deletion_time")
        scheduled = fields.optional("scheduled_time")
        qos = fields.text("qos", "BE")
        phase = fields.text("pod_phase", "Running")
        if qos not in QOS_PRIORITY:
            raise fields.fail("qos", f"must be one of {', '.join(QOS_PRIORITY)}, got {qos!r}")
        if phase not in PHASE_STATUS:
            raise fields.fail("pod_phase", f"must be one of {', '.join(PHASE_STATUS)}, got {phase!r}")
        if deleted_s < submit_s:
            raise fields.fail("deletion_time", f"{deleted_s:g} is before creation_time {submit_s:g}")
        if scheduled is not None and not submit_s <= scheduled <= deleted_s:
            window = f"{submit_s:g}..{deleted_s:g}"
            raise fields.fail("scheduled_time", f"{scheduled:g} is outside creation..deletion ({window})")
        if request is None:
            return TraceRow(fields.line, None, CPU_ONLY)
        job = Job(
            id=name,
            request=request,
            submit_s=submit_s,
            duration_s=deleted_s - (submit_s if scheduled is None else scheduled),
            gpu_models=models_of(fields, "gpu_spec", catalog),
            priority=QOS_PRIORITY[qos],
            preemptible=qos == "BE",
            status=PHASE_STATUS[phase],
        )
        return TraceRow(fields.line, job, NEVER_SCHEDULED if scheduled is None else "")
