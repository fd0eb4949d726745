"""The one port between the scheduling core and a world: observe, decide, enact.

`Scheduler` turns what a world shows into a Decision and knows nothing of where it came from;
the simulator (`simulator.world.SimWorld`) and the Kubernetes extender
(`extender.world.ExtenderWorld`, `PodWorld`) each implement `World` (httpx's one-method
transport idea), and `run_cycle` is the whole loop body in both: neither world makes a
decision any other way. `Scheduler.schedule` answers a what-if over a list of jobs outside any
world (the `plan` verb, benchmarks, tests).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol

from scheduler import queue as bound
from scheduler.capacity import Room
from scheduler.classes import NodeClasses
from scheduler.cycle import CycleState
from scheduler.decision import Decision, Pending, Status
from scheduler.framework import Framework
from scheduler.model import ClusterSnapshot, Job
from scheduler.placers import GreedyPlacer, Placer, pending_for
from scheduler.plugin import Cycle
from scheduler.profile import Profile
from scheduler.queue import LastTake, WaitingQueue

EMPTY = ClusterSnapshot(MappingProxyType({}), MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Observation:
    """What a world shows the scheduler at one instant: the time, the cluster, the jobs waiting
    (a queue the world keeps and the scheduler takes from) and, per pool, the nodes on their
    way (asked for, not ready yet)."""

    now_s: float
    snapshot: ClusterSnapshot
    queue: WaitingQueue
    coming: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


class World(Protocol):
    """Where a Scheduler's inputs come from and where its Decisions take effect."""

    def observe(self) -> Observation: ...

    def enact(self, decision: Decision) -> None: ...


def make_placer(profile: Profile) -> Placer:
    """The placer a profile names (the profile loader has checked the name).

    CP-SAT is imported only when a profile asks for it: OR-Tools takes a while to load.
    """
    if profile.placer == "cpsat":
        from scheduler.batch.solve import CpSatPlacer

        return CpSatPlacer()
    return GreedyPlacer()


