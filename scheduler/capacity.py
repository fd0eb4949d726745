"""Free capacity on a node: which GPUs a request would get, and the node's capacity signature.

`find_grants` is the device allocator (what a device plugin does when a pod is bound): whole
GPUs take the lowest free indices; a share goes to the fullest GPU it still fits (best fit,
so whole GPUs stay free); a MIG instance goes to the busiest GPU with a legal free start, at
the start that leaves the most legal starts for later instances.

`signature` is what makes two nodes of a pool interchangeable for every filter and score: the
multiset of their GPU states. Nodes with equal signatures form one equivalence class.

`Room` is free capacity counted the way a waiting queue's bound needs it (`scheduler.queue`),
and `node_room` one node's.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import lru_cache

from scheduler import mig
from scheduler.catalog import MigGeometry
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Grant, MigMode, Node, Pool, RequestKind, within_replica


def find_grants(pool: Pool, node: Node, request: GpuRequest) -> tuple[Grant, ...] | None:
    """The GPUs one replica of `request` would get on `node`, or None when it does not fit."""
    if request.kind is RequestKind.MIG:
        return _mig_grants(pool, node, request)
    if pool.mig_mode is not MigMode.OFF:
        return None
    if request.kind is RequestKind.WHOLE:
        if pool.device_replicas:
            return None
        free = [index for index, gpu in enumerate(node.gpus) if gpu.free]
        return tuple(Grant(index) for index in free[: request.gpus]) if len(free) >= request.gpus else None
    if not pool.sharing or not within_replica(pool, request):
        return None
    best: tuple[int, int, int] | None = None
    for index, gpu in enumerate(node.gpus):
        if gpu.owner is not None:
            continue
        milli, memory = gpu.used_milli, gpu.used_memory_mib
        if milli + request.milli <= FULL_GPU_MILLI and memory + request.memory_mib <= pool.gpu.memory_mib:
            candidate = (-milli, -memory, index)
            best = candidate if best is None or candidate < best else best
    return None if best is None else (Grant(best[2]),)


def _mig_grants(pool: Pool, node: Node, request: GpuRequest) -> tuple[Grant, ...] | None:
    geometry = pool.gpu.mig
    if pool.mig_mode is MigMode.OFF or geometry is None or request.mig_profile not in geometry.profiles:
        return None
    layouts = [gpu.layout for gpu in node.gpus]
    taken: list[set[mig.MigInstance]] = [{s.instance for s in gpu.mig if s.job is not None} for gpu in node.gpus]
    grants: list[Grant] = []
    for _ in range(request.gpus):
        choice = _free_slot(request.mig_profile, layouts, taken) or (
            _new_instance(geometry, request.mig_profile, layouts) if pool.mig_mode is MigMode.DYNAMIC else None
        )
        if choice is None:
            return None
        index, instance = choice
        if instance not in layouts[index]:
            layouts[index] = tuple(sorted((*layouts[index], instance)))
        taken[index].add(instance)
        grants.append(Grant(index, instance.start))
    return tuple(grants)


def _free_slot(
    profile: str, layouts: list[mig.Layout], taken: list[set[mig.MigInstance]]
) -> tuple[int, mig.MigInstance] | None:
    for index, layout in enumerate(layouts):
        for instance in layout:
            if instance.profile == profile and instance not in taken[index]:
                return index, instance
    return None


def _new_instance(
    geometry: MigGeometry, profile: str, layouts: list[mig.Layout]
) -> tuple[int, mig.MigInstance] | None:
    best: tuple[int, int, int, int] | None = None
    for index, layout in enumerate(layouts):
        choice = _best_start(geometry, layout, profile)
        if choice is not None:
            candidate = (choice[0], choice[1], index, choice[2])
            best = candidate if best is None or candidate < best else best
    return None if best is None else (best[2], mig.MigInstance(best[3], profile))


@lru_cache(maxsize=1 << 14)
def _best_start(geometry: MigGeometry, layout: mig.Layout, profile: str) -> tuple[int, int, int] | None:
    """(-compute slices in use, -legal starts left after, start) of the best new instance, or None.

    Busier GPUs first (packing); on a GPU, the start that leaves the most legal starts.
    """
    used = sum(geometry.profiles[instance.profile].compute_slices for instance in layout)
    best: tuple[int, int, int] | None = None
    for start in mig.free_starts(geometry, layout, profile):
        after = tuple(sorted((*layout, mig.MigInstance(start, profile))))
        room = sum(len(starts) for starts in mig.options(geometry, after).values())
        candidate = (-used, -room, start)
        best = candidate if best is None or candidate < best else best
    return best


def signature(node: Node) -> tuple[Hashable, ...]:
    """The node's class key: pool, readiness and the sorted states of its GPUs."""
    return (node.pool, node.ready, tuple(sorted([gpu.signature for gpu in node.gpus])))


