"""The batch packing problem of one cycle, in counts over equivalence classes, not per node.

A batch placer sees every waiting job at once. Stated per job and node the problem is far too
big (500 jobs on 1,000 nodes is half a million booleans), so it is stated over classes in
which members are interchangeable, and expanded to concrete nodes and GPUs afterwards
(`scheduler.batch.expansion`):

- `JobGroup`: waiting jobs alike in shape (request, replicas, what the filters read), priority
  and spot risk. The model decides how many of a group's jobs run; they are its oldest ones.
- `WholeGpuClass`: a node equivalence class of a pool without MIG (same free GPUs on every
  member). Its `configs` are the ways to load one node (a multiset of whole-GPU replica sizes,
  and in a sharing pool how many free GPUs it gives to shares); the model counts the
  nodes using each config. Replicas of identical nodes can be packed exactly this way with a
  handful of integers, whatever the number of nodes.
- `ShareGpuClass`: GPUs of a sharing pool alike in free milli-GPU and memory, loaded by configs
  of share shapes: the partly shared GPUs, and per whole-GPU class the free GPUs its configs give.
- `MigGpuClass`: GPUs of a dynamic-MIG pool with one layout; the model gives it `bins` GPUs with
  an optional interval per legal free start of each profile asked for.
- `FixedMigPool`: a fixed-layout MIG pool's free instances by profile.

Jobs the model does not state (a replica asking for several MIG instances, which must share
a node) are `left_out`; the placer hands them to the greedy pass that follows the solve.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler import costing, mig
from scheduler.catalog import MigGeometry
from scheduler.classes import NodeClass
from scheduler.cycle import CycleState
from scheduler.framework import Framework
from scheduler.model import FULL_GPU_MILLI, Job, MigMode, Node, Placement, Pool, RequestKind

#: Configs kept per class; enumeration stops there (the hint's configs are always added).
MAX_CONFIGS = 96
#: MIG bins per layout class: at most this many times the GPUs the replicas' slices fill, plus one.
BIN_SLACK = 2
#: Share configs kept per GPU class: the fullest ones (the hint's are always added).
MAX_SHARE_CONFIGS = 24

ShareShape = tuple[int, int]  # (milli-GPU, memory MiB) of one share replica
GpuRef = tuple[str, int]  # (node name, GPU index)


@dataclass(frozen=True, slots=True)
class JobGroup:
    """Jobs the model cannot tell apart, in queue order; `tier` 0 is the highest priority."""

    index: int
    jobs: tuple[Job, ...]
    tier: int
    whole_classes: tuple[int, ...] = ()
    pools: tuple[str, ...] = ()

    @property
    def job(self) -> Job:
        return self.jobs[0]


@dataclass(frozen=True, slots=True, order=True)
class Config:
    """One way to load one node: whole-GPU replica sizes (largest first) and GPUs given to shares."""

    whole: tuple[int, ...]
    share_gpus: int = 0

    @property
    def used(self) -> int:
        return sum(self.whole) + self.share_gpus


@dataclass(frozen=True, slots=True)
class WholeGpuClass:
    """A node equivalence class of a pool without MIG; `free` GPUs free on each member."""

    index: int
    pool: Pool
    nodes: tuple[str, ...]
    free: int
    empty: bool
    configs: tuple[Config, ...]


@dataclass(frozen=True, slots=True)
class ShareGpuClass:
    """GPUs of a sharing pool alike in free compute and memory, and the share configs they take.

    `gpus` lists them when their number is known (partly shared GPUs); `whole_class` names the
    whole-GPU class whose free GPUs they are otherwise.
    """

    index: int
    pool: Pool
    milli: int
    memory_mib: int
    gpus: tuple[GpuRef, ...]
    whole_class: int | None
    configs: tuple[tuple[ShareShape, ...], ...]


@dataclass(frozen=True, slots=True)
class MigGpuClass:
    """GPUs of a dynamic-MIG pool with one layout, the bins the model gets and the free starts."""

    index: int
    pool: Pool
    layout: mig.Layout
    gpus: tuple[GpuRef, ...]
    bins: int
    starts: Mapping[str, tuple[int, ...]]


@dataclass(frozen=True, slots=True)
class FixedMigPool:
    """A fixed-layout MIG pool's free instances, by profile: (node, GPU, start) each."""

    pool: Pool
    free: Mapping[str, tuple[tuple[str, int, int], ...]]


