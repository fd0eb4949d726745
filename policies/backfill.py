"""Reserve plugins: how long a job holds its GPUs, for EASY backfilling (`scheduler.backfill`)."""

from __future__ import annotations

import math

from scheduler.model import Job, JobKind
from scheduler.plugin import Cycle, Plugin


class EasyBackfill(Plugin):
    """EASY backfilling with run times from a declared limit, else from the job's duration.

    A declared limit (`Job.runtime_limit_s`: on Kubernetes a pod's `activeDeadlineSeconds` or
    its `fleetsched.io/runtime-limit-s` annotation) is the run time. Without one, a job with a
    duration (in a replay, the trace's; on Kubernetes the `fleetsched.io/expected-duration-s`
    annotation) runs, from its start, at most its work on the slowest GPU it names a speed-up
    for (or the reference GPU), plus a restore and every checkpoint it would write: an upper
    bound for one uninterrupted attempt, which a restart from a checkpoint only shortens. A
    service runs until its end time, so its duration bounds it too. A job with neither has no
    estimate: it may run forever.

    >>> plugin, cycle = EasyBackfill(), None  # it reads no cycle
    >>> plugin.runtime_s(cycle, Job(id="a", duration_s=3600.0, speedups=(("K80", 0.5),)))
    7200.0
    >>> plugin.runtime_s(cycle, Job(id="b", duration_s=3600.0, checkpoint_interval_s=1000.0,
    ...                             checkpoint_overhead_s=30.0, restore_s=60.0))
    3780.0
    >>> plugin.runtime_s(cycle, Job(id="c", duration_s=3600.0, runtime_limit_s=600.0))
    600.0
    >>> plugin.runtime_s(cycle, Job(id="d"))
    inf
    """

    name = "EasyBackfill"

    def runtime_s(self, cycle: Cycle, job: Job) -> float:
        if job.runtime_limit_s > 0:
            return job.runtime_limit_s
        if job.duration_s <= 0:
            return math.inf
        if job.kind is JobKind.SERVICE:
            return job.duration_s
        slowest = min([1.0, *(speed for _, speed in job.speedups if speed > 0)])
        wall_s = job.duration_s / slowest
        checkpoints = math.ceil(wall_s / job.checkpoint_interval_s) if job.checkpointable else 0
        return wall_s + job.restore_s + checkpoints * job.checkpoint_overhead_s
