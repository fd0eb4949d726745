"""The batch objective's coefficients: what each count of the model costs, and priority weights.

Pure arithmetic over `scheduler.batch.problem` classes, so the model (`scheduler.batch.model`) only states
variables and constraints, and the costs can be checked without a solver against the same
objective computed from placements (the tests' `objective_oracle`).
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler import costing
from scheduler.batch.expansion import Solution, solution_of
from scheduler.batch.problem import Config, Hint, JobGroup, Problem, ShareGpuClass, ShareShape, WholeGpuClass
from scheduler.mig import MigInstance
from scheduler.model import FULL_GPU_MILLI, Job, Pool, RequestKind
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


def config_usd(whole_class: WholeGpuClass, config: Config, options: SolverOptions) -> float:
    """One node of `whole_class` loaded with `config`: its opening, and the change in fragmentation.

    Opening an empty node charges `idle_weight` of the price of the GPUs it leaves idle (its
    replicas pay their own share, see `node_replica_usd`); a node left partly used costs
    `fragmentation_weight` of its price.
    """
    pool = whole_class.pool
    idle = whole_class.free - config.used
    partial_before = 0 < whole_class.free < pool.gpus_per_node
    partial_after = 0 < idle < pool.gpus_per_node
    fragment = options.fragmentation_weight * pool.usd_per_node_hour * (partial_after - partial_before)
    opening = options.idle_weight * idle * pool.usd_per_gpu_hour if whole_class.empty else 0.0
    return opening + fragment + TIE_USD * idle


def node_replica_usd(whole_class: WholeGpuClass, job: Job, options: SolverOptions) -> float:
    """One whole-GPU replica of `job` on `whole_class`: its GPUs' price share and spot risk."""
    pool = whole_class.pool
    return costing.replica_usd_per_hour(pool, job.request) + risk_usd(pool, job, options)


def pool_replica_usd(pool: Pool, job: Job, options: SolverOptions) -> float:
    """One share or MIG replica of `job` in `pool`: its price share and spot risk."""
    return costing.replica_usd_per_hour(pool, job.request) + risk_usd(pool, job, options)


def share_config_usd(share_class: ShareGpuClass, config: Sequence[ShareShape], options: SolverOptions) -> float:
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


def tier_weights(groups: Sequence[JobGroup]) -> tuple[dict[int, int], list[list[int]]]:
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


#: Model units per dollar per hour: costs are integers in tenths of a cent per hour.
UNITS_PER_USD_HOUR = 1000


def units(usd_per_hour: float) -> int:
    return round(usd_per_hour * UNITS_PER_USD_HOUR)


def cost_units(problem: Problem, solution: Solution, options: SolverOptions) -> int:
    """The cost objective of `solution` in model units: the same coefficients the model uses."""
    groups, whole_classes = problem.groups, problem.whole_classes
    total = 0
    for (g, c), count in solution.node_replicas.items():
        total += count * units(node_replica_usd(whole_classes[c], groups[g].job, options))
    for (c, k), count in solution.configs.items():
        total += count * units(config_usd(whole_classes[c], whole_classes[c].configs[k], options))
    for (g, pool), count in solution.pool_replicas.items():
        total += count * units(pool_replica_usd(problem.pools[pool], groups[g].job, options))
    for (k, q), count in solution.share_configs.items():
        share_class = problem.share_classes[k]
        total += count * units(share_config_usd(share_class, share_class.configs[q], options))
    for (k, _), instances in solution.mig_instances.items():
        mig_class = problem.mig_classes[k]
        if instances and not mig_class.layout:
            total += units(split_usd(mig_class.pool, options))
    return total


def single_job_options(problem: Problem) -> list[Solution]:
    """Every way the problem's one job (one replica) can run, one class choice each.

    With a single replica to place, the optimum is the cheapest of these: no solver needed.
    """
    (group,) = problem.groups
    if group.job.request.kind is RequestKind.WHOLE:
        return _whole_options(problem, group)
    if group.job.request.kind is RequestKind.SHARE:
        return _share_options(problem, group)
    return _mig_options(problem, group)


def _whole_options(problem: Problem, group: JobGroup) -> list[Solution]:
    """The single whole-GPU replica alone on a node, in each whole-GPU class with that config."""
    job = group.job
    found: list[Solution] = []
    placed = {group.index: 1}
    for c in group.whole_classes:
        alone = Config((job.request.gpus,))
        if alone in problem.whole_classes[c].configs:
            k = problem.whole_classes[c].configs.index(alone)
            found.append(Solution(placed, {(group.index, c): 1}, {}, {(c, k): 1}, {}, {}))
    return found


def _share_options(problem: Problem, group: JobGroup) -> list[Solution]:
    """The single share alone on a GPU, in each share class with that config (and its nodes' config)."""
    job = group.job
    found: list[Solution] = []
    placed = {group.index: 1}
    shape = (job.request.milli, job.request.memory_mib)
    for share_class in problem.share_classes:
        if share_class.pool.name not in group.pools or (shape,) not in share_class.configs:
            continue
        configs: dict[tuple[int, int], int] = {}
        if share_class.whole_class is not None:
            node_configs = problem.whole_classes[share_class.whole_class].configs
            if Config((), 1) not in node_configs:
                continue
            configs[share_class.whole_class, node_configs.index(Config((), 1))] = 1
        shares = {(share_class.index, share_class.configs.index((shape,))): 1}
        found.append(Solution(placed, {}, {(group.index, share_class.pool.name): 1}, configs, shares, {}))
    return found


def _mig_options(problem: Problem, group: JobGroup) -> list[Solution]:
    """The single MIG instance at each start in bin 0 of each MIG class, then in each fixed layout with one free."""
    job = group.job
    found: list[Solution] = []
    placed = {group.index: 1}
    profile = job.request.mig_profile
    for mig_class in problem.mig_classes:
        if mig_class.pool.name in group.pools and mig_class.starts.get(profile):
            for start in mig_class.starts[profile]:
                made = {(mig_class.index, 0): (MigInstance(start, profile),)}
                found.append(Solution(placed, {}, {(group.index, mig_class.pool.name): 1}, {}, {}, made))
    for fixed in problem.fixed_mig:
        if fixed.pool.name in group.pools and fixed.free.get(profile):
            found.append(Solution(placed, {}, {(group.index, fixed.pool.name): 1}, {}, {}, {}))
    return found


def rank(problem: Problem, solution: Solution, options: SolverOptions) -> tuple[tuple[int, ...], int]:
    """Smaller is better: jobs left waiting per priority tier (highest first), then cost."""
    tiers = sorted({group.tier for group in problem.groups})
    left = tuple(
        sum(len(g.jobs) - solution.jobs_placed.get(g.index, 0) for g in problem.groups if g.tier == tier)
        for tier in tiers
    )
    return left, cost_units(problem, solution, options)


def cheapest_single(problem: Problem, hint: Hint | None, options: SolverOptions) -> tuple[Solution | None, str, int]:
    """The optimum for one job with one replica: (solution, whose it is, cost units).

    The solution is None when the hint is as cheap (it is kept), or when nothing fits ("").
    """
    costed = sorted(
        ((cost_units(problem, option, options), n, option) for n, option in enumerate(single_job_options(problem))),
        key=lambda item: item[:2],
    )
    given = solution_of(problem, hint) if hint is not None else None
    theirs = cost_units(problem, given, options) if given is not None and given.jobs_placed else None
    if costed and (theirs is None or costed[0][0] < theirs):
        return costed[0][2], "cpsat", costed[0][0]
    return None, "greedy" if theirs is not None else "", theirs or 0
