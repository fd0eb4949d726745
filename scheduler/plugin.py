"""The plugin hooks, one question each, and `Cycle`, the scratch space of one scheduling cycle.

A plugin is a class deriving from `Plugin` that implements any of the hook methods below; the
`Framework` alone knows their order (admit, sort_key, prefilter, filter, postfilter, score and
normalize, provision; reserve when the placer holds capacity for a blocked job), as
kube-scheduler's runtime does. Plugins are pure: they read only
the job, the node and `cycle.snapshot`; their only randomness is `cycle.rng`; they keep no
state between calls beyond what `cycle.memo` holds for the current cycle.

The Framework evaluates filter and score once per node equivalence class: nodes of the same
pool whose GPUs are in the same state. A filter or score must therefore depend only on the
job, the node's pool and the node's GPU state, never on the node's name.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from scheduler.decision import Preemption, Status
from scheduler.model import ClusterSnapshot, Job, Node, Pool

T = TypeVar("T")

#: Job fields that identify what a job asks for; the Framework always keys its per-cycle
#: memo on these, plus whatever fields the profile's filter and score plugins declare.
REQUEST_FIELDS = frozenset({"request", "replicas", "gpu_models"})


class Plugin:
    """Base of policy plugins. Subclasses set `name`, and `Args` when they take arguments.

    `job_fields` names the Job fields that the plugin's filter and score read. Jobs equal
    in those fields (and in REQUEST_FIELDS) get the same answers on the same node class, so
    the Framework asks once per cycle. None means the plugin may read any field.
    `static` is for queue sort plugins (see QueueSortPlugin); `evicts_equal_priority` for
    postfilter plugins (see PostFilterPlugin).
    """

    name: ClassVar[str] = ""
    Args: ClassVar[type[Any] | None] = None
    job_fields: ClassVar[frozenset[str] | None] = None
    static: ClassVar[bool] = False
    evicts_equal_priority: ClassVar[bool] = False

    def __init__(self, args: Any = None) -> None:
        self.args = args

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args!r})" if self.args is not None else type(self).__name__


class _Fixed:
    """A snapshot that does not change (a cycle built outside a placer, e.g. in a plugin's test)."""

    __slots__ = ("snapshot",)

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.snapshot = snapshot


class _SnapshotSource(Protocol):
    @property
    def snapshot(self) -> ClusterSnapshot: ...


class Cycle:
    """What a plugin sees of one scheduling cycle (kube-scheduler's CycleState).

    `snapshot` is the cluster as the cycle has changed it so far (placements made earlier in
    the cycle included); `pools` never change within a cycle, nor does `governance` (the
    snapshot's guardrail view, `scheduler.governance`: what the guardrails read, every job).
    `unplaced` holds the jobs the placer could not place so far this cycle: an admit plugin that
    adds up what it admitted takes back a job found there (the greedy placer asks admission job
    by job, in queue order, and says before the next job whether the last one was placed). A placer's `CycleState`
    (`scheduler.cycle`) owns that snapshot; a plugin only reads it.
    """

    __slots__ = ("_memo", "_rng", "_seed", "_source", "governance", "now_s", "pools", "unplaced")

    def __init__(
        self, now_s: float, snapshot: ClusterSnapshot, rng: random.Random | None = None, seed: int = 0
    ) -> None:
        self.now_s = now_s
        self.pools = snapshot.pools
        self.governance = snapshot.governance
        self.unplaced: set[str] = set()
        self._source: _SnapshotSource = _Fixed(snapshot)
        self._rng = rng
        self._seed = seed
        self._memo: dict[Hashable, Any] = {}

    @classmethod
    def following(cls, source: _SnapshotSource, now_s: float, pools: Mapping[str, Pool], seed: int) -> Cycle:
        """A cycle whose snapshot is `source.snapshot`, read whenever a plugin asks."""
        cycle = cls.__new__(cls)
        cycle.now_s, cycle.pools, cycle._source = now_s, pools, source
        cycle.governance = source.snapshot.governance
        cycle.unplaced = set()
        cycle._rng, cycle._seed, cycle._memo = None, seed, {}
        return cycle

    @property
    def snapshot(self) -> ClusterSnapshot:
        return self._source.snapshot

    @property
    def rng(self) -> random.Random:
        """The only randomness a plugin may use, seeded by the cycle's seed (made when first asked)."""
        if self._rng is None:
            self._rng = random.Random(self._seed)
        return self._rng

    def pool_of(self, node: Node) -> Pool:
        """The pool of `node`."""
        return self.pools[node.pool]

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """compute(), cached under `key` until the cycle ends."""
        if key in self._memo:
            value: T = self._memo[key]
            return value
        value = compute()
        self._memo[key] = value
        return value


@runtime_checkable
class AdmitPlugin(Protocol):
    """Whether a job may be considered this cycle at all (quota, budget, approval, gang completeness).

    Returns OK; WAIT with the reason to keep the job queued untouched (held); or UNRESOLVABLE
    when it must never run (denied: a world drops it with the reason). Jobs are asked in queue
    order, and a plugin may add up what it admitted in `cycle.memo`, less the jobs then found
    in `cycle.unplaced`. The greedy placer asks each job just before placing it; a batch placer
    has the whole queue asked first, so there every admitted job counts.
    """

    def admit(self, cycle: Cycle, job: Job) -> Status: ...


@runtime_checkable
class QueueSortPlugin(Protocol):
    """The key that orders the queue; smaller goes first. Exactly one per profile.

    `static` declares that the key depends on the job alone and never changes while it waits
    (it ignores the cycle). The scheduler may then keep waiting jobs sorted between cycles and
    show a cycle only the jobs that could fit (`scheduler.queue`).
    """

    static: ClassVar[bool]

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]: ...


