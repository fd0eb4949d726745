"""The one port between the scheduling core and a world: observe, then enact.

`Scheduler` turns a snapshot and pending jobs into a Decision and knows nothing of where they
came from; the simulator and the Kubernetes extender each implement `World` (httpx's
one-method transport idea). `run_cycle` is the whole loop body.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from scheduler.decision import Decision, Pending
from scheduler.framework import Framework, NodeClasses, new_cycle
from scheduler.model import ClusterSnapshot, Job
from scheduler.placers import GreedyPlacer, Placer
from scheduler.profile import Profile


@dataclass(frozen=True, slots=True)
class Observation:
    """What a world shows the scheduler at one instant."""

    now_s: float
    snapshot: ClusterSnapshot
    pending: tuple[Job, ...]


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
    """Turns a snapshot and pending jobs into a Decision. Pure: same inputs, same output.

    It keeps its node index and the verdicts of earlier cycles, a memo of pure functions:
    each call brings the index to the snapshot it is given, so results never depend on what
    was scheduled before.
    """

    def __init__(self, profile: Profile, placer: Placer | None = None, *, explain: bool = True) -> None:
        self.profile = profile
        self.framework = Framework(profile, explain=explain)
        self.placer = placer or make_placer(profile)
        self._classes = NodeClasses()

    def shape(self, job: Job) -> Hashable:
        """What the placer tells jobs apart by: jobs of one shape fit exactly the same nodes."""
        return self.framework.shape(job)

    @property
    def shapes_are_interchangeable(self) -> bool:
        """Whether jobs of one shape are also alike for the queue hooks: no admit or postfilter
        plugin (which may read any field, or the cluster) and a queue order that does not change
        while a job waits. A world may then hold back jobs of a shape that cannot fit."""
        static_order = bool(getattr(self.profile.sort, "static", False))
        return static_order and not self.profile.admit and not self.profile.postfilter

    def schedule(
        self, snapshot: ClusterSnapshot, pending: Sequence[Job], *, now_s: float = 0.0, seed: int = 0
    ) -> Decision:
        """One cycle: admit, order, place; then ask provision plugins about jobs that fit nowhere."""
        cycle = new_cycle(snapshot, now_s, seed)
        self._classes.sync(snapshot)
        admitted, waiting = self.framework.admit(cycle, pending)
        queue = self.framework.order(cycle, admitted)
        decision = self.placer.place(self.framework, cycle, queue, self._classes)
        unplaced = [job for job in queue if job.id in decision.pending and decision.pending[job.id].fits_nowhere]
        provision = self.framework.provision(cycle, unplaced, self._classes) if unplaced else {}
        if waiting:
            decision = replace(decision, pending={**{i: Pending(i, s) for i, s in waiting.items()}, **decision.pending})
        return replace(decision, provision=provision) if provision else decision


def run_cycle(world: World, scheduler: Scheduler, seed: int = 0) -> Decision:
    """Observe the world, decide, enact; returns the decision."""
    observation = world.observe()
    decision = scheduler.schedule(observation.snapshot, observation.pending, now_s=observation.now_s, seed=seed)
    world.enact(decision)
    return decision
