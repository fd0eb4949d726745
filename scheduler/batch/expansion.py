"""Turns a batch solution, stated in counts over classes, into placements on concrete GPUs.

The solver says how many of each group's jobs run, how many replicas go to each whole-GPU class or
pool, how many nodes of a whole-GPU class take each config, how many GPUs of a share class take
each share config, and which MIG instances each bin gets. Expansion deals those out in a fixed
order (whole-GPU classes, then share GPUs, then MIG; members by name; jobs oldest first), so the same
solution always gives the same placements. Each replica is granted on the node as it stands at
that moment with the device allocator's rules (`Node.grant`), and the profile's filters are
asked again on that node: a job a filter turns down is dropped whole, and the placer offers it
to the greedy pass instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from scheduler import capacity
from scheduler.batch.problem import GpuRef, Hint, Problem, share_shape
from scheduler.mig import MigInstance
from scheduler.model import Grant, Job, MigMode, Node, Placement, Pool, ReplicaPlacement, RequestKind


@dataclass(frozen=True, slots=True)
class Solution:
    """A solver's answer in the problem's terms (see `scheduler.batch.problem`)."""

    jobs_placed: Mapping[int, int]
    node_replicas: Mapping[tuple[int, int], int]
    pool_replicas: Mapping[tuple[int, str], int]
    configs: Mapping[tuple[int, int], int]
    share_configs: Mapping[tuple[int, int], int]
    mig_instances: Mapping[tuple[int, int], tuple[MigInstance, ...]]


class InconsistentSolutionError(AssertionError):
    """A solution whose counts do not add up (a bug in the model, never bad input)."""


Check = Callable[[Job, Node], bool]
Grants = Callable[[Job, Node], "tuple[Grant, ...] | None"]
_Slot = tuple[Job, int]  # a job and the number of one of its replicas


def expand(problem: Problem, solution: Solution, check: Check) -> tuple[list[Placement], list[Job]]:
    """The placements (in queue order) the solution describes, and the jobs a filter turned down."""
    return _Expansion(problem, solution, check).run()


class _Expansion:
    def __init__(self, problem: Problem, solution: Solution, check: Check) -> None:
        self.problem = problem
        self.solution = solution
        self.check = check
        self.nodes: dict[str, Node] = {}
        self.replicas: dict[str, dict[int, ReplicaPlacement]] = {}
        self.dropped: dict[str, Job] = {}
        self.wanted: dict[Hashable, deque[_Slot]] = {}
        self.order: list[Job] = []

    def run(self) -> tuple[list[Placement], list[Job]]:
        self._destinations()
        share_free = self._whole_classes()
        self._shares(share_free)
        self._mig()
        left = {key: len(slots) for key, slots in self.wanted.items() if slots}
        if left:
            raise InconsistentSolutionError(f"replicas without a place: {left}")
        placements = []
        for job in self.order:
            if job.id not in self.dropped:
                got = self.replicas.get(job.id, {})
                placements.append(Placement(job, tuple(got[r] for r in range(job.replicas))))
        return placements, list(self.dropped.values())

    def _node(self, name: str) -> Node:
        node = self.nodes.get(name)
        return self.problem.nodes[name] if node is None else node

    def _destinations(self) -> None:
        """Each placed job's replicas, dealt to the places the solution counts for its group."""
        node_counts: dict[int, list[tuple[tuple[str, int | str], int]]] = {}
        for (number, whole_class), count in sorted(self.solution.node_replicas.items()):
            node_counts.setdefault(number, []).append((("node", whole_class), count))
        for (number, pool), count in sorted(self.solution.pool_replicas.items()):
            node_counts.setdefault(number, []).append((("pool", pool), count))
        for group in self.problem.groups:
            placed = self.solution.jobs_placed.get(group.index, 0)
            places = [where for where, count in node_counts.get(group.index, []) for _ in range(count)]
            if len(places) != placed * group.job.replicas:
                raise InconsistentSolutionError(f"group {group.index}: {len(places)} replicas for {placed} jobs")
            for number, job in enumerate(group.jobs[:placed]):
                self.order.append(job)
                for replica in range(job.replicas):
                    kind, where = places[number * job.replicas + replica]
                    request = job.request
                    if kind == "node":
                        key: Hashable = ("node", where, request.gpus)
                    elif request.kind is RequestKind.SHARE:
                        key = ("share", where, share_shape(job))
                    else:
                        key = ("mig", where, request.mig_profile)
                    self.wanted.setdefault(key, deque()).append((job, replica))
        rank = {job.id: n for n, job in enumerate(j for g in self.problem.groups for j in g.jobs)}
        self.order.sort(key=lambda job: rank[job.id])

    def _give(self, key: Hashable, name: str, grants: Grants) -> None:
        """Grants the next replica waiting for `key` on node `name`."""
        queue = self.wanted.get(key)
        if not queue:
            raise InconsistentSolutionError(f"a place for {key} that no replica wants")
        job, replica = queue.popleft()
        if job.id in self.dropped:
            return
        node = self._node(name)
        pool = self.problem.pools[node.pool]
        given = grants(job, node)
        if given is None:
            raise InconsistentSolutionError(f"{job.id} does not fit {name} as the solution says")
        if not self.check(job, node):
            self._drop(job)
            return
        self.nodes[name] = node.grant(pool, job, given)
        self.replicas.setdefault(job.id, {})[replica] = ReplicaPlacement(name, given)

    @staticmethod
    def _allocator(pool: Pool) -> Grants:
        def grants(job: Job, node: Node) -> tuple[Grant, ...] | None:
            return capacity.find_grants(pool, node, job.request)

        return grants

    def _drop(self, job: Job) -> None:
        self.dropped[job.id] = job
        for replica in self.replicas.pop(job.id, {}).values():
            node = self._node(replica.node)
            pool = self.problem.pools[node.pool]
            self.nodes[replica.node] = node.without(pool, job.id, {grant.gpu for grant in replica.grants})

    def _whole_classes(self) -> dict[int, list[GpuRef]]:
        """Whole-GPU replicas by config; returns, per whole-GPU class, the free GPUs shares may take."""
        share_free: dict[int, list[GpuRef]] = {}
        for whole_class in self.problem.whole_classes:
            configs = [
                config
                for number, config in enumerate(whole_class.configs)
                for _ in range(self.solution.configs.get((whole_class.index, number), 0))
            ]
            configs.sort(key=lambda config: (-config.used, config))
            if len(configs) > len(whole_class.nodes):
                raise InconsistentSolutionError(f"{len(configs)} configs for {len(whole_class.nodes)} nodes")
            reserved: list[GpuRef] = []
            for name, config in zip(whole_class.nodes, configs, strict=False):
                for size in config.whole:
                    self._give(("node", whole_class.index, size), name, self._allocator(whole_class.pool))
                free = [index for index, gpu in enumerate(self._node(name).gpus) if gpu.free]
                reserved.extend((name, index) for index in free[: config.share_gpus])
            share_free[whole_class.index] = reserved
        return share_free

    def _shares(self, share_free: Mapping[int, list[GpuRef]]) -> None:
        for share_class in self.problem.share_classes:
            gpus = share_class.gpus if share_class.whole_class is None else share_free.get(share_class.whole_class, [])
            configs = [
                config
                for number, config in enumerate(share_class.configs)
                for _ in range(self.solution.share_configs.get((share_class.index, number), 0))
            ]
            if len(configs) > len(gpus):
                raise InconsistentSolutionError(f"{len(configs)} share configs for {len(gpus)} GPUs")
            for (name, index), config in zip(gpus, configs, strict=False):
                for shape in config:
                    self._give(("share", share_class.pool.name, shape), name, _fixed((Grant(index),)))

    def _mig(self) -> None:
        for mig_class in self.problem.mig_classes:
            for number in range(mig_class.bins):
                name, index = mig_class.gpus[number]
                for instance in self.solution.mig_instances.get((mig_class.index, number), ()):
                    grant = (Grant(index, instance.start),)
                    self._give(("mig", mig_class.pool.name, instance.profile), name, _fixed(grant))
        for fixed in self.problem.fixed_mig:
            for profile, slots in fixed.free.items():
                key = ("mig", fixed.pool.name, profile)
                for name, index, start in slots:
                    if not self.wanted.get(key):
                        break
                    self._give(key, name, _fixed((Grant(index, start),)))


