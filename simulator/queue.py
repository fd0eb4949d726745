"""The simulator's waiting queue: which pending jobs a scheduling cycle gets to see.

A month of a busy cluster keeps thousands of jobs waiting, and the scheduler runs on every
arrival and completion, so handing it the whole queue each time would make a replay quadratic.
When the profile allows (`Scheduler.shapes_are_interchangeable`: no admit or postfilter
plugin, a queue order fixed at submission), jobs wait in buckets by *shape* (the jobs the
placer cannot tell apart), each bucket in queue order, and a cycle sees only as many jobs of a
shape as could possibly fit: the cluster's free capacity (plus what elastic pools could still
add, nodes still booting included) divided by what one job needs. Within a cycle capacity only
shrinks, and jobs of one shape fit exactly the same nodes, so the jobs held back could not have
been placed: the replay places jobs exactly as with the whole queue, in time proportional to
what it places. Provisioning can differ: held-back jobs do not ask for nodes, so on elastic
clusters pools may grow later or less (a gang too large for a pool even at max_nodes never asks
at all). Otherwise every waiting job is shown every cycle.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from scheduler.model import Job, RequestKind


@dataclass(slots=True)
class Capacity:
    """Free capacity in the units requests are made of, kept as histograms so bounds stay tight.

    `whole_by_node` counts nodes by how many whole GPUs they have free (a replica needs them on
    one node); `share_by_gpu` counts shareable GPUs by free milli-GPU; `mig_slices` totals the
    free compute slices of MIG pools.
    """

    whole_by_node: dict[int, int] = field(default_factory=dict)
    share_by_gpu: dict[int, int] = field(default_factory=dict)
    mig_slices: int = 0
    _replicas: dict[tuple[RequestKind, int], int] = field(default_factory=dict, repr=False, compare=False)

    def fits(self, job: Job, slices_per_instance: int) -> int:
        """An upper bound on how many jobs like `job` this capacity could take."""
        request = job.request
        if request.kind is RequestKind.MIG:
            return self.mig_slices // (max(1, slices_per_instance) * request.gpus) // job.replicas
        size = request.gpus if request.kind is RequestKind.WHOLE else request.milli
        replicas = self._replicas.get((request.kind, size))
        if replicas is None:  # many shapes share a size: count once per capacity
            histogram = self.whole_by_node if request.kind is RequestKind.WHOLE else self.share_by_gpu
            replicas = self._replicas[(request.kind, size)] = sum(n * (free // size) for free, n in histogram.items())
        return replicas // job.replicas

    def add(self, other: Capacity, times: int = 1) -> None:
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

    def merged(self, other: Capacity) -> Capacity:
        total = Capacity(dict(self.whole_by_node), dict(self.share_by_gpu), self.mig_slices)
        total.add(other)
        return total


@dataclass(slots=True)
class WaitingQueue:
    """Pending jobs, bucketed by shape and kept in queue order within each bucket."""

    shape_of: Callable[[Job], Hashable]
    order_of: Callable[[Job], tuple[Any, ...]]
    bucketed: bool
    _ids: dict[Hashable, int] = field(default_factory=dict)  # shape -> bucket number
    _buckets: list[list[tuple[tuple[Any, ...], int, Job]]] = field(default_factory=list)
    _nonempty: dict[int, None] = field(default_factory=dict)  # ordered, for deterministic cycles
    _fresh: dict[int, None] = field(default_factory=dict)
    _known: dict[int, tuple[Job, tuple[Any, ...], int]] = field(default_factory=dict)  # id -> job, key, bucket
    _count: int = 0
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
            known = self._known[id(job)] = (job, self.order_of(job), number)
        _, key, number = known
        self._sequence += 1
        heapq.heappush(self._buckets[number], (key, self._sequence, job))
        self._nonempty[number] = None
        self._count += 1
        if fresh:
            self._fresh[number] = None

    def take(self, limit: Callable[[Job], int], *, only_fresh: bool = False) -> list[Job]:
        """Removes and returns, per bucket, the first `limit(head job)` jobs (all when not bucketed).

        With `only_fresh` (capacity unchanged since the last take), only buckets that received
        new jobs since then are looked at: the others were just shown all that could fit.
        """
        taken: list[Job] = []
        numbers = list(self._fresh if only_fresh else self._nonempty)
        self._fresh.clear()
        for number in numbers:
            bucket = self._buckets[number]
            if not bucket:
                continue
            count = min(limit(bucket[0][2]) if self.bucketed else len(bucket), len(bucket))
            for _ in range(count):
                taken.append(heapq.heappop(bucket)[2])
            if not bucket:
                del self._nonempty[number]
        self._count -= len(taken)
        return taken
