"""Packing scores: fill nodes up (bin-pack) or spread load (kube-scheduler's default)."""

from __future__ import annotations

from typing import ClassVar

from scheduler import capacity, costing
from scheduler.model import Job, Node
from scheduler.plugin import Cycle, Plugin


def allocated_after(cycle: Cycle, job: Job, node: Node) -> float:
    """The node's GPU fraction in use once one replica of `job` is added (0..1).

    Worked example: an 8-GPU node with 3 GPUs held whole and a 500m share on a fourth,
    receiving a 2-GPU replica: (3 + 0.5 + 2) / 8 = 0.6875.
    """
    pool = cycle.pool_of(node)
    return min(1.0, (capacity.gpus_used(pool, node) + costing.gpu_fraction(pool, job.request)) / len(node.gpus))


class MostAllocated(Plugin):
    """Prefers the fullest node: keeps whole nodes free for big jobs and for scale-down."""

    name = "MostAllocated"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        return allocated_after(cycle, job, node)


class LeastAllocated(Plugin):
    """Prefers the emptiest node, spreading load (kube-scheduler's default scoring)."""

    name = "LeastAllocated"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = False
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        return allocated_after(cycle, job, node)
