"""Cost scores: put work where a GPU-hour costs least."""

from __future__ import annotations

from typing import ClassVar

from scheduler.model import Job, Node
from scheduler.plugin import Cycle, Plugin


class CheapestPool(Plugin):
    """Prefers pools with a lower price per GPU-hour (spot discounts included)."""

    name = "CheapestPool"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = False
    score_range: ClassVar[tuple[float, float] | None] = None

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        return cycle.pool_of(node).usd_per_gpu_hour
