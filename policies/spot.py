"""Spot tolerance: spot capacity can be taken back, so only preemptible jobs go there."""

from __future__ import annotations

from scheduler.decision import OK, Status
from scheduler.model import Capacity, Job, Node
from scheduler.plugin import Cycle, Plugin


class SpotTolerance(Plugin):
    """Keeps jobs that are not preemptible off spot nodes (the spot taint, as a rule)."""

    name = "SpotTolerance"
    job_fields = frozenset({"preemptible"})

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        if cycle.pool_of(node).capacity is Capacity.SPOT and not job.preemptible:
            return Status.unresolvable("spot node; job is not preemptible")
        return OK
