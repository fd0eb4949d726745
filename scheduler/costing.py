"""What a placement costs per hour: GPU shares, opened nodes, spot risk; one source for every placer.

The batch placer's objective and the benchmarks' "dollars per hour committed" both come from
here, so a comparison of placers measures them with the same ruler:

- A replica on a node that already runs work commits its share of the node's price: its GPUs'
  worth (`gpu_fraction`: whole GPUs, a share's milli-GPU, a MIG instance's compute slices out
  of the GPU's) times the pool's price per GPU-hour.
- A replica on an empty node of a pool without MIG opens the node: the whole node's price is
  committed, since the node could otherwise be released (or never be bought), and what the
  replicas leave free on it is paid for idle. MIG pools are charged by share only: their GPUs
  are partitioned for the slices, and the fragmentation term keeps new GPUs from being split.
- A replica on spot capacity carries the expected cost of the work a take-back destroys
  (`spot_risk_usd_per_hour`).

Worked example: an 8-GPU H100 node at $98.32/h ($12.29 per GPU-hour) running one job receives
a 2-GPU replica: $24.58/h committed. The same replica on an empty node commits $98.32/h.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.model import FULL_GPU_MILLI, Capacity, GpuRequest, Job, MigMode, Node, Placement, Pool, RequestKind

SECONDS_PER_HOUR = 3600.0
#: The batch objective's tie-break, per GPU left free on a node or GPU work lands on ($/h).
TIE_USD = 0.01


def gpu_fraction(pool: Pool, request: GpuRequest) -> float:
    """GPUs' worth one replica of `request` uses on `pool`."""
    if request.kind is RequestKind.WHOLE:
        return float(request.gpus)
    if request.kind is RequestKind.SHARE:
        return request.milli / FULL_GPU_MILLI
    geometry = pool.gpu.mig
    spec = geometry.profiles.get(request.mig_profile) if geometry is not None else None
    if geometry is None or spec is None:
        return float(request.gpus)
    return request.gpus * spec.compute_slices / geometry.compute_slices


def replica_usd_per_hour(pool: Pool, request: GpuRequest) -> float:
    """The price share of one replica on a node that already runs work."""
    return gpu_fraction(pool, request) * pool.usd_per_gpu_hour


def opens(pool: Pool, node: Node) -> bool:
    """Whether work placed on `node` opens it: an empty node of a pool without MIG."""
    return pool.mig_mode is MigMode.OFF and not any(gpu.busy for gpu in node.gpus)


def lost_work_s(pool: Pool, job: Job) -> float:
    """Seconds of one replica's progress a spot take-back is expected to destroy.

    A job that checkpoints within the notice loses only its restore time; one that checkpoints
    less often loses half an interval on average; one that never checkpoints loses half its run.
    """
    if job.checkpointable:
        if job.checkpoint_overhead_s <= pool.notice_s:
            return job.restore_s
        return job.checkpoint_interval_s / 2 + job.restore_s
    return job.duration_s / 2


def spot_risk_usd_per_hour(pool: Pool, job: Job) -> float:
    """Expected dollars of lost work per hour one replica of `job` runs on `pool`.

    Take-backs per node-hour times the GPU-hours one take-back destroys times their price.
    Zero off spot.
    """
    if pool.capacity is not Capacity.SPOT or pool.interruptions_per_node_hour <= 0:
        return 0.0
    lost_h = lost_work_s(pool, job) / SECONDS_PER_HOUR
    return pool.interruptions_per_node_hour * lost_h * replica_usd_per_hour(pool, job.request)


def committed_usd_per_hour(
    pools: Mapping[str, Pool], nodes: Mapping[str, Node], placements: Iterable[Placement]
) -> float:
    """Dollars per hour that `placements` commit on the cluster `nodes` describes before them.

    Every node opened counts once at its full price, whatever lands on it.
    """
    total = 0.0
    opened: set[str] = set()
    for placement in placements:
        for replica in placement.replicas:
            node = nodes[replica.node]
            pool = pools[node.pool]
            if opens(pool, node):
                if replica.node not in opened:
                    opened.add(replica.node)
                    total += pool.usd_per_node_hour
            else:
                total += replica_usd_per_hour(pool, placement.job.request)
    return total