@dataclass(frozen=True, slots=True)
class Hint:
    """A known placement (the greedy answer) in the problem's terms, to warm-start the solver."""

    replicas: Mapping[str, tuple[str, ...]]  # job id -> the node of each replica
    node_loads: Mapping[str, Config]
    share_loads: Mapping[GpuRef, tuple[ShareShape, ...]]
    mig_loads: Mapping[GpuRef, tuple[mig.MigInstance, ...]]


@dataclass(frozen=True, slots=True)
class Problem:
    """Everything the batch model is built from, and the cluster it was read off."""

    nodes: Mapping[str, Node]
    pools: Mapping[str, Pool]
    groups: tuple[JobGroup, ...]
    whole_classes: tuple[WholeGpuClass, ...]
    share_classes: tuple[ShareGpuClass, ...]
    mig_classes: tuple[MigGpuClass, ...]
    fixed_mig: tuple[FixedMigPool, ...]
    left_out: tuple[Job, ...]
    class_of: Mapping[str, int] = field(default_factory=dict)  # node -> whole-GPU class
    gpu_class_of: Mapping[GpuRef, int] = field(default_factory=dict)  # GPU -> share or MIG GPU class


def share_shape(job: Job) -> ShareShape:
    return (job.request.milli, job.request.memory_mib)


def hint_from(nodes: Mapping[str, Node], pools: Mapping[str, Pool], placements: Sequence[Placement]) -> Hint:
    """`placements` (made on `nodes`) as node loads, share loads and new MIG instances."""
    whole: dict[str, list[int]] = {}
    shared: dict[str, set[int]] = {}
    share_loads: dict[GpuRef, list[ShareShape]] = {}
    mig_loads: dict[GpuRef, list[mig.MigInstance]] = {}
    for placement in placements:
        request = placement.job.request
        for replica in placement.replicas:
            if request.kind is RequestKind.WHOLE:
                whole.setdefault(replica.node, []).append(request.gpus)
            elif request.kind is RequestKind.SHARE:
                gpu = replica.grants[0].gpu
                share_loads.setdefault((replica.node, gpu), []).append(share_shape(placement.job))
                if nodes[replica.node].gpus[gpu].free:
                    shared.setdefault(replica.node, set()).add(gpu)
            else:
                for grant in replica.grants:
                    instance = mig.MigInstance(-1 if grant.mig_start is None else grant.mig_start, request.mig_profile)
                    mig_loads.setdefault((replica.node, grant.gpu), []).append(instance)
    loads = {
        name: Config(tuple(sorted(whole.get(name, ()), reverse=True)), len(shared.get(name, ())))
        for name in sorted(set(whole) | set(shared))
    }
    return Hint(
        {p.job.id: tuple(r.node for r in p.replicas) for p in placements},
        loads,
        {gpu: tuple(sorted(shapes)) for gpu, shapes in share_loads.items()},
        {gpu: tuple(instances) for gpu, instances in mig_loads.items()},
    )


def multisets(weights: Sequence[tuple[int, ...]], room: tuple[int, ...], limit: int) -> Iterator[tuple[int, ...]]:
    """Non-empty multisets of item indexes (sorted) whose summed weights fit `room`, up to `limit`."""
    found = 0
    stack: list[tuple[tuple[int, ...], int, tuple[int, ...]]] = [((), 0, room)]
    while stack:
        chosen, first, left = stack.pop()
        if chosen:
            yield chosen
            found += 1
            if found >= limit:
                return
        for item in range(len(weights) - 1, first - 1, -1):
            rest = tuple(a - b for a, b in zip(left, weights[item], strict=True))
            if min(rest) >= 0:
                stack.append(((*chosen, item), item, rest))


