"""The Framework runs a profile's plugins at the hooks, in the one order it alone knows.

It evaluates filters and scores once per node equivalence class (`scheduler.classes`), not
once per node, and remembers each class's verdict, keyed by the class's signature and the
job's *shape*: its request plus the job fields the profile's filter and score plugins declare
they read. The next job of the same shape costs one dict lookup per class; a class whose nodes
change gets a new signature and is evaluated anew. Verdicts depend only on shape, pool and
GPU state (the plugin contract), so they stay valid from one cycle to the next: the Framework
keeps them (`scheduler.verdicts.Verdicts`) for as long as it lives.

Scores are normalised per plugin to 0..100, weighted and summed, as kube-scheduler's
RunScorePlugins does; ties go to the class whose first node name sorts first.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

from scheduler import capacity
from scheduler.classes import NodeClass, NodeClasses
from scheduler.cycle import CycleState
from scheduler.decision import OK, ClassVerdict, Code, Preemption, Status
from scheduler.model import ClusterSnapshot, Job, Node, Pool, empty_node
from scheduler.plugin import REQUEST_FIELDS, Cycle
from scheduler.profile import Profile
from scheduler.queue import Need
from scheduler.verdicts import MAX_VERDICTS, NOT_READY, Shape, Verdict, Verdicts

MAX_SCORE = 100
#: Jobs whose shape is remembered (by job object): enough for every job a cycle is shown many
#: times over; past it the memo starts again, so a replay of millions of jobs does not keep them.
MAX_SHAPES = 16_384
CAPACITY = "NodeCapacity"


class Framework:
    """Runs a Profile's plugins at the fixed hooks. Policies never call each other."""

    def __init__(self, profile: Profile, *, explain: bool = True) -> None:
        self.profile = profile
        self.explains = explain
        self.verdicts = Verdicts()
        self._shapes: dict[int, tuple[Job, Hashable]] = {}
        self._interned: dict[Hashable, Hashable] = {}
        self._runtimes: dict[int, tuple[Job, float]] = {}
        self._views_key: Hashable = (None, None)  # what filters and scores last read of the snapshot's views
        self._sort = profile.sort
        self._admit = profile.admit
        self._prefilter = profile.prefilter
        self._filter = profile.filter
        self._postfilter = profile.postfilter
        self._score = profile.score
        self._provision = profile.provision
        self._reserve = profile.reserve
        declared = [getattr(p, "job_fields", None) for p in (*profile.filter, *(s for s, _ in profile.score))]
        self._shape_fields: tuple[str, ...] | None = (
            None if any(d is None for d in declared) else tuple(sorted(REQUEST_FIELDS.union(*filter(None, declared))))
        )

    def state(
        self, snapshot: ClusterSnapshot, *, now_s: float = 0.0, seed: int = 0, classes: NodeClasses | None = None
    ) -> CycleState:
        """A cycle's state over `snapshot`, on `classes` (a new index when None), synced to it.

        The index must number its classes as this Framework's verdicts do: an index of its
        own (`new_index`), kept from cycle to cycle, makes the next sync touch only what changed.
        """
        if classes is None:
            classes = self.new_index()
        elif classes.ids is not self.verdicts.ids:
            raise ValueError("the index numbers its classes apart from this Framework's verdicts")
        self.verdicts.trim()
        self._follow_views(snapshot)
        classes.sync(snapshot)
        return CycleState(snapshot, classes, now_s=now_s, seed=seed)

    def _follow_views(self, snapshot: ClusterSnapshot) -> None:
        """Forgets the verdicts when what filters and scores read of the snapshot's views (its
        governance and round views: each says what, `verdict_key`) has changed."""
        key = tuple(None if view is None else view.verdict_key for view in (snapshot.governance, snapshot.rounds))
        if key != self._views_key:
            self.verdicts.forget()
            self._views_key = key

    def new_index(self) -> NodeClasses:
        """An empty node-class index numbered as this Framework's verdicts are."""
        return NodeClasses(ids=self.verdicts.ids)

    # Queue hooks -------------------------------------------------------------------------

    def admit(self, cycle: Cycle, jobs: Sequence[Job]) -> tuple[list[Job], dict[str, Status]]:
        """Jobs every admit plugin lets through, in the order given, and the status of the others
        (WAIT: held; UNRESOLVABLE: denied). Plugins see the jobs in that order: admissions in
        one cycle add up (`cycle.memo`), so the order decides which of them one budget takes."""
        if not self._admit:
            return list(jobs), {}
        admitted: list[Job] = []
        waiting: dict[str, Status] = {}
        for job in jobs:
            status = self.admit_one(cycle, job)
            if status is OK:
                admitted.append(job)
            else:
                waiting[job.id] = status
        return admitted, waiting

    @property
    def admits(self) -> bool:
        """Whether the profile has admit plugins."""
        return bool(self._admit)

    def admit_one(self, cycle: Cycle, job: Job) -> Status:
        """OK when every admit plugin lets `job` through, else the first other answer."""
        for plugin in self._admit:  # a plain loop: every job waiting is asked, every cycle
            status = plugin.admit(cycle, job)
            if status.code is not Code.SUCCESS:
                return status.by(_name(plugin))
        return OK

    def order(self, cycle: Cycle, jobs: Sequence[Job]) -> list[Job]:
        """Jobs in the profile's queue order."""
        return sorted(jobs, key=lambda job: self.queue_key(cycle, job))

    def queue_key(self, cycle: Cycle, job: Job) -> tuple[object, ...]:
        """Where `job` stands in the queue: the sort plugin's key; submit time then id break ties."""
        return (self._sort.sort_key(cycle, job), job.submit_s, job.id)

    def prefilter(self, cycle: Cycle, job: Job) -> Status:
        if not self._prefilter:
            return OK
        return self._first_failure((plugin, plugin.prefilter(cycle, job)) for plugin in self._prefilter)

    @property
    def reserves(self) -> bool:
        """Whether the profile holds capacity for the first job that cannot start (a reserve plugin)."""
        return self._reserve is not None

    def runtime_s(self, cycle: Cycle, job: Job) -> float:
        """How long `job` runs once started, by the reserve plugin; math.inf without one.

        The answer depends on the job alone (the plugin contract), so it is remembered per job
        object: every cycle asks it for every running job.
        """
        if self._reserve is None:
            return math.inf
        known = self._runtimes.get(id(job))
        if known is not None and known[0] is job:
            return known[1]
        if len(self._runtimes) > MAX_VERDICTS:
            self._runtimes.clear()
        runtime_s = self._reserve.runtime_s(cycle, job)
        self._runtimes[id(job)] = (job, runtime_s)
        return runtime_s

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
        if len(self._shapes) > MAX_SHAPES:
            self._shapes.clear()
        if len(self._interned) > MAX_SHAPES:
            self._interned.clear()
        made = self.shape_of(job)
        shape = self._interned.setdefault(made, made)  # one object per shape: lookups end at `is`
        self._shapes[id(job)] = (job, shape)
        return shape

    def shape_of(self, job: Job) -> Hashable:
        """`shape`, worked out afresh and remembered nowhere: for a pass that sees each job once
        (`scheduler.feasibility`), where a memo per job object would only hold the jobs."""
        if self._shape_fields is None:
            return job
        return Shape(tuple(getattr(job, name) for name in self._shape_fields))

    def verdict(self, state: CycleState, job: Job, node_class: NodeClass) -> Verdict:
        """The class's verdict for the job, remembered or computed once."""
        shape = self.shape(job)
        if not node_class.ready:
            return NOT_READY
        closed = self.verdicts.closed.setdefault(shape, {}).get(node_class.pool)
        if closed is not None:
            return Verdict(closed)
        verdict = self.verdicts.by_class.setdefault(shape, {}).get(node_class.id)
        return verdict if verdict is not None else self._remember(state, job, shape, node_class)

    def _remember(self, state: CycleState, job: Job, shape: Hashable, node_class: NodeClass) -> Verdict:
        """Evaluates a class for a job shape once, and closes the pool on an UNRESOLVABLE answer."""
        verdict = self.verdicts.by_class.setdefault(shape, {})[node_class.id] = self._evaluate(
            state.cycle, job, state.classes.representative(node_class)
        )
        if verdict.status.code is Code.UNRESOLVABLE:
            self.verdicts.closed.setdefault(shape, {})[node_class.pool] = verdict.status
        return verdict

    def evaluate(self, cycle: Cycle, job: Job, node: Node) -> Verdict:
        """One replica of `job` on `node`: every filter, then the capacity, remembered nowhere
        (for nodes no cycle shows: `scheduler.feasibility` asks about new, empty ones)."""
        return self._evaluate(cycle, job, node)

    def _evaluate(self, cycle: Cycle, job: Job, node: Node) -> Verdict:
        status = OK
        for plugin in self._filter:
            answer = plugin.filter(cycle, job, node)
            if answer.code is Code.UNRESOLVABLE:
                # The most severe answer decides: a full node that also has the wrong GPU model is
                # unresolvable, as an empty one would be, so the pool closes the same way whatever
                # state its nodes are in.
                return Verdict(answer.by(_name(plugin)))
            if not answer.ok and status.ok:
                status = answer.by(_name(plugin))
        if not status.ok:
            return Verdict(status)
        grants = capacity.find_grants(cycle.pools[node.pool], node, job.request)
        if grants is None:
            return Verdict(Status(Code.UNSCHEDULABLE, (f"no free capacity for {job.request.describe()}",), CAPACITY))
        return Verdict(OK, tuple(plugin.score(cycle, job, node) for plugin, _ in self._score), node, grants)

    def best(self, state: CycleState, job: Job, shape: Hashable | None = None) -> NodeClass | None:
        """The feasible class with the highest weighted, normalised score, or None."""
        shape = self.shape(job) if shape is None else shape
        known = self.verdicts.by_class.setdefault(shape, {})
        closed = self.verdicts.closed.setdefault(shape, {})
        feasible: list[tuple[NodeClass, tuple[float, ...]]] = []
        for pool, by_key in state.classes.by_pool.items():
            if pool in closed:
                continue
            for node_class in by_key.values():
                if not node_class.ready:
                    continue
                verdict = known.get(node_class.id)  # the hit path stays inline: it runs for every class
                if verdict is None:
                    verdict = self._remember(state, job, shape, node_class)
                    if pool in closed:
                        break
                if verdict.scores is not None:
                    feasible.append((node_class, verdict.scores))
        if not feasible:
            return None
        if len(feasible) == 1 or not self._score:
            return min(feasible, key=lambda item: item[0].members[0])[0]
        totals = self.combine([scores for _, scores in feasible])
        top = max(totals)
        return min((c for (c, _), t in zip(feasible, totals, strict=True) if t == top), key=lambda c: c.members[0])

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

    def explain(self, state: CycleState, job: Job) -> tuple[ClassVerdict, ...]:
        """Why the job fits no class: per pool, one verdict per distinct status (classes merged)."""
        merged: dict[tuple[str, Status], tuple[int, list[str]]] = {}
        for node_class in sorted(state.classes.classes, key=lambda c: c.members[0]):
            status = self.verdict(state, job, node_class).status
            pool = state.cycle.pools[node_class.pool]
            nodes, free = merged.get((node_class.pool, status), (0, []))
            free.append(capacity.describe_free(pool, state.classes.representative(node_class)))
            merged[(node_class.pool, status)] = (nodes + len(node_class.members), free)
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

    def provision(self, state: CycleState, jobs: Sequence[Job]) -> dict[str, int]:
        """Nodes to add per pool for jobs that fit nowhere: the largest ask of any provision plugin.

        Plugins are told, per job, the pools that can still grow (fewer nodes than max_nodes)
        where a new, empty node would take one replica (every filter passes, the capacity is there).
        """
        if not self._provision:
            return {}
        fits: dict[str, tuple[str, ...]] = {}
        sizes = state.classes.pool_sizes()
        growable = [pool for pool in state.cycle.pools.values() if sizes.get(pool.name, 0) < pool.max_nodes]
        if not growable:  # no pool can take an answer: plugins are not asked (a full cluster's cycles stay cheap)
            return {}
        for job in jobs:
            fits[job.id] = tuple(pool.name for pool in growable if self.fits_new_node(state.cycle, job, pool))
        wanted: dict[str, int] = {}
        for plugin in self._provision:
            for pool_name, count in plugin.provision(state.cycle, jobs, fits).items():
                wanted[pool_name] = max(wanted.get(pool_name, 0), count)
        return wanted

    def fits_new_node(self, cycle: Cycle, job: Job, pool: Pool) -> bool:
        """Whether one replica of `job` would fit an empty node of `pool` (every filter, capacity)."""
        return self._new_node_status(cycle, job, pool).ok

    def _new_node_status(self, cycle: Cycle, job: Job, pool: Pool) -> Status:
        """An empty node of `pool`'s answer for one replica of `job`, remembered per shape and pool."""
        key = (self.shape(job), pool.name)
        known = self.verdicts.new_node.get(key)
        if known is None:
            known = self._evaluate(cycle, job, empty_node(pool, f"{pool.name}-new")).status
            self.verdicts.new_node[key] = known
        return known

    def need(self, cycle: Cycle, shape: Hashable, job: Job) -> Need:
        """What a job of `shape` (`job` is one) needs of free room, on the pools whose nodes might
        take it: those where an empty node is not UNRESOLVABLE for it (an answer that holds for
        every node of the pool, whatever its state: the plugin contract). Remembered per shape
        for as long as the pools stay the same."""
        verdicts = self.verdicts
        if verdicts.needs_of is not cycle.pools:
            verdicts.needs, verdicts.new_node, verdicts.needs_of = {}, {}, cycle.pools
        known = verdicts.needs.get(shape)
        if known is None:
            open_pools = [pool for pool in cycle.pools.values()
                          if self._new_node_status(cycle, job, pool).code is not Code.UNRESOLVABLE]  # fmt: skip
            known = verdicts.needs[shape] = Need.of(job, open_pools, len(cycle.pools))
        return known

    def filters_pass(self, cycle: Cycle, job: Job, node: Node) -> Status:
        """The filters' answer for one replica of `job` on `node`, capacity aside: the most severe."""
        status = OK
        for plugin in self._filter:
            answer = plugin.filter(cycle, job, node)
            if answer.code > status.code:
                status = answer.by(_name(plugin))
        return status

    @staticmethod
    def _first_failure(results: Iterable[tuple[object, Status]]) -> Status:
        for plugin, status in results:
            if not status.ok:
                return status.by(_name(plugin))
        return OK


def _name(plugin: object) -> str:
    return str(getattr(plugin, "name", type(plugin).__name__))
