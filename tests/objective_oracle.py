"""The batch objective computed from placements, the independent ruler the solver's answers are
checked against (the model states the same costs per count, in `scheduler.batch.objective`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from scheduler.costing import TIE_USD, opens, replica_usd_per_hour, spot_risk_total
from scheduler.model import FULL_GPU_MILLI, MigMode, Node, Placement, Pool, RequestKind


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
