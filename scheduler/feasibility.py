"""Which jobs a cluster can never run, and why: the survey before a replay, the reasons after.

A job can never run when no pool would take one of its replicas on a new, empty node (every
filter, then the capacity: what `Framework.fits_new_node` asks), or when its gang needs more
replicas than the whole cluster could hold with every pool at max_nodes (the replicas one
empty node takes, times max_nodes, summed over the pools that take one). The answer depends
only on the job's shape (`Framework.shape`), so it is worked out once per shape.

`survey` streams the jobs: it keeps counts and a few ids per reason, never the jobs, so it
can run over a trace of millions. `unfinished_reasons` says, after a replay, why each job it
left unfinished did not run: never, or the scheduler's explanation (`Scheduler.explain`)
against the cluster as the replay ended. Every reason names the pools with the status their
filters gave, in the words `fleetsched plan` prints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TypeVar

from scheduler.cluster import Cluster
from scheduler.decision import OK, Pending, Status
from scheduler.framework import Framework
from scheduler.model import Capacity, ClusterSnapshot, Job, JobKind, Pool, empty_node
from scheduler.placers import GreedyPlacer
from scheduler.plugin import Cycle
from scheduler.profile import Profile
from scheduler.world import Scheduler

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MAX_EXAMPLES = 5
"""Job ids kept per reason, to show a user where to look."""
MAX_SHAPES = 100_000
"""Shapes remembered; past this the memo starts again, so a trace of unique shapes stays bounded."""
#: Attempts a job is expected to need past which the survey says it may never finish: a job that
#: restarts from the start at every take-back needs e^(take-backs per hour x hours) on average
#: (20 hours at one take-back per node-hour: about 500 million).
MANY_ATTEMPTS = 100.0
RUNNING = "running when the replay ended"
WAITING = "waiting when the replay ended"


@dataclass(frozen=True, slots=True)
class Group:
    """Jobs that can never run for one reason: how many, and the ids of the first few."""

    reason: str
    count: int
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Survey:
    """What a survey found: how many jobs it saw, those that can never run by reason (most jobs
    first, then by reason), and those that can run but may never finish (`risky`, alike)."""

    jobs: int
    groups: tuple[Group, ...] = ()
    risky: tuple[Group, ...] = ()

    @property
    def unplaceable(self) -> int:
        """Jobs that can never run, all reasons together."""
        return sum(group.count for group in self.groups)


def pools_text(entries: Iterable[tuple[str, str]]) -> str:
    """(pool, what it says) pairs as `pool a: ...; pools b, c: ...`: pools that say the same merged.

    >>> pools_text([("a", "full"), ("b", "no nodes"), ("c", "full")])
    'pools a, c: full; pool b: no nodes'
    """
    merged: dict[str, list[str]] = {}
    for pool, text in entries:
        names = merged.setdefault(text, [])
        if pool not in names:
            names.append(pool)
    return "; ".join(f"pool{'s' if len(names) > 1 else ''} {', '.join(names)}: {text}"
                     for text, names in merged.items())


class Feasibility:
    """Whether a cluster with every pool at max_nodes could ever run a job, asked once per shape.

    It keeps a Framework of its own: its questions are about nodes no cycle shows.
    """

    def __init__(self, profile: Profile, pools: Mapping[str, Pool]) -> None:
        self.framework = Framework(profile)
        self.pools = pools
        self._cycle = Cycle(0.0, ClusterSnapshot(pools, MappingProxyType({})))
        self._known: dict[Hashable, str] = {}
        self._spot_only: dict[Hashable, tuple[float, str] | None] = {}
        self._new_nodes: dict[tuple[Hashable, str], tuple[Status, int]] = {}

    def shape(self, job: Job) -> Hashable:
        return self.framework.shape_of(job)

    def never(self, job: Job) -> str:
        """Why no pool of the cluster can ever run `job`; "" when one can."""
        return _remembered(self._known, self._shape_key(job), lambda: self._reason(job))

    def _shape_key(self, job: Job) -> Hashable | None:
        """What the memos key `job` by: its shape, or None when a plugin may read any field (every
        job is then a shape of its own, and a memo would hold them all)."""
        shape = self.framework.shape_of(job)
        return None if shape is job else shape

    def restarts(self, job: Job) -> str:
        """Why `job`, which some pool can run, may never finish: it keeps no checkpoint and only
        spot pools take it, so each take-back restarts it from the start, and it is long enough
        to need MANY_ATTEMPTS attempts or more on average; "" otherwise."""
        if job.checkpointable or job.kind is JobKind.SERVICE or job.duration_s <= 0:
            return ""
        return self._risk(job, _remembered(self._spot_only, self._shape_key(job), lambda: self._spot_rate(job)))

    @staticmethod
    def _risk(job: Job, spot: tuple[float, str] | None) -> str:
        if spot is None:
            return ""
        per_hour, pools = spot
        fastest = max((speed for _, speed in job.speedups), default=1.0)
        if per_hour * job.duration_s / max(1.0, fastest) / 3600 < math.log(MANY_ATTEMPTS):
            return ""
        return (f"keeps no checkpoint and only spot pools take it ({pools}): each take-back restarts it from "
                f"the start, and a job this long needs {MANY_ATTEMPTS:g} attempts or more on average")

    def _spot_rate(self, job: Job) -> tuple[float, str] | None:
        """The lowest take-back rate a run of `job` meets (per hour, over the nodes its gang spans)
        and the pools that take it, when only spot pools that take nodes back do; else None."""
        rates: list[float] = []
        entries: list[tuple[str, str]] = []
        for pool in self.pools.values():
            status, per_node = self._per_node(job, pool)
            if not status.ok:
                continue
            if pool.capacity is not Capacity.SPOT or pool.interruptions_per_node_hour <= 0:
                return None
            rates.append(pool.interruptions_per_node_hour * -(-job.replicas // per_node))
            entries.append((pool.name, f"takes nodes back {pool.interruptions_per_node_hour:g} times per node-hour"))
        return (min(rates), pools_text(entries)) if rates else None

    def _reason(self, job: Job) -> str:
        taken: dict[str, int] = {}
        entries: list[tuple[str, str]] = []
        for pool in self.pools.values():
            status, per_node = self._per_node(job, pool)
            if status.ok:
                taken[pool.name] = per_node
                nodes = f"{pool.max_nodes} node" + ("s" if pool.max_nodes != 1 else "")
                entries.append((pool.name, f"{per_node} per node x {nodes}"))
            else:
                entries.append((pool.name, str(status)))
        if not taken:
            return f"no pool takes a replica ({pools_text(entries)})"
        room = sum(per_node * self.pools[name].max_nodes for name, per_node in taken.items())
        if room >= job.replicas:
            return ""
        return (f"gang of {job.replicas} x {job.request.describe()}; the cluster at max_nodes "
                f"holds {room} ({pools_text(entries)})")

    def _per_node(self, job: Job, pool: Pool) -> tuple[Status, int]:
        """Whether a new node of `pool` takes one replica (its status when not) and how many it
        takes, up to the gang's size: each replica is granted before the next is asked about.
        Asked once per shape and pool (both `never` and `restarts` ask)."""
        shape = self._shape_key(job)
        key = None if shape is None else (shape, pool.name)
        return _remembered(self._new_nodes, key, lambda: self._ask_new_node(job, pool))

    def _ask_new_node(self, job: Job, pool: Pool) -> tuple[Status, int]:
        node = empty_node(pool, f"{pool.name}-new")
        verdict = self.framework.evaluate(self._cycle, job, node)
        if not verdict.status.ok:
            return verdict.status, 0
        count = 1
        while count < job.replicas:
            node = node.grant(pool, job, verdict.grants)
            verdict = self.framework.evaluate(self._cycle, job, node)
            if not verdict.status.ok:
                break
            count += 1
        return OK, count


def _remembered(memo: dict[K, V], key: K | None, compute: Callable[[], V]) -> V:
    """compute(), remembered in `memo` under `key` (None: not remembered); past MAX_SHAPES
    entries the memo starts again, so a trace of unique shapes stays bounded."""
    if key is None:
        return compute()
    if key not in memo:
        if len(memo) >= MAX_SHAPES:
            memo.clear()
        memo[key] = compute()
    return memo[key]


@dataclass(slots=True)
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, job_id: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(job_id)

    def groups(self) -> tuple[Group, ...]:
        order = sorted(self.counts, key=lambda reason: (-self.counts[reason], reason))
        return tuple(Group(r, self.counts[r], tuple(self.examples[r])) for r in order)


def survey(jobs: Iterable[Job], cluster: Cluster, profile: Profile) -> Survey:
    """The jobs of `jobs` that no pool of `cluster` can ever take under `profile`, by reason.

    `jobs` is read once, as it streams: nothing but counts and a few ids per reason is kept.
    """
    return surveys(jobs, cluster, [profile])[0]


def surveys(jobs: Iterable[Job], cluster: Cluster, profiles: Sequence[Profile]) -> tuple[Survey, ...]:
    """`survey` under each of `profiles` (their filters may differ), in one pass over `jobs`."""
    checks = [Feasibility(profile, cluster.pools) for profile in profiles]
    tallies = [(_Tally(), _Tally()) for _ in profiles]  # never, and may never finish
    seen = 0
    for job in jobs:
        seen += 1
        for check, (never, risky) in zip(checks, tallies, strict=True):
            reason = check.never(job)
            if reason:
                never.add(reason, job.id)
            elif risk := check.restarts(job):
                risky.add(risk, job.id)
    return tuple(Survey(seen, never.groups(), risky.groups()) for never, risky in tallies)


def waiting_reason(pending: Pending, snapshot: ClusterSnapshot) -> str:
    """Why a job waits on `snapshot`, from the scheduler's explanation: its gist, then per pool
    the statuses that turned it away (pools without nodes say so)."""
    if not pending.verdicts and snapshot.nodes:  # stopped before the filters (a prefilter)
        return f"{WAITING}: {pending.status}"
    with_nodes = {node.pool for node in snapshot.nodes.values()}
    entries: list[tuple[str, str]] = []
    for name in snapshot.pools:
        if name not in with_nodes:
            entries.append((name, "no nodes"))
        entries.extend((name, str(v.status)) for v in pending.verdicts if v.pool == name and not v.status.ok)
    details = pools_text(entries)
    return f"{WAITING}: {pending.status}" + (f" ({details})" if details else "")


def unfinished_reasons(profile: Profile, snapshot: ClusterSnapshot, jobs: Iterable[Job]) -> dict[str, str]:
    """Why each of `jobs`, left unfinished by a replay that ended on `snapshot`, did not run:
    the survey's reason when it never could, else the scheduler's explanation on `snapshot`.

    One explanation per job shape, unless a prefilter (which may read any field) is in the profile.
    """
    feasibility = Feasibility(profile, snapshot.pools)
    explainer = Scheduler(profile, GreedyPlacer(), explain=True)
    by_shape: dict[Hashable, str] = {}
    reasons: dict[str, str] = {}
    for job in jobs:
        if job.id in snapshot.running:
            reasons[job.id] = RUNNING
            continue
        key = job if profile.prefilter else feasibility.shape(job)
        reason = by_shape.get(key)
        if reason is None:
            reason = feasibility.never(job) or waiting_reason(explainer.explain(snapshot, job), snapshot)
            by_shape[key] = reason
        reasons[job.id] = reason
    return reasons


def count_by_reason(reasons: Mapping[str, str]) -> dict[str, int]:
    """How many jobs each reason holds, sorted by reason."""
    counts: dict[str, int] = {}
    for reason in reasons.values():
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))