@runtime_checkable
class PreFilterPlugin(Protocol):
    """Checks a job once before any node; UNRESOLVABLE leaves it pending without filtering."""

    def prefilter(self, cycle: Cycle, job: Job) -> Status: ...


@runtime_checkable
class FilterPlugin(Protocol):
    """Whether one replica of `job` may run on `node`.

    OK; UNSCHEDULABLE when evicting jobs from the node could make room; UNRESOLVABLE when
    nothing on the node can change the answer (GPU model, MIG mode, capacity type). Pools are
    homogeneous, so an UNRESOLVABLE answer must hold for every node of the pool: the Framework
    asks no other node of that pool about the same job shape.
    """

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status: ...


@runtime_checkable
class PostFilterPlugin(Protocol):
    """Running jobs to evict so that `job`, which fits no node, might fit.

    `rejected` maps each node to the status that rejected it. The Framework re-checks that
    the job fits after the evictions before it accepts any of them. Victims have a lower
    priority than `job` (kube-scheduler's rule): a waiting queue relies on it to hold back
    jobs that cannot fit while none outranks a running job (`scheduler.queue`). A plugin that
    may evict jobs of equal priority (a fair-share reclaim) says so with `evicts_equal_priority`,
    and the queue then shows every cycle its whole length.
    """

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]: ...


@runtime_checkable
class ScorePlugin(Protocol):
    """How good `node` is for one replica of `job`, in the plugin's natural unit.

    The Framework normalises each plugin's scores to 0..100: linearly from `score_range` when
    the plugin gives one, else min-max over the feasible nodes (reversed when lower is better),
    then multiplies by the profile's weight and sums.
    """

    higher_is_better: ClassVar[bool]
    score_range: ClassVar[tuple[float, float] | None]

    def score(self, cycle: Cycle, job: Job, node: Node) -> float: ...


@runtime_checkable
class ProvisionPlugin(Protocol):
    """Which pools to grow, by how many nodes, for jobs that fit on no existing node.

    `fits` maps each job's id to the pools that can still grow (fewer nodes than max_nodes)
    where a new, empty node would take one of its replicas; when no pool can grow, the hook is
    not asked. The world caps the answer by each pool's max_nodes and the nodes already coming.
    """

    def provision(self, cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]]) -> Mapping[str, int]: ...


@runtime_checkable
class ReservePlugin(Protocol):
    """How long `job` holds its GPUs once started, in wall-clock seconds; math.inf when unknown.

    Naming a reserve plugin turns on EASY backfilling (`scheduler.backfill`): the first job in
    queue order that cannot start gets a reservation at the earliest time the running jobs'
    expected ends (start + this answer) leave room for it, and later jobs start now only if they
    do not delay it. The answer depends on the job alone (the Framework asks once per job, as
    for a static sort key); an answer too short can delay the reserved job, one too long only
    backfills less. At most one per profile.
    """

    def runtime_s(self, cycle: Cycle, job: Job) -> float: ...


HOOKS: Mapping[str, type] = {
    "admit": AdmitPlugin,
    "sort": QueueSortPlugin,
    "prefilter": PreFilterPlugin,
    "filter": FilterPlugin,
    "postfilter": PostFilterPlugin,
    "score": ScorePlugin,
    "provision": ProvisionPlugin,
    "reserve": ReservePlugin,
}