class Scheduler:
    """Turns a snapshot and waiting jobs into a Decision: the same inputs give the same one.

    It keeps caches that never change an answer: the Framework's verdicts, and the node-class
    index of the last cluster it saw, so that the next cycle's sync touches only the nodes
    that changed. A call from a second thread while one runs works on an index of its own.
    """

    def __init__(self, profile: Profile, placer: Placer | None = None, *, explain: bool = True) -> None:
        self.profile = profile
        self.framework = Framework(profile, explain=explain)
        self.placer = placer or make_placer(profile)
        self._indexes: list[NodeClasses] = []  # free ones: list.pop and append are atomic
        self._static = Cycle(0.0, EMPTY)  # what a static queue order is asked with (it reads none of it)

    def shape(self, job: Job) -> Hashable:
        """What the placer tells jobs apart by: jobs of one shape fit exactly the same nodes."""
        return self.framework.shape(job)

    @property
    def shapes_are_interchangeable(self) -> bool:
        """Whether jobs of one shape are also alike for the queue hooks: no admit plugin (which
        may read any field, or the cluster), a static queue order, no postfilter that evicts
        jobs of equal priority (`FairShareReclaim`), and the greedy placer: a batch placer
        chooses which jobs to place across shapes, so a job it is not shown can change what it
        picks (a 4-GPU job placed instead of a 5-GPU one). A queue may then hold
        back jobs of a shape that cannot fit (`scheduler.queue`; with a postfilter, only while
        no waiting job outranks a running one)."""
        return (
            self.profile.sort.static and not self.profile.admit and self.profile.placer == "greedy"
            and not any(getattr(plugin, "evicts_equal_priority", False) for plugin in self.profile.postfilter)
        )  # fmt: skip

    def queue(self, jobs: Iterable[Job] = ()) -> WaitingQueue:
        """A waiting queue for a world to keep, ordered and bucketed as this profile allows, holding `jobs`."""
        if self.shapes_are_interchangeable:
            static, framework = self._static, self.framework
            made = WaitingQueue(self.shape, lambda job: framework.queue_key(static, job), bucketed=True)
        else:  # the cycle orders what it is shown
            made = WaitingQueue(self.shape, lambda job: (job.submit_s, job.id), bucketed=False)
        for job in jobs:
            made.add(job)
        return made

    def _borrow(self) -> NodeClasses:
        """An index to work on: the one kept from the last cycle, unless another call has it."""
        try:
            return self._indexes.pop()
        except IndexError:
            return self.framework.new_index()

    def schedule(
        self, snapshot: ClusterSnapshot, pending: Sequence[Job], *, now_s: float = 0.0, seed: int = 0
    ) -> Decision:
        """One cycle over exactly `pending`: admit, order, place; then ask provision plugins
        about jobs that fit nowhere."""
        classes = self._borrow()
        try:
            return self._cycle(self.framework.state(snapshot, now_s=now_s, seed=seed, classes=classes), pending)
        finally:
            self._indexes.append(classes)

    def decide(self, observation: Observation, seed: int = 0) -> Decision:
        """One cycle over what `observation`'s queue shows (`scheduler.queue`); the jobs it shows
        and does not place go back to the queue. An empty queue, or one that shows nothing,
        gives an empty decision and leaves everything as it was. Jobs held back are not in the
        decision: `explain` says why one waits."""
        waiting = observation.queue
        if not len(waiting):
            return Decision()
        classes = self._borrow()
        try:
            classes.sync(observation.snapshot)  # what the queue's bound reads
            shown = self._shown(observation, classes)
            if not shown:
                return Decision()
            state = self.framework.state(observation.snapshot, now_s=observation.now_s, seed=seed, classes=classes)
            decision = self._cycle(state, shown)
            placed = frozenset(p.job.id for p in decision.placements)
            for placement in decision.placements:
                waiting.forget(placement.job)
            for job in shown:
                if job.id not in placed:
                    waiting.add(job, fresh=False)
            if waiting.last is not None:
                waiting.last.placed = len(placed)
            return decision
        finally:
            self._indexes.append(classes)

    def _shown(self, observation: Observation, classes: NodeClasses) -> list[Job]:
        """The jobs of the observation's queue that this cycle is shown (`classes` synced to it).

        A profile that reserves (`scheduler.backfill`) is shown one job more per shape than
        could fit, in every bucket every cycle: so the first job in queue order that cannot
        start is always shown and gets the reservation it would get with the whole queue.
        """
        waiting, pools = observation.queue, observation.snapshot.pools
        sizes = classes.pool_sizes()
        growth_key = (tuple(sizes.items()), tuple(observation.coming.items()))
        last = waiting.last
        same_growth = last is not None and last.growth_key == growth_key
        if last is not None and same_growth:
            extra, extra_total = last.growth, last.growth_total
        else:
            extra, extra_total = bound.growth(sizes, observation.coming, pools), Room()
            for room in extra.values():
                extra_total.add(room)
        running = len(observation.snapshot.running)
        waiting.last = LastTake(running, classes.became_ready, growth_key, extra, extra_total)
        if not waiting.bucketed or self._may_preempt(observation):
            return waiting.take(None)
        # Buckets untouched since the last take were shown all that could fit, unless capacity
        # grew since; with room to grow every bucket is shown, so provisioning sees them all.
        reserving = self.framework.reserves
        fresh_only = (
            not reserving and last is not None and same_growth and not extra
            and not last.capacity_grew(running, classes.became_ready)
        )  # fmt: skip
        rooms = classes.free_rooms()
        total = classes.total_room
        framework = self.framework
        needs = framework.verdicts.needs if framework.verdicts.needs_of is pools else {}

        def limit(shape: Hashable, job: Job) -> int:
            need = needs.get(shape)
            if need is None:  # a shape not seen with these pools: its open pools are asked now
                need = framework.need(Cycle(observation.now_s, observation.snapshot), shape, job)
            return need.placeable(rooms, extra, total, extra_total) + reserving

        return waiting.take(limit, only_fresh=fresh_only)

    def _may_preempt(self, observation: Observation) -> bool:
        """Whether a postfilter might evict this cycle: a waiting job outranks a running one."""
        if not self.profile.postfilter or not observation.snapshot.running:
            return False
        highest = observation.queue.highest_priority()
        running = observation.snapshot.running.values()
        return highest is not None and highest > min(r.placement.job.priority for r in running)

    def _cycle(self, state: CycleState, pending: Sequence[Job]) -> Decision:
        cycle = state.cycle
        ordered = self.framework.order(cycle, pending)
        waiting: dict[str, Status]
        if getattr(self.placer, "admits_each", False):  # it asks admission job by job as it places
            queue, waiting = ordered, {}
        else:
            queue, waiting = self.framework.admit(cycle, ordered)
        decision = self.placer.place(self.framework, state, queue)
        unplaced = [job for job in queue if job.id in decision.pending and decision.pending[job.id].fits_nowhere]
        provision = self.framework.provision(state, unplaced) if unplaced else {}
        if waiting:
            decision = replace(decision, pending={**{i: Pending(i, s) for i, s in waiting.items()}, **decision.pending})
        return replace(decision, provision=provision) if provision else decision

    def explain(self, snapshot: ClusterSnapshot, job: Job, *, now_s: float = 0.0) -> Pending:
        """Why `job` would not fit `snapshot` now, per node class: for a job a queue held back
        (it was not shown, so no decision speaks of it) when someone asks."""
        classes = self._borrow()
        try:
            state = self.framework.state(snapshot, now_s=now_s, classes=classes)
            status = self.framework.prefilter(state.cycle, job)
            return Pending(job.id, status) if not status.ok else pending_for(self.framework, state, job)
        finally:
            self._indexes.append(classes)


def run_cycle(world: World, scheduler: Scheduler, seed: int = 0) -> Decision:
    """Observe the world, decide, enact; returns the decision."""
    decision = scheduler.decide(world.observe(), seed)
    world.enact(decision)
    return decision