def build(
    framework: Framework, state: CycleState, queue: Sequence[Job], hint: Hint | None = None
) -> Problem:
    """The problem for `queue` (admitted, in order) on the cluster of `state`."""
    pools = state.cycle.pools
    classes = state.classes
    left_out: list[Job] = []
    by_key: dict[Hashable, list[Job]] = {}
    for job in queue:
        request = job.request
        if not framework.prefilter(state.cycle, job).ok or (request.kind is RequestKind.MIG and request.gpus > 1):
            left_out.append(job)
            continue
        risk = tuple(round(costing.spot_risk_usd_per_hour(pool, job), 6) for pool in pools.values())
        by_key.setdefault((framework.shape(job), job.priority, risk), []).append(job)
    tiers = {priority: tier for tier, priority in enumerate(sorted({j.priority for j in queue}, reverse=True))}
    ready = [c for c in classes.classes if c.ready and classes.representative(c).gpus]
    plain = [c for c in ready if pools[c.pool].mig_mode is MigMode.OFF]
    groups: list[JobGroup] = []
    for jobs in by_key.values():
        job = jobs[0]
        if job.request.kind is RequestKind.WHOLE:
            eligible = tuple(c.id for c in plain if framework.verdict(state, job, c).status.ok)
            groups.append(JobGroup(len(groups), tuple(jobs), tiers[job.priority], whole_classes=eligible))
        else:
            eligible_pools = tuple(p for p in sorted(pools) if framework.fits_new_node(state.cycle, job, pools[p]))
            groups.append(JobGroup(len(groups), tuple(jobs), tiers[job.priority], pools=eligible_pools))
    builder = _Builder(state, groups, hint)
    whole_classes = builder.whole_classes(plain)
    index = {g.index: n for n, g in enumerate(whole_classes)}
    groups = [
        JobGroup(g.index, g.jobs, g.tier, tuple(index[c] for c in g.whole_classes if c in index), g.pools)
        for g in groups
    ]
    return Problem(
        nodes=dict(classes.nodes),
        pools=pools,
        groups=tuple(groups),
        whole_classes=tuple(
            WholeGpuClass(index[g.index], g.pool, g.nodes, g.free, g.empty, g.configs) for g in whole_classes
        ),
        share_classes=builder.share_classes(ready, whole_classes, index),
        mig_classes=builder.mig_classes(ready),
        fixed_mig=builder.fixed_mig(ready),
        left_out=tuple(left_out),
        class_of={name: index[g.index] for g in whole_classes for name in g.nodes},
        gpu_class_of=builder.gpu_class_of,
    )