def spot_risk_total(pools: Mapping[str, Pool], nodes: Mapping[str, Node], placements: Iterable[Placement]) -> float:
    """Expected dollars per hour of work lost to spot take-backs, over every replica placed."""
    return sum(
        spot_risk_usd_per_hour(pools[nodes[replica.node].pool], placement.job)
        for placement in placements
        for replica in placement.replicas
    )


def _partly_used_node(pool: Pool, node: Node) -> bool:
    free = sum(gpu.free for gpu in node.gpus)
    return pool.mig_mode is MigMode.OFF and 0 < free < len(node.gpus)


def _partly_used_gpu(pool: Pool, gpu_state: object) -> bool:
    """A GPU some work holds part of: shares below the full GPU, or a MIG split."""
    shares = getattr(gpu_state, "shares", ())
    if shares:
        return bool(getattr(gpu_state, "used_milli", 0) < FULL_GPU_MILLI)
    return pool.mig_mode is MigMode.DYNAMIC and bool(getattr(gpu_state, "mig", ()))


def objective_usd_per_hour(
    pools: Mapping[str, Pool],
    nodes: Mapping[str, Node],
    placements: Iterable[Placement],
    *,
    fragmentation_weight: float,
    spot_risk_weight: float,
    idle_weight: float,
) -> float:
    """The batch placer's cost objective, in dollars per hour, for `placements` on `nodes`.

    Every replica's price share, plus spot_risk_weight * spot_risk_total, plus idle_weight *
    the price of the GPUs left with nothing on them on nodes the placements open, plus
    fragmentation_weight * (the change in partly used nodes of pools without MIG, each at its
    node price, and in partly used GPUs, shared or split by MIG, each at its GPU price).
    With idle_weight 1 and no shares on opened nodes, the price part is committed_usd_per_hour.
    """
    placements = list(placements)
    after = dict(nodes)
    for placement in placements:
        for replica in placement.replicas:
            node = after[replica.node]
            after[replica.node] = node.grant(pools[node.pool], placement.job, replica.grants)
    fragmentation = idle = tie = 0.0
    shared = {(r.node, g.gpu) for p in placements if p.job.request.kind is RequestKind.SHARE
              for r in p.replicas for g in r.grants}  # fmt: skip
    # Nodes whose free GPUs change: they take whole GPUs, or give free GPUs to shares.
    loaded = {r.node for p in placements if p.job.request.kind is RequestKind.WHOLE for r in p.replicas}
    loaded.update(name for name, index in shared if nodes[name].gpus[index].free)
    for name in sorted({replica.node for placement in placements for replica in placement.replicas}):
        pool = pools[nodes[name].pool]
        before_node, after_node = nodes[name], after[name]
        if opens(pool, before_node):
            idle += sum(gpu.free for gpu in after_node.gpus) * pool.usd_per_gpu_hour
        if name in loaded:
            tie += sum(gpu.free for gpu in after_node.gpus)
        tie += sum((FULL_GPU_MILLI - after_node.gpus[i].used_milli) / FULL_GPU_MILLI for n, i in shared if n == name)
        change = _partly_used_node(pool, after_node) - _partly_used_node(pool, before_node)
        fragmentation += change * pool.usd_per_node_hour
        for old, new in zip(before_node.gpus, after_node.gpus, strict=True):
            fragmentation += (_partly_used_gpu(pool, new) - _partly_used_gpu(pool, old)) * pool.usd_per_gpu_hour
    shares = sum(
        replica_usd_per_hour(pools[nodes[replica.node].pool], placement.job.request)
        for placement in placements
        for replica in placement.replicas
    )
    risk = spot_risk_total(pools, nodes, placements)
    return shares + spot_risk_weight * risk + idle_weight * idle + fragmentation_weight * fragmentation + TIE_USD * tie
