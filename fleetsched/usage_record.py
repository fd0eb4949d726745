"""A trace's measured utilisation written as the GPU agent's record file, as if the agent had scraped it.

Each job carrying a utilisation series (`scheduler.observed.MeasuredUtilisation`) becomes one
`DCGM_FI_DEV_GPU_UTIL` series per device it holds (whole GPUs: one per GPU of each replica;
MIG instances: one per instance, `GPU_I_PROFILE` its profile), with the agent's labels
(/work/metric-contract.md): `pod` and `fleetsched_job` the job id, `namespace` its project,
`team` its team, `modelName` "NVIDIA <catalog key>" of the GPU model asked (`--gpu-model`
when the job names none), a made-up `Hostname` and `UUID` per job and device. Sample i is at
`epoch_s + submit_s + i x period_s` (the job assumed to start when submitted, as it does on a
cluster with room for it); missing samples are left out, as a missed scrape would be. A share
of a GPU cannot be written: the agent's metrics do not say a pod's part of a device.

`fleetsched usage report` on the file then finds what a replay's `measured` summary finds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fleetsched.usage_input import UTILISATION
from scheduler.errors import InputError
from scheduler.model import Job, RequestKind
from traces.canonical import write_json_lines


def _labels(job: Job, model: str, device: int) -> dict[str, str]:
    request = job.request
    mig = request.kind is RequestKind.MIG
    return {
        "__name__": UTILISATION, "gpu": str(0 if mig else device), "UUID": f"GPU-{job.id}-{device}",
        "device": f"nvidia{0 if mig else device}", "modelName": f"NVIDIA {model}",
        "Hostname": f"node-{job.id}-{device}",
        "GPU_I_ID": str(device) if mig else "", "GPU_I_PROFILE": request.mig_profile if mig else "",
        "namespace": job.labels.project, "pod": job.id, "container": "", "team": job.labels.team,
        "fleetsched_job": job.id,
    }  # fmt: skip


def record_lines(jobs: Iterable[Job], gpu_model: str = "", epoch_s: float = 0.0) -> Iterator[dict[str, Any]]:
    """The record's lines (one series per device of each measured job), in job order."""
    for job in jobs:
        measured = job.measured
        if measured is None or not measured.samples_percent:
            continue
        if job.request.kind is RequestKind.SHARE:
            raise InputError("a share of a GPU cannot be written as the agent's metrics (they do not say a "
                             "pod's part of a device)", source=job.id, field="gpu_milli")  # fmt: skip
        model = min(job.gpu_models) if len(job.gpu_models) == 1 else gpu_model
        if not model:
            raise InputError("the job names no single GPU model; give --gpu-model", source=job.id, field="gpu_models")
        start_s = epoch_s + job.submit_s
        values = [[start_s + index * measured.period_s, str(value)]
                  for index, value in enumerate(measured.samples_percent) if value is not None]  # fmt: skip
        for device in range(job.request.gpus * job.replicas):
            yield {"metric": _labels(job, model, device), "values": values}


def check_writable(out: str | Path, field: str, append: bool = False) -> None:
    """InputError naming `field` unless a file can be written at `out`: checked before any work, so a
    mistyped folder is said at once and leaves nothing behind. The folder must exist and be
    writable (the record is written beside it, then renamed), `out` must not be a directory, and
    when `append`, an existing `out` must itself be writable."""
    path = Path(out)
    if path.is_dir():
        raise InputError("is a directory; name a file in it", source=str(out), field=field)
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"its folder {folder} does not exist", source=str(out), field=field)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"no permission to write in its folder {folder}", source=str(out), field=field)
    if append and path.exists() and not os.access(path, os.W_OK):
        raise InputError("no permission to write it", source=str(out), field=field)


def write_record(jobs: Iterable[Job], out: str | Path, gpu_model: str = "", epoch_s: float = 0.0) -> int:
    """Writes the record file `out` atomically (a temporary name, renamed when complete); the series written."""
    return write_json_lines(record_lines(jobs, gpu_model, epoch_s), out, compact=True)


__all__ = ["check_writable", "record_lines", "write_record"]