def _fixed(given: tuple[Grant, ...]) -> Grants:
    """Grants chosen by the solver (a GPU, a MIG start), the same whatever the node."""

    def grants(_job: Job, _node: Node) -> tuple[Grant, ...]:
        return given

    return grants


def solution_of(problem: Problem, hint: Hint) -> Solution | None:
    """`hint` (placements made on the problem's cluster) in the solver's terms, or None when the
    problem cannot express it (a config it did not enumerate, more split GPUs than bins)."""
    replicas = _replicas_of(problem, hint)
    if replicas is None:
        return None
    configs = _configs_of(problem, hint)
    if configs is None:
        return None
    share_configs = _share_configs_of(problem, hint)
    if share_configs is None:
        return None
    mig_instances = _bins_of(problem, hint)
    if mig_instances is None:
        return None
    placed, node_replicas, pool_replicas = replicas
    return Solution(placed, node_replicas, pool_replicas, configs, share_configs, mig_instances)


def _replicas_of(
    problem: Problem, hint: Hint
) -> tuple[dict[int, int], dict[tuple[int, int], int], dict[tuple[int, str], int]] | None:
    """The hint's placed jobs per group, and their replicas per whole-GPU class and per pool."""
    placed: dict[int, int] = {}
    node_replicas: dict[tuple[int, int], int] = {}
    pool_replicas: dict[tuple[int, str], int] = {}
    for group in problem.groups:
        for job in group.jobs:
            nodes = hint.replicas.get(job.id)
            if nodes is None:
                continue
            placed[group.index] = placed.get(group.index, 0) + 1
            for name in nodes:
                if job.request.kind is RequestKind.WHOLE:
                    c = problem.class_of.get(name, -1)
                    if c not in group.whole_classes:
                        return None
                    node_replicas[group.index, c] = node_replicas.get((group.index, c), 0) + 1
                else:
                    pool = problem.nodes[name].pool
                    if pool not in group.pools:
                        return None
                    pool_replicas[group.index, pool] = pool_replicas.get((group.index, pool), 0) + 1
    return placed, node_replicas, pool_replicas


