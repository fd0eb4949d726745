"""The Framework runs a profile's plugins at the hooks, in the one order it alone knows.

It also owns the two structures that keep a cycle fast on big clusters (kube-scheduler scans
every node for every pod; we do not):

- `NodeClasses`, the node equivalence classes: nodes of a pool whose GPUs are in the same
  state. Filters and scores run once per class, on a representative node.
- a per-cycle memo of each class's verdict (filter status, capacity and raw scores) keyed by
  the class's signature and the job's *shape*: the request plus the job fields the profile's
  filter and score plugins declare they read. The next job of the same shape costs one dict
  lookup per class; a class whose nodes change gets a new signature and is evaluated anew.

Scores are normalised per plugin to 0..100, weighted and summed, as kube-scheduler's
RunScorePlugins does; ties go to the class whose first node name sorts first.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scheduler import capacity
from scheduler.decision import OK, ClassVerdict, Code, Preemption, Status
from scheduler.model import ClusterSnapshot, GpuRequest, Grant, Job, Node, Pool, empty_node
from scheduler.persistent import LayeredMap
from scheduler.plugin import (
    REQUEST_FIELDS,
    Cycle,
)
from scheduler.profile import Profile

MAX_SCORE = 100
MAX_VERDICTS = 200_000
CAPACITY = "NodeCapacity"
READY = "NodeReady"


@dataclass(slots=True)
class NodeClass:
    """Nodes alike in pool, readiness and GPU state; `members` sorted by name.

    `id` is the same for every class with the same signature during one cycle.
    """

    id: int
    key: Hashable
    pool: str
    ready: bool
    members: list[str] = field(default_factory=list)


class NodeClasses:
    """The cycle's live node states grouped into equivalence classes (the free-capacity index).

    Classes are kept per pool. The index also holds the cycle's verdicts: per job shape, the
    verdict of each class id, and the pools closed to that shape (an UNRESOLVABLE answer holds
    for every node of a pool, so the pool's other classes are never asked).
    """

    def __init__(self, nodes: Iterable[Node] = ()) -> None:
        self.nodes: dict[str, Node] = {}
        self._class_of: dict[str, Hashable] = {}
        self._ids: dict[Hashable, int] = {}
        self.by_pool: dict[str, dict[Hashable, NodeClass]] = {}
        self.verdicts: dict[Hashable, dict[int, Verdict]] = {}
        self.closed: dict[Hashable, dict[str, Status]] = {}
        self.new_node_fits: dict[tuple[Hashable, str], bool] = {}
        self._synced: object = None
        self.touched: set[str] = set()  # nodes changed since the last sync (a placer's trials)
        for node in sorted(nodes, key=lambda n: n.name):
            self.update(node)

    def sync(self, snapshot: ClusterSnapshot) -> None:
        """Brings the index to `snapshot`'s nodes, touching only nodes that changed.

        Verdicts depend only on job shape, pool and GPU state (the plugin contract), so they stay
        valid from one cycle to the next; past MAX_VERDICTS they are dropped to bound memory.
        """
        if sum(len(known) for known in self.verdicts.values()) > MAX_VERDICTS:
            self.verdicts.clear()
        nodes = self.nodes
        changed = snapshot.nodes.changed_keys(self._synced) if isinstance(snapshot.nodes, LayeredMap) else None
        self._synced = snapshot.nodes
        touched, self.touched = self.touched, set()
        if changed is not None:  # only the nodes the two snapshots do not share, or a placer touched
            for name in sorted(changed | touched):
                node = snapshot.nodes.get(name)
                if node is None:
                    if name in nodes:
                        self.remove(name)
                elif nodes.get(name) is not node:
                    self.update(node)
            return
        for node in snapshot.nodes.values():
            if nodes.get(node.name) is not node:
                self.update(node)
        self.touched.clear()
        if len(nodes) != len(snapshot.nodes):  # every snapshot node is indexed now: extras have left
            for name in [name for name in nodes if name not in snapshot.nodes]:
                self.remove(name)

    def remove(self, name: str) -> None:
        """Forgets a node that left the cluster."""
        node = self.nodes.pop(name)
        groups = self.by_pool[node.pool]
        key = self._class_of.pop(name)
        members = groups[key].members
        members.pop(bisect.bisect_left(members, name))
        if not members:
            del groups[key]

    @property
    def classes(self) -> list[NodeClass]:
        """Every class, pool by pool."""
        return [group for groups in self.by_pool.values() for group in groups.values()]

    def update(self, node: Node) -> None:
        """Records `node`'s new state, moving it to the class of its new signature."""
        self.touched.add(node.name)
        key = capacity.signature(node)
        old = self._class_of.get(node.name)
        self.nodes[node.name] = node
        if old == key:
            return
        groups = self.by_pool.setdefault(node.pool, {})
        if old is not None:
            members = groups[old].members
            members.pop(bisect.bisect_left(members, node.name))
            if not members:
                del groups[old]
        self._class_of[node.name] = key
        group = groups.get(key)
        if group is None:
            group = groups[key] = NodeClass(self._ids.setdefault(key, len(self._ids)), key, node.pool, node.ready)
        bisect.insort(group.members, node.name)

    def representative(self, group: NodeClass) -> Node:
        return self.nodes[group.members[0]]


@dataclass(frozen=True, slots=True)
class Verdict:
    """One class's answer for one job shape: the filter status and, when it passed, raw scores
    and the grants one replica would get on `node`, the representative it was evaluated on."""

    status: Status
    scores: tuple[float, ...] | None = None
    node: Node | None = None
    grants: tuple[Grant, ...] = ()

    def grants_on(self, pool: Pool, node: Node, request: GpuRequest) -> tuple[Grant, ...] | None:
        """The grants for one replica on `node`, reused when it is the node evaluated."""
        return self.grants if node is self.node else capacity.find_grants(pool, node, request)


NOT_READY = Verdict(Status(Code.UNRESOLVABLE, ("node is not ready",), READY))


class Framework:
    """Runs a Profile's plugins at the fixed hooks. Policies never call each other."""

    def __init__(self, profile: Profile, *, explain: bool = True) -> None:
        self.profile = profile
        self.explains = explain
        self._shapes: dict[int, tuple[Job, Hashable]] = {}
        self._sort = profile.sort
        self._admit = profile.admit
        self._prefilter = profile.prefilter
        self._filter = profile.filter
        self._postfilter = profile.postfilter
        self._score = profile.score
        self._provision = profile.provision
        declared = [getattr(p, "job_fields", None) for p in (*profile.filter, *(s for s, _ in profile.score))]
        self._shape_fields: tuple[str, ...] | None = (
            None if any(d is None for d in declared) else tuple(sorted(REQUEST_FIELDS.union(*filter(None, declared))))
        )

    # Queue hooks -------------------------------------------------------------------------

    def admit(self, cycle: Cycle, jobs: Sequence[Job]) -> tuple[list[Job], dict[str, Status]]:
        """Jobs every admit plugin lets through, and the WAIT status of the others."""
        if not self._admit:
            return list(jobs), {}
        admitted: list[Job] = []
        waiting: dict[str, Status] = {}
        for job in jobs:
            status = self._first_failure((plugin, plugin.admit(cycle, job)) for plugin in self._admit)
            if status.ok:
                admitted.append(job)
            else:
                waiting[job.id] = status
        return admitted, waiting

    def order(self, cycle: Cycle, jobs: Sequence[Job]) -> list[Job]:
        """Jobs in the profile's queue order; submit time then id break ties."""
        return sorted(jobs, key=lambda job: (self._sort.sort_key(cycle, job), job.submit_s, job.id))

    def prefilter(self, cycle: Cycle, job: Job) -> Status:
        if not self._prefilter:
            return OK
        return self._first_failure((plugin, plugin.prefilter(cycle, job)) for plugin in self._prefilter)

    # Node hooks --------------------------------------------------------------------------

    def shape(self, job: Job) -> Hashable:
        """What the memo keys a job by: its request and the fields the plugins read.

        Remembered per job object (jobs are immutable), since a waiting job is asked every cycle.
        """
        if self._shape_fields is None:
            return job
        known = self._shapes.get(id(job))
        if known is not None and known[0] is job:
            return known[1]
        if len(self._shapes) > MAX_VERDICTS:
            self._shapes.clear()
        shape = tuple(getattr(job, name) for name in self._shape_fields)
        self._shapes[id(job)] = (job, shape)
        return shape

    def verdict(self, cycle: Cycle, job: Job, classes: NodeClasses, group: NodeClass) -> Verdict:
        """The class's verdict for the job, from the cycle's verdicts or computed once."""
        shape = self.shape(job)
        if not group.ready:
            return NOT_READY
        closed = classes.closed.setdefault(shape, {}).get(group.pool)
        if closed is not None:
            return Verdict(closed)
        verdict = classes.verdicts.setdefault(shape, {}).get(group.id)
        return verdict if verdict is not None else self._remember(cycle, job, shape, classes, group)

    def _remember(self, cycle: Cycle, job: Job, shape: Hashable, classes: NodeClasses, group: NodeClass) -> Verdict:
        """Evaluates a class for a job shape once, and closes the pool on an UNRESOLVABLE answer."""
        verdict = classes.verdicts.setdefault(shape, {})[group.id] = self._evaluate(
            cycle, job, classes.representative(group)
        )
        if verdict.status.code is Code.UNRESOLVABLE:
            classes.closed.setdefault(shape, {})[group.pool] = verdict.status
        return verdict

    def _evaluate(self, cycle: Cycle, job: Job, node: Node) -> Verdict:
        status = OK
        for plugin in self._filter:
            answer = plugin.filter(cycle, job, node)
            if answer.code is Code.UNRESOLVABLE:
                # The most severe answer decides: a full node that also has the wrong GPU model is
                # unresolvable, as an empty one would be, so the pool closes the same way whatever
                # state its nodes are in.
                return Verdict(answer.by(getattr(plugin, "name", type(plugin).__name__)))
            if not answer.ok and status.ok:
                status = answer.by(getattr(plugin, "name", type(plugin).__name__))
        if not status.ok:
            return Verdict(status)
        grants = capacity.find_grants(cycle.pools[node.pool], node, job.request)
        if grants is None:
            return Verdict(Status(Code.UNSCHEDULABLE, (f"no free capacity for {job.request.describe()}",), CAPACITY))
        return Verdict(OK, tuple(plugin.score(cycle, job, node) for plugin, _ in self._score), node, grants)

    def best(self, cycle: Cycle, job: Job, classes: NodeClasses, shape: Hashable | None = None) -> NodeClass | None:
        """The feasible class with the highest weighted, normalised score, or None."""
        shape = self.shape(job) if shape is None else shape
        known = classes.verdicts.setdefault(shape, {})
        closed = classes.closed.setdefault(shape, {})
        feasible: list[tuple[NodeClass, tuple[float, ...]]] = []
        for pool, groups in classes.by_pool.items():
            if pool in closed:
                continue
            for group in groups.values():
                if not group.ready:
                    continue
                verdict = known.get(group.id)  # the hit path stays inline: it runs for every class
                if verdict is None:
                    verdict = self._remember(cycle, job, shape, classes, group)
                    if pool in closed:
                        break
                if verdict.scores is not None:
                    feasible.append((group, verdict.scores))
        if not feasible:
            return None
        if len(feasible) == 1 or not self._score:
            return min(feasible, key=lambda item: item[0].members[0])[0]
        totals = self.combine([scores for _, scores in feasible])
        top = max(totals)
        return min((g for (g, _), t in zip(feasible, totals, strict=True) if t == top), key=lambda g: g.members[0])

    def combine(self, raw: Sequence[tuple[float, ...]]) -> list[int]:
        """Per candidate: Σ weight × score normalised to 0..MAX_SCORE (see ScorePlugin)."""
        totals = [0] * len(raw)
        for column, (plugin, weight) in enumerate(self._score):
            values = [scores[column] for scores in raw]
            low, high = plugin.score_range or (min(values), max(values))
            span = high - low
            for row, value in enumerate(values):
                fraction = 0.0 if span <= 0 else min(max((value - low) / span, 0.0), 1.0)
                if not plugin.higher_is_better:
                    fraction = 1.0 - fraction
                totals[row] += weight * round(MAX_SCORE * fraction)
        return totals

    def explain(self, cycle: Cycle, job: Job, classes: NodeClasses) -> tuple[ClassVerdict, ...]:
        """Why the job fits no class: per pool, one verdict per distinct status (classes merged)."""
        merged: dict[tuple[str, Status], tuple[int, list[str]]] = {}
        for group in sorted(classes.classes, key=lambda g: g.members[0]):
            status = self.verdict(cycle, job, classes, group).status
            pool = cycle.pools[group.pool]
            nodes, free = merged.get((group.pool, status), (0, []))
            free.append(capacity.describe_free(pool, classes.representative(group)))
            merged[(group.pool, status)] = (nodes + len(group.members), free)
        return tuple(
            ClassVerdict(pool, nodes, free[0] if len(free) == 1 else f"{len(free)} kinds of free capacity", status)
            for (pool, status), (nodes, free) in sorted(merged.items(), key=lambda item: item[0][0])
        )

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> list[Preemption]:
        """Victims proposed by the first postfilter plugin that proposes any."""
        for plugin in self._postfilter:
            victims = list(plugin.postfilter(cycle, job, rejected))
            if victims:
                return victims
        return []

    def provision(self, cycle: Cycle, jobs: Sequence[Job], classes: NodeClasses) -> dict[str, int]:
        """Nodes to add per pool for jobs that fit nowhere: the largest ask of any provision plugin.

        Plugins are told, per job, the pools that can still grow (fewer nodes than max_nodes)
        where a new, empty node would take one replica (every filter passes, the capacity is there).
        """
        if not self._provision:
            return {}
        fits: dict[str, tuple[str, ...]] = {}
        sizes = {name: sum(len(g.members) for g in groups.values()) for name, groups in classes.by_pool.items()}
        growable = [pool for pool in cycle.pools.values() if sizes.get(pool.name, 0) < pool.max_nodes]
        for job in jobs:
            fits[job.id] = tuple(pool.name for pool in growable if self.fits_new_node(cycle, job, pool, classes))
        wanted: dict[str, int] = {}
        for plugin in self._provision:
            for pool_name, count in plugin.provision(cycle, jobs, fits).items():
                wanted[pool_name] = max(wanted.get(pool_name, 0), count)
        return wanted

    def fits_new_node(self, cycle: Cycle, job: Job, pool: Pool, classes: NodeClasses) -> bool:
        """Whether one replica of `job` would fit an empty node of `pool` (every filter, capacity)."""
        key = (self.shape(job), pool.name)
        known = classes.new_node_fits.get(key)
        if known is None:
            verdict = self._evaluate(cycle, job, empty_node(pool, f"{pool.name}-new"))
            known = classes.new_node_fits[key] = verdict.status.ok
        return known

    def filters_pass(self, cycle: Cycle, job: Job, node: Node) -> Status:
        """The filters' answer for one replica of `job` on `node`, capacity aside: the most severe."""
        status = OK
        for plugin in self._filter:
            answer = plugin.filter(cycle, job, node)
            if answer.code > status.code:
                status = answer.by(getattr(plugin, "name", type(plugin).__name__))
        return status

    @staticmethod
    def _first_failure(results: Iterable[tuple[object, Status]]) -> Status:
        for plugin, status in results:
            if not status.ok:
                return status.by(getattr(plugin, "name", type(plugin).__name__))
        return OK


def new_cycle(snapshot: ClusterSnapshot, now_s: float, seed: int) -> Cycle:
    """A fresh cycle over `snapshot` with its own seeded random generator."""
    return Cycle(now_s=now_s, snapshot=snapshot, seed=seed)
