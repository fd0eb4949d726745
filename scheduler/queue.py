"""The waiting queue a world keeps for the scheduler, and the bound on what one cycle is shown.

A month of a busy cluster keeps thousands of jobs waiting, and a world runs a cycle on every
arrival and completion, so handing each cycle the whole queue would make a replay quadratic.
When the profile allows it (`Scheduler.shapes_are_interchangeable`: no admit plugin, and a
queue order fixed at submission, `QueueSortPlugin.static`), jobs wait in
buckets by *shape* (the jobs the placer cannot tell apart), each bucket in queue order, and a
cycle is shown only as many jobs of a shape as could possibly fit: the cluster's free
capacity (plus what elastic pools could still add, nodes on their way included) divided by
what one job needs. Within a cycle capacity only shrinks, and jobs of one shape fit exactly
the same nodes, so the jobs held back could not have been placed: a cycle places exactly what
it would have placed with the whole queue, in time proportional to what it is shown.
Provisioning can differ: held-back jobs do not ask for nodes, so elastic pools may grow later
or less (a gang too large for a pool even at max_nodes never asks at all). Otherwise every
waiting job is shown every cycle.

Preemption frees capacity the bound does not count. A postfilter evicts only jobs of lower
priority than the one it places (its contract, kube-scheduler's rule), so while no waiting
job outranks a running one the bound holds; a cycle in which one does is shown every
waiting job (the capacity its evictions free may take others too).

A bucket that was shown all that could fit, and to which no job came since, is not looked at
again until capacity grows (a job stopped running, or a node became ready) or the pools'
room to grow changes (`LastTake`).

`WaitingQueue` is the data structure; `Scheduler.decide` (`scheduler.world`) takes from it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from scheduler.capacity import Room, node_room
from scheduler.model import Job, Pool, RequestKind, empty_node


@lru_cache(maxsize=256)
def _new_node_room(pool: Pool) -> Room:
    return node_room(pool, empty_node(pool, "new"))


def growth(sizes: Mapping[str, int], coming: Mapping[str, int], pools: Mapping[str, Pool]) -> dict[str, Room]:
    """Per pool, what it could still add: up to max_nodes, counting the nodes on their way,
    whose jobs a cycle must be shown too (they will take them)."""
    rooms: dict[str, Room] = {}
    for pool in pools.values():
        more = pool.max_nodes - sizes.get(pool.name, 0) + coming.get(pool.name, 0)
        if more > 0:
            room = rooms[pool.name] = Room()
            room.add(_new_node_room(pool), more)
    return rooms


def instance_slices(job: Job, pool: Pool) -> int:
    """Compute slices of one MIG instance of `job`'s profile on `pool` (0 when it offers none)."""
    geometry = pool.gpu.mig
    known = geometry.profiles.get(job.request.mig_profile) if geometry is not None else None
    return known.compute_slices if known is not None else 0


@dataclass(frozen=True, slots=True)
class Need:
    """What one job of a shape needs of a room, per pool that might take it: the request's kind
    and size in the room's units (GPUs, milli-GPU, or MIG compute slices of one replica)."""

    replicas: int
    per_pool: tuple[tuple[str, RequestKind, int], ...]
    everywhere: tuple[RequestKind, int] | None = None  # the one kind and size, when every pool is open alike

    @classmethod
    def of(cls, job: Job, pools: Sequence[Pool], every: int) -> Need:
        """`job`'s need on `pools` (those that might take it, of `every` pools)."""
        request, entries = job.request, []
        for pool in pools:
            if request.kind is RequestKind.MIG:
                slices = instance_slices(job, pool)
                if slices:
                    entries.append((pool.name, RequestKind.MIG, slices * request.gpus))
            else:
                size = request.gpus if request.kind is RequestKind.WHOLE else request.milli
                entries.append((pool.name, request.kind, size))
        alike = {(kind, size) for _, kind, size in entries}
        everywhere = next(iter(alike)) if len(entries) == every and len(alike) == 1 else None
        return cls(job.replicas, tuple(entries), everywhere)

    def placeable(self, rooms: Mapping[str, Room], growth: Mapping[str, Room], total: Room, total_growth: Room) -> int:
        """How many jobs of the shape the free `rooms` and `growth` (per pool; `total` and
        `total_growth`: all pools together) could take at most."""
        if self.everywhere is not None:  # the common case: one sum over every pool
            kind, size = self.everywhere
            return (total.count(kind, size) + total_growth.count(kind, size)) // self.replicas
        replicas = 0
        for pool, kind, size in self.per_pool:
            for by_pool in (rooms, growth):
                room = by_pool.get(pool)
                if room is not None:
                    replicas += room.count(kind, size)
        return replicas // self.replicas