def gpus_used(pool: Pool, node: Node) -> float:
    """GPUs' worth in use: whole GPUs, shares by compute, MIG instances by compute slices."""
    geometry = pool.gpu.mig
    used = 0.0
    for gpu in node.gpus:
        if gpu.owner is not None:
            used += 1.0
        elif gpu.shares:
            used += gpu.used_milli / FULL_GPU_MILLI
        elif gpu.mig and geometry is not None:
            slices = sum(geometry.profiles[s.instance.profile].compute_slices for s in gpu.mig if s.job is not None)
            used += slices / geometry.compute_slices
    return used


def describe_free(pool: Pool, node: Node) -> str:
    """What is free on the node, in words: `8/8 GPUs free`, `2 shared (300m free ...)`."""
    free = sum(gpu.free for gpu in node.gpus)
    parts = [f"{free}/{len(node.gpus)} GPUs free"]
    shared = [gpu for gpu in node.gpus if gpu.shares]
    if shared:
        most = max(FULL_GPU_MILLI - gpu.used_milli for gpu in shared)
        parts.append(f"{len(shared)} shared (at most {most}m free)")
    instances = [s.instance for gpu in node.gpus for s in gpu.mig if s.job is None]
    if pool.mig_mode is not MigMode.OFF:
        parts = [f"MIG free instances: {', '.join(sorted(map(str, instances))) or 'none'}"]
        if pool.mig_mode is MigMode.DYNAMIC:
            parts.append(f"{free}/{len(node.gpus)} GPUs unpartitioned")
    if not node.ready:
        parts.append("not ready")
    return ", ".join(parts)


@dataclass(slots=True)
class Room:
    """Free capacity in the units requests are made of, kept as histograms so bounds stay tight.

    `whole_by_node` counts nodes by how many whole GPUs they have free (a replica needs them on
    one node); `share_by_gpu` counts shareable GPUs by free milli-GPU; `mig_slices` totals the
    free compute slices of MIG pools.
    """

    whole_by_node: dict[int, int] = field(default_factory=dict)
    share_by_gpu: dict[int, int] = field(default_factory=dict)
    mig_slices: int = 0
    _replicas: dict[tuple[RequestKind, int], int] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.whole_by_node or self.share_by_gpu or self.mig_slices)

    def replicas(self, request: GpuRequest, slices_per_instance: int) -> int:
        """An upper bound on how many replicas of `request` this room could take (MIG:
        instances of `slices_per_instance` compute slices each). Rooms add up: the bound for
        two rooms is the sum of theirs."""
        if request.kind is RequestKind.MIG:
            return self.count(RequestKind.MIG, max(1, slices_per_instance) * request.gpus)
        return self.count(request.kind, request.gpus if request.kind is RequestKind.WHOLE else request.milli)

    def count(self, kind: RequestKind, size: int) -> int:
        """How many replicas of `size` (whole GPUs on one node, milli-GPU on one GPU, or MIG
        compute slices) of `kind` this room could take at most."""
        replicas = self._replicas.get((kind, size))
        if replicas is not None:  # many shapes share a size, and a room is asked every cycle: count once
            return replicas
        if size <= 0:
            replicas = 0
        elif kind is RequestKind.MIG:
            replicas = self.mig_slices // size
        else:
            histogram = self.whole_by_node if kind is RequestKind.WHOLE else self.share_by_gpu
            replicas = sum(n * (free // size) for free, n in histogram.items())
        self._replicas[(kind, size)] = replicas
        return replicas

    def add(self, other: Room, times: int = 1) -> None:
        """Adds `other` `times` times (a negative `times` takes it away)."""
        self._replicas.clear()
        for mine, theirs in ((self.whole_by_node, other.whole_by_node), (self.share_by_gpu, other.share_by_gpu)):
            for key, count in theirs.items():
                total = mine.get(key, 0) + times * count
                if total:
                    mine[key] = total
                else:
                    mine.pop(key, None)
        self.mig_slices += times * other.mig_slices

    def copy(self) -> Room:
        return Room(dict(self.whole_by_node), dict(self.share_by_gpu), self.mig_slices)


def node_room(pool: Pool, node: Node) -> Room:
    """What one node offers the queue's bound: nothing unless it is ready."""
    room = Room()
    if not node.ready:
        return room
    geometry = pool.gpu.mig
    if pool.mig_mode is not MigMode.OFF and geometry is not None:
        for gpu in node.gpus:
            used = sum(geometry.profiles[s.instance.profile].compute_slices for s in gpu.mig if s.job is not None)
            room.mig_slices += geometry.compute_slices - used
        return room
    free = sum(gpu.free for gpu in node.gpus)
    if free:
        room.whole_by_node[free] = 1
    if pool.sharing:
        for gpu in node.gpus:
            if gpu.owner is None and gpu.used_milli < FULL_GPU_MILLI:
                left = FULL_GPU_MILLI - gpu.used_milli
                room.share_by_gpu[left] = room.share_by_gpu.get(left, 0) + 1
    return room