def _configs_of(problem: Problem, hint: Hint) -> dict[tuple[int, int], int] | None:
    """The hint's whole-GPU nodes per class and config."""
    configs: dict[tuple[int, int], int] = {}
    for name, load in hint.node_loads.items():
        group_of = problem.class_of.get(name)
        if group_of is None or load not in problem.whole_classes[group_of].configs:
            return None
        key = (group_of, problem.whole_classes[group_of].configs.index(load))
        configs[key] = configs.get(key, 0) + 1
    return configs


def _share_configs_of(problem: Problem, hint: Hint) -> dict[tuple[int, int], int] | None:
    """The hint's shared GPUs per share class and share config."""
    share_configs: dict[tuple[int, int], int] = {}
    free_class = {s.whole_class: s.index for s in problem.share_classes if s.whole_class is not None}
    for gpu, shapes in hint.share_loads.items():
        k = problem.gpu_class_of.get(gpu, free_class.get(problem.class_of.get(gpu[0], -1)))
        if k is None or shapes not in problem.share_classes[k].configs:
            return None
        key = (k, problem.share_classes[k].configs.index(shapes))
        share_configs[key] = share_configs.get(key, 0) + 1
    return share_configs


def _bins_of(problem: Problem, hint: Hint) -> dict[tuple[int, int], tuple[MigInstance, ...]] | None:
    """The hint's new MIG instances per bin: per GPU class, the busiest GPU takes bin 0."""
    classes = {(c.pool.name, c.layout): c for c in problem.mig_classes}
    loads: dict[int, list[tuple[int, GpuRef, tuple[MigInstance, ...]]]] = {}
    for (name, index), instances in sorted(hint.mig_loads.items()):
        node = problem.nodes[name]
        if problem.pools[node.pool].mig_mode is not MigMode.DYNAMIC:
            continue  # a fixed layout's instances exist already: the model counts them by pool
        mig_class = classes.get((node.pool, node.gpus[index].layout))
        geometry = problem.pools[node.pool].gpu.mig
        if mig_class is None or geometry is None:
            return None
        load = sum(geometry.profiles[i.profile].compute_slices for i in instances)
        loads.setdefault(mig_class.index, []).append((-load, (name, index), tuple(sorted(instances))))
    found: dict[tuple[int, int], tuple[MigInstance, ...]] = {}
    for k, gpus in loads.items():
        if len(gpus) > problem.mig_classes[k].bins:
            return None
        for b, (_, _, instances) in enumerate(sorted(gpus)):
            found[k, b] = instances
    return found