@dataclass(slots=True)
class LastTake:
    """What the queue's last take saw: jobs running, nodes that had become ready (a count that
    only grows), the pools' room to grow and what it came to, and how many jobs its cycle placed."""

    running: int
    became_ready: int
    growth_key: tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...]]  # nodes, and nodes coming, per pool
    growth: Mapping[str, Room]
    growth_total: Room
    placed: int = 0

    def capacity_grew(self, running: int, became_ready: int) -> bool:
        """Whether a job stopped running or a node became ready since. Between two takes jobs
        start only as the cycle between them placed them, so fewer running than before plus
        those means some stopped; capacity can only have shrunk otherwise (placements take it,
        nodes leave or get a take-back notice)."""
        return running < self.running + self.placed or became_ready != self.became_ready


@dataclass(slots=True)
class WaitingQueue:
    """Pending jobs, bucketed by shape and kept in queue order within each bucket.

    Made by `Scheduler.queue()`, which knows the profile's shapes and order. A world adds the
    jobs that arrive and the jobs it stops; a cycle takes what it is shown and puts back what
    it did not place.
    """

    shape_of: Callable[[Job], Hashable]
    order_of: Callable[[Job], tuple[Any, ...]]
    bucketed: bool
    last: LastTake | None = None
    _ids: dict[Hashable, int] = field(default_factory=dict)  # shape -> bucket number
    _buckets: list[list[tuple[tuple[Any, ...], int, Job]]] = field(default_factory=list)
    _shapes: list[Hashable] = field(default_factory=list)  # bucket number -> shape
    _nonempty: dict[int, None] = field(default_factory=dict)  # ordered, for deterministic cycles
    _fresh: dict[int, None] = field(default_factory=dict)
    _known: dict[int, tuple[Job, tuple[Any, ...], int]] = field(default_factory=dict)  # id -> job, key, bucket
    _count: int = 0
    _priorities: dict[int, int] = field(default_factory=dict)  # priority -> jobs waiting with it
    _sequence: int = 0

    def __len__(self) -> int:
        return self._count

    def add(self, job: Job, *, fresh: bool = True) -> None:
        """Queues `job`; `fresh` unless it comes back from a cycle that could not place it."""
        known = self._known.get(id(job))
        if known is None or known[0] is not job:  # a job's key and bucket are worked out once
            shape = self.shape_of(job) if self.bucketed else None
            number = self._ids.get(shape)
            if number is None:
                number = self._ids[shape] = len(self._buckets)
                self._buckets.append([])
                self._shapes.append(shape)
            known = self._known[id(job)] = (job, self.order_of(job), number)
        _, key, number = known
        self._sequence += 1
        heapq.heappush(self._buckets[number], (key, self._sequence, job))
        self._nonempty[number] = None
        self._count += 1
        self._priorities[job.priority] = self._priorities.get(job.priority, 0) + 1
        if fresh:
            self._fresh[number] = None

    def forget(self, job: Job) -> None:
        """Drops what the queue worked out about `job`, which left it for good (it was placed):
        a long replay must not keep every job it ever queued."""
        known = self._known.get(id(job))
        if known is not None and known[0] is job:
            del self._known[id(job)]

    def jobs(self) -> Iterator[Job]:
        """The waiting jobs, bucket by bucket, none taken (for a world's guardrail view)."""
        for number in self._nonempty:
            for _, _, job in self._buckets[number]:
                yield job

    def remove(self, job: Job) -> None:
        """Takes `job` out for good (a guardrail denied it): rare, so a linear pass."""
        for number in list(self._nonempty):
            bucket = self._buckets[number]
            kept = [entry for entry in bucket if entry[2] is not job]
            if len(kept) == len(bucket):
                continue
            heapq.heapify(kept)
            self._buckets[number] = kept
            self._count -= 1
            left = self._priorities[job.priority] - 1
            if left:
                self._priorities[job.priority] = left
            else:
                del self._priorities[job.priority]
            if not kept:
                del self._nonempty[number]
            self.forget(job)
            return

    def take(self, limit: Callable[[Hashable, Job], int] | None, *, only_fresh: bool = False) -> list[Job]:
        """Removes and returns, per bucket, the first `limit(shape, head job)` jobs (all when `limit` is
        None or nothing is bucketed).

        With `only_fresh`, only buckets that received new jobs since the last take are looked at.
        """
        taken: list[Job] = []
        numbers = list(self._fresh if only_fresh else self._nonempty)
        self._fresh.clear()
        for number in numbers:
            bucket = self._buckets[number]
            if not bucket:
                continue
            count = len(bucket)
            if limit is not None and self.bucketed:
                count = min(limit(self._shapes[number], bucket[0][2]), count)
            for _ in range(count):
                taken.append(heapq.heappop(bucket)[2])
            if not bucket:
                del self._nonempty[number]
        self._count -= len(taken)
        priorities = self._priorities
        for job in taken:
            left = priorities[job.priority] - 1
            if left:
                priorities[job.priority] = left
            else:
                del priorities[job.priority]
        return taken

    def highest_priority(self) -> int | None:
        """The highest priority of a waiting job (None when none waits)."""
        return max(self._priorities, default=None)
