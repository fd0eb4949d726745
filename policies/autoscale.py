"""Provision plugins: which pools to grow, and by how much, for jobs that fit on no node.

The world caps each answer by the pool's max_nodes and the nodes already on their way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from scheduler import costing
from scheduler.model import Job, Pool, RequestKind
from scheduler.plugin import Cycle, Plugin


def nodes_needed(pool: Pool, job: Job) -> float:
    """Nodes of `pool` one job fills: replicas over how many fit on one node (shares, MIG by fraction).

    Worked example: a gang of 3 replicas of 4 GPUs on 8-GPU nodes needs 3 / 2 = 1.5 nodes.
    """
    request = job.request
    if request.kind is RequestKind.WHOLE:  # replicas do not split across nodes: whole ones per node
        return job.replicas / max(1, pool.gpus_per_node // request.gpus)
    return job.replicas * costing.gpu_fraction(pool, request) / pool.gpus_per_node


def _grow(cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]],
          choose: Callable[[Job, Sequence[Pool]], Pool]) -> dict[str, int]:
    demand: dict[str, float] = {}
    for job in jobs:
        pools = [cycle.pools[name] for name in fits.get(job.id, ())]
        if pools:
            pool = choose(job, pools)
            demand[pool.name] = demand.get(pool.name, 0.0) + nodes_needed(pool, job)
    return {name: math.ceil(nodes - 1e-9) for name, nodes in sorted(demand.items())}


class ScaleUpCheapest(Plugin):
    """Grows the pool with the lowest price per GPU-hour that a new node would take each job in."""

    name = "ScaleUpCheapest"

    def provision(self, cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]]) -> Mapping[str, int]:
        return _grow(cycle, jobs, fits, lambda job, pools: min(pools, key=lambda p: (p.usd_per_gpu_hour, p.name)))


class ScaleUpLeastWaste(Plugin):
    """Grows the pool whose new node the job would leave least idle (cluster-autoscaler's
    least-waste expander); ties go to the cheaper pool."""

    name = "ScaleUpLeastWaste"

    def provision(self, cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]]) -> Mapping[str, int]:
        def waste(job: Job, pool: Pool) -> float:
            needed = nodes_needed(pool, job)
            return math.ceil(needed - 1e-9) - needed

        return _grow(cycle, jobs, fits,
                     lambda job, pools: min(pools, key=lambda p: (waste(job, p), p.usd_per_gpu_hour, p.name)))
