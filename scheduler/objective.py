"""The batch objective's coefficients: what each count of the model costs, and priority weights.

Pure arithmetic over `scheduler.batch` classes, so the model (`scheduler.cpsat`) only states
variables and constraints, and the costs can be checked against `costing.objective_usd_per_hour`
(the same objective computed from placements) without a solver.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler import costing
from scheduler.batch import Config, Group, NodeGroup, ShareGpus, ShareShape
from scheduler.model import FULL_GPU_MILLI, Job, Pool
from scheduler.profile import SolverOptions

#: Objective coefficients stay below this so CP-SAT's double-precision bound stays exact.
MAX_COEFFICIENT = 2**50
#: Dollars per hour per GPU left free on a node or GPU the placement touches: far below any
#: price, it only breaks ties, towards the fullest node and GPU (best fit, as greedy's
#: MostAllocated), which keeps whole nodes and GPUs free for the jobs to come.
TIE_USD = costing.TIE_USD


def risk_usd(pool: Pool, job: Job, options: SolverOptions) -> float:
    """The weighted expected cost of spot take-backs for one replica of `job` on `pool`."""
    return options.spot_risk_weight * costing.spot_risk_usd_per_hour(pool, job)


def config_usd(node_group: NodeGroup, config: Config, options: SolverOptions) -> float:
    """One node of `node_group` loaded with `config`: its opening, and the change in fragmentation.

    Opening an empty node charges `idle_weight` of the price of the GPUs it leaves idle (its
    replicas pay their own share, see `node_replica_usd`); a node left partly used costs
    `fragmentation_weight` of its price.
    """
    pool = node_group.pool
    idle = node_group.free - config.used
    partial_before = 0 < node_group.free < pool.gpus_per_node
    partial_after = 0 < idle < pool.gpus_per_node
    fragment = options.fragmentation_weight * pool.usd_per_node_hour * (partial_after - partial_before)
    opening = options.idle_weight * idle * pool.usd_per_gpu_hour if node_group.empty else 0.0
    return opening + fragment + TIE_USD * idle


def node_replica_usd(node_group: NodeGroup, job: Job, options: SolverOptions) -> float:
    """One whole-GPU replica of `job` on `node_group`: its GPUs' price share and spot risk."""
    pool = node_group.pool
    return costing.replica_usd_per_hour(pool, job.request) + risk_usd(pool, job, options)


def pool_replica_usd(pool: Pool, job: Job, options: SolverOptions) -> float:
    """One share or MIG replica of `job` in `pool`: its price share and spot risk."""
    return costing.replica_usd_per_hour(pool, job.request) + risk_usd(pool, job, options)


def share_config_usd(share_class: ShareGpus, config: Sequence[ShareShape], options: SolverOptions) -> float:
    """One GPU of `share_class` loaded with `config`: the change in fragmentation (its shares pay
    their price share by replica, see `pool_replica_usd`)."""
    pool = share_class.pool
    used = sum(milli for milli, _ in config)
    partial_before = share_class.milli < FULL_GPU_MILLI
    partial_after = used < share_class.milli
    fragment = options.fragmentation_weight * pool.usd_per_gpu_hour * (partial_after - partial_before)
    return fragment + TIE_USD * (share_class.milli - used) / FULL_GPU_MILLI


def split_usd(pool: Pool, options: SolverOptions) -> float:
    """Splitting a whole GPU of a dynamic-MIG pool: it is partly used from then on."""
    return options.fragmentation_weight * pool.usd_per_gpu_hour


def tier_weights(groups: Sequence[Group]) -> tuple[dict[int, int], list[list[int]]]:
    """Weights for the placement objective, and the blocks of tiers solved together.

    Placing one more job of tier t must beat any change in the placements of lower tiers.
    With N_t the jobs of tier t, the lowest tier's weight is 1 and
    weight(t) = 1 + sum_{t' below t} N_t' * weight(t'). A run of tiers whose weights would
    pass MAX_COEFFICIENT starts a new block: blocks are solved one after another, highest first.
    """
    sizes: dict[int, int] = {}
    for group in groups:
        sizes[group.tier] = sizes.get(group.tier, 0) + len(group.jobs)
    weights: dict[int, int] = {}
    blocks: list[list[int]] = []
    below = 0
    block: list[int] = []
    for tier in sorted(sizes, reverse=True):  # lowest priority first
        if below and (1 + below) * (sizes[tier] + 1) > MAX_COEFFICIENT:
            blocks.insert(0, block)
            block, below = [], 0
        weights[tier] = 1 + below
        below += sizes[tier] * weights[tier]
        block.append(tier)
    if block:
        blocks.insert(0, block)
    return weights, blocks