class _Builder:
    """Reads the classes off the node index for the job groups that can use them."""

    def __init__(self, state: CycleState, groups: Sequence[JobGroup], hint: Hint | None) -> None:
        self.pools = state.cycle.pools
        self.classes = state.classes
        self.hint = hint
        self.sizes: dict[int, set[int]] = {}
        self.share_shapes: dict[str, set[ShareShape]] = {}
        self.mig_profiles: dict[str, set[str]] = {}
        self.mig_replicas: dict[str, dict[str, int]] = {}  # pool -> profile -> replicas asking
        self.gpu_class_of: dict[GpuRef, int] = {}
        for group in groups:
            job = group.job
            for class_id in group.whole_classes:
                self.sizes.setdefault(class_id, set()).add(job.request.gpus)
            for pool in group.pools:
                if job.request.kind is RequestKind.SHARE:
                    self.share_shapes.setdefault(pool, set()).add(share_shape(job))
                else:
                    self.mig_profiles.setdefault(pool, set()).add(job.request.mig_profile)
                    by_profile = self.mig_replicas.setdefault(pool, {})
                    asking = job.replicas * len(group.jobs)
                    by_profile[job.request.mig_profile] = by_profile.get(job.request.mig_profile, 0) + asking

    def whole_classes(self, plain: Sequence[NodeClass]) -> list[WholeGpuClass]:
        found: list[WholeGpuClass] = []
        for node_class in plain:
            members = tuple(node_class.members)
            node = self.classes.nodes[members[0]]
            pool = self.pools[node.pool]
            sizes = sorted(self.sizes.get(node_class.id, ()), reverse=True)
            shares = pool.sharing and bool(self.share_shapes.get(pool.name))
            free = sum(gpu.free for gpu in node.gpus)
            if free == 0 or not (sizes or shares):
                continue
            empty = costing.opens(pool, node)
            configs: set[Config] = set()
            for chosen in multisets([(size,) for size in sizes], (free,), MAX_CONFIGS):
                configs.add(Config(tuple(sizes[i] for i in chosen)))
            if shares:  # a node of a sharing pool may also give some of its free GPUs to shares
                for config in [Config(()), *configs]:
                    for share_gpus in range(1, free - config.used + 1):
                        if len(configs) < 2 * MAX_CONFIGS:
                            configs.add(Config(config.whole, share_gpus))
            if self.hint is not None:
                configs.update(self.hint.node_loads[name] for name in members if name in self.hint.node_loads)
            found.append(WholeGpuClass(node_class.id, pool, members, free, empty, tuple(sorted(configs))))
        return found

    def share_classes(
        self, ready: Sequence[NodeClass], whole_classes: Sequence[WholeGpuClass], index: Mapping[int, int]
    ) -> tuple[ShareGpuClass, ...]:
        found: list[ShareGpuClass] = []
        partly: dict[tuple[str, int, int], list[GpuRef]] = {}
        for node_class in ready:
            for name in node_class.members:
                node = self.classes.nodes[name]
                pool = self.pools[node.pool]
                if not pool.sharing or pool.name not in self.share_shapes:
                    continue
                for gpu_index, state in enumerate(node.gpus):
                    if state.shares and state.used_milli < FULL_GPU_MILLI:
                        # Free memory is rounded down to whole GiB: far fewer classes, never more room.
                        milli = FULL_GPU_MILLI - state.used_milli
                        memory = (pool.gpu.memory_mib - state.used_memory_mib) // 1024 * 1024
                        partly.setdefault((pool.name, milli, memory), []).append((name, gpu_index))
        for (pool_name, milli, memory), gpus in sorted(partly.items()):
            configs = self._share_configs(pool_name, milli, memory, gpus)
            if configs:
                for ref in gpus:
                    self.gpu_class_of[ref] = len(found)
                pool = self.pools[pool_name]
                found.append(ShareGpuClass(len(found), pool, milli, memory, tuple(sorted(gpus)), None, configs))
        for whole_class in whole_classes:
            pool = whole_class.pool
            if pool.sharing and pool.name in self.share_shapes:
                nodes = self.classes.nodes
                gpus = [(name, i) for name in whole_class.nodes for i, g in enumerate(nodes[name].gpus) if g.free]
                memory = pool.gpu.memory_mib
                configs = self._share_configs(pool.name, FULL_GPU_MILLI, memory, gpus)
                if configs:
                    whole_class_index = index[whole_class.index]
                    found.append(
                        ShareGpuClass(len(found), pool, FULL_GPU_MILLI, memory, (), whole_class_index, configs)
                    )
        return tuple(found)

    def _share_configs(
        self, pool: str, milli: int, memory: int, gpus: Sequence[GpuRef]
    ) -> tuple[tuple[ShareShape, ...], ...]:
        """Each shape alone, then the configs that fill the GPU most, up to MAX_SHARE_CONFIGS."""
        shapes = sorted(self.share_shapes[pool])
        fitting = multisets(shapes, (milli, memory), 50 * MAX_SHARE_CONFIGS)
        every: list[tuple[ShareShape, ...]] = [tuple(shapes[i] for i in chosen) for chosen in fitting]
        configs: set[tuple[ShareShape, ...]] = {config for config in every if len(config) == 1}
        every.sort(key=lambda config: (-sum(m for m, _ in config), -sum(b for _, b in config), config))
        for config in every:
            if len(configs) >= MAX_SHARE_CONFIGS:
                break
            configs.add(config)
        if self.hint is not None:
            configs.update(self.hint.share_loads[gpu] for gpu in gpus if gpu in self.hint.share_loads)
        return tuple(sorted(configs))

    def mig_classes(self, ready: Sequence[NodeClass]) -> tuple[MigGpuClass, ...]:
        by_layout: dict[tuple[str, mig.Layout], list[GpuRef]] = {}
        for node_class in ready:
            pool = self.pools[node_class.pool]
            if pool.mig_mode is not MigMode.DYNAMIC or pool.name not in self.mig_profiles:
                continue
            for name in node_class.members:
                for gpu_index, gpu in enumerate(self.classes.nodes[name].gpus):
                    by_layout.setdefault((pool.name, gpu.layout), []).append((name, gpu_index))
        found: list[MigGpuClass] = []
        for (pool_name, layout), gpus in sorted(by_layout.items()):
            pool = self.pools[pool_name]
            assert pool.gpu.mig is not None  # a dynamic-MIG pool's model has MIG (cluster loading checks)
            free = mig.options(pool.gpu.mig, layout)
            starts = {p: free[p] for p in sorted(self.mig_profiles[pool_name]) if free.get(p)}
            if not starts:
                continue
            gpus.sort()
            bins = min(len(gpus), _bins_needed(pool.gpu.mig, layout, starts, self.mig_replicas[pool_name]))
            for ref in gpus[:bins]:
                self.gpu_class_of[ref] = len(found)
            found.append(MigGpuClass(len(found), pool, layout, tuple(gpus), bins, starts))
        return tuple(found)

    def fixed_mig(self, ready: Sequence[NodeClass]) -> tuple[FixedMigPool, ...]:
        free: dict[str, dict[str, list[tuple[str, int, int]]]] = {}
        for node_class in ready:
            pool = self.pools[node_class.pool]
            if pool.mig_mode is not MigMode.FIXED or pool.name not in self.mig_profiles:
                continue
            for name in node_class.members:
                for gpu_index, gpu in enumerate(self.classes.nodes[name].gpus):
                    for slot in gpu.mig:
                        if slot.job is None and slot.instance.profile in self.mig_profiles[pool.name]:
                            by_profile = free.setdefault(pool.name, {})
                            free_slot = (name, gpu_index, slot.instance.start)
                            by_profile.setdefault(slot.instance.profile, []).append(free_slot)
        return tuple(
            FixedMigPool(self.pools[name], {p: tuple(sorted(slots)) for p, slots in sorted(by_profile.items())})
            for name, by_profile in sorted(free.items())
        )


def _bins_needed(
    geometry: MigGeometry, layout: mig.Layout, starts: Mapping[str, object], asking: Mapping[str, int]
) -> int:
    """How many GPUs of one layout the model gets for the MIG replicas that fit them.

    At most one per replica, and at most BIN_SLACK times the GPUs their compute slices would
    fill: a cap, not a bound, that keeps the model small on big pools (a packing that needs
    more split GPUs than that costs more than one that does not, and the greedy pass after the
    solve still places what the cap leaves out).
    """
    fitting = {profile: count for profile, count in asking.items() if profile in starts}
    slices: int = sum(count * geometry.profiles[profile].compute_slices for profile, count in fitting.items())
    free: int = geometry.compute_slices - sum(geometry.profiles[i.profile].compute_slices for i in layout)
    filled = -(-slices // max(1, free))
    return min(sum(fitting.values()), BIN_SLACK * filled + 1)
