"""Placers decide how to search: the filters say which nodes are allowed, the scores how good.

`GreedyPlacer` is kube-scheduler's way: one job at a time in queue order, each replica on the
best-scoring feasible node equivalence class, a gang all or nothing. When a job fits nowhere
and some node rejected it as UNSCHEDULABLE, the profile's postfilter may name victims; the
placer accepts them only if the job then fits. With a reserve plugin in the profile it
backfills around the first job that cannot start (`scheduler.backfill`).

`scheduler.batch.placer.BatchPlacer` places the whole queue with one solve (CP-SAT),
warm-started from the greedy answer and falling back to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

from scheduler.backfill import Backfill, Remembered
from scheduler.cycle import CycleState
from scheduler.decision import OK, Code, Decision, Pending, Preemption, Status
from scheduler.framework import Framework
from scheduler.model import Job, Placement, ReplicaPlacement

GANG = "Gang"
RESERVED = "Reservation"


class Placer(Protocol):
    """Turns an ordered queue of admitted jobs into placements, preemptions and pending jobs
    (or, when it `admits_each`, of jobs it asks admission for itself as it places them)."""

    def place(self, framework: Framework, state: CycleState, queue: Sequence[Job]) -> Decision: ...


class GreedyPlacer:
    """Job by job in queue order; each replica to the best feasible class; gangs whole.

    A `trial` placer neither preempts nor explains: it is what a batch placer asks for a
    first answer to improve on. Any other asks admission job by job (`admits_each`), just
    before placing it, and marks each job it could not place in `cycle.unplaced`: so what one
    cycle admits adds up to what it placed, not to what it was shown.
    """

    name = "greedy"

    def __init__(self, *, trial: bool = False) -> None:
        self.trial = trial
        self.admits_each = not trial
        self.remembered = Remembered()  # the last reservation, reused while nothing it reads changed

    def place(self, framework: Framework, state: CycleState, queue: Sequence[Job]) -> Decision:
        """Places `queue` in order on `state`, which keeps every placement made.

        Capacity only shrinks while a cycle places jobs, so once a job fits nowhere, later jobs
        of the same shape fit nowhere either and share its explanation, until a preemption
        frees capacity. When the profile reserves (`scheduler.backfill`), the first job that
        cannot start gets a reservation and later jobs are placed around it, without preempting;
        then jobs of one shape are told apart by whether they would outlast the shadow time.
        """
        running_before = state.snapshot.running  # immutable: the jobs evictable this cycle
        placements: list[Placement] = []
        preemptions: list[Preemption] = []
        pending: dict[str, Pending] = {}
        failed: dict[Hashable, Pending] = {}
        backfill = None
        if framework.reserves and not self.trial:
            backfill = Backfill(framework, state, lambda job: self._place_gang(framework, state, job), self.remembered)
        admitting = self.admits_each and framework.admits
        unplaced = state.cycle.unplaced
        for job in queue:
            if admitting:
                status = framework.admit_one(state.cycle, job)
                if status is not OK:
                    pending[job.id] = Pending(job.id, status)
                    unplaced.add(job.id)
                    continue
            status = framework.prefilter(state.cycle, job)
            if not status.ok:
                pending[job.id] = Pending(job.id, status)
                unplaced.add(job.id)
                continue
            shape = framework.shape(job)
            # None until a reservation is held; then whether the job would outlast its shadow time
            past = backfill.runs_past(job) if backfill is not None and backfill.reservation is not None else None
            key: Hashable = shape if past is None else (shape, past)
            first = failed.get(shape) or failed.get(key)
            if first is not None:
                pending[job.id] = Pending(job.id, first.status, first.verdicts, first.fits_nowhere)
                unplaced.add(job.id)
                continue
            if backfill is not None and past is not None:
                placed: Placement | Pending = self._behind(framework, state, job, backfill, past=past)
            else:
                placed = self._first_try(framework, state, job, shape, running_before, preemptions, failed)
            if isinstance(placed, Pending):
                pending[job.id] = failed[key] = placed
                unplaced.add(job.id)
                if backfill is not None and past is None:
                    backfill.hold(job, shape)
                continue
            placements.append(placed)
        reservation = backfill.reservation if backfill is not None else None
        return Decision(placements=tuple(placements), preemptions=tuple(preemptions), pending=pending,
                        reservation=reservation)  # fmt: skip

    def _first_try(
        self,
        framework: Framework,
        state: CycleState,
        job: Job,
        shape: Hashable,
        running_before: Mapping[str, object],
        preemptions: list[Preemption],
        failed: dict[Hashable, Pending],
    ) -> Placement | Pending:
        """The job placed, by evicting what the postfilter names if it must; why not, when it fits nowhere."""
        placement = self._place_gang(framework, state, job, shape)
        if placement is None and self.trial:
            return Pending(job.id, Status.unschedulable("no node fits"), fits_nowhere=True)
        if placement is None:
            victims, placement = self._preempt(framework, state, job, running_before)
            if placement is not None:
                preemptions.extend(victims)
                failed.clear()
        return placement if placement is not None else pending_for(framework, state, job)

    @staticmethod
    def _behind(
        framework: Framework, state: CycleState, job: Job, backfill: Backfill, *, past: bool
    ) -> Placement | Pending:
        """A job after the reserved one: placed anywhere when it ends by the shadow time (`past`
        false), else only on GPUs the reservation leaves free; why not, when it cannot be."""
        placement = backfill.around(job) if past else backfill.place(job)
        if placement is not None:
            return placement
        reservation = backfill.reservation
        if past and reservation is not None and backfill.fits_unreserved(job):
            reason = f"would delay {reservation.job}, which holds the GPUs it fits on from {reservation.start_s:g} s"
            return Pending(job.id, Status.wait(reason).by(RESERVED), fits_nowhere=True)
        return pending_for(framework, state, job)

    @staticmethod
    def _place_gang(
        framework: Framework, state: CycleState, job: Job, shape: Hashable | None = None
    ) -> Placement | None:
        """Places every replica or none: a gang that does not fit whole leaves the state as it was."""
        if job.replicas == 1:  # nothing to undo when the one replica finds no place
            replica = GreedyPlacer._place_replica(framework, state, job, shape)
            if replica is None:
                return None
            placement = Placement(job, (replica,))
            state.settle(placement)
            return placement
        with state.trial() as trial:
            replicas: list[ReplicaPlacement] = []
            for _ in range(job.replicas):
                replica = GreedyPlacer._place_replica(framework, state, job, shape)
                if replica is None:
                    return None
                replicas.append(replica)
            placement = Placement(job, tuple(replicas))
            state.settle(placement)
            trial.keep()
            return placement

    @staticmethod
    def _place_replica(
        framework: Framework, state: CycleState, job: Job, shape: Hashable | None
    ) -> ReplicaPlacement | None:
        """One replica on the best class's first node, taken in the state; None when none fits."""
        node_class = framework.best(state, job, shape)
        if node_class is None:
            return None
        node = state.classes.representative(node_class)
        grants = framework.verdict(state, job, node_class).grants_on(state.pool_of(node), node, job.request)
        if grants is None:  # pragma: no cover - the class verdict already found grants
            raise AssertionError(f"class verdict and allocator disagree on {node.name}")
        state.take(job, node, grants)
        return ReplicaPlacement(node.name, grants)

    def _preempt(
        self, framework: Framework, state: CycleState, job: Job, evictable: Mapping[str, object]
    ) -> tuple[list[Preemption], Placement | None]:
        """Victims from the postfilter and the job placed once they are gone; nothing is kept
        unless the job then fits.

        Only jobs running before this cycle (`evictable`) can be victims: evicting a job the
        same decision places would make no sense.
        """
        if not framework.profile.postfilter:
            return [], None
        node_classes = state.classes.classes
        statuses = {c.id: framework.verdict(state, job, c).status for c in node_classes}
        if not any(status.code is Code.UNSCHEDULABLE for status in statuses.values()):
            return [], None
        rejected = {name: statuses[c.id] for c in node_classes for name in c.members}
        victims = [v for v in framework.postfilter(state.cycle, job, rejected) if v.job in evictable]
        if not victims:
            return [], None
        with state.trial() as trial:
            for victim in victims:
                state.release(victim.job)
            placement = self._place_gang(framework, state, job)
            if placement is None:
                return [], None
            trial.keep()
            return victims, placement


def pending_for(framework: Framework, state: CycleState, job: Job) -> Pending:
    """Why `job` fits no node of `state`: per class, when the Framework explains, and the gist."""
    if framework.explains:
        verdicts = framework.explain(state, job)
        statuses = [(v.status, v.nodes) for v in verdicts]
    else:
        verdicts = ()
        statuses = [(framework.verdict(state, job, c).status, len(c.members)) for c in state.classes.classes]
    if any(status.ok for status, _ in statuses):
        fits = sum(nodes for status, nodes in statuses if status.ok)
        at_once = "fewer" if not framework.explains else str(_replicas_at_once(framework, state, job))
        nodes = "1 node fits" if framework.explains and fits == 1 else f"{fits} nodes fit"  # a replay keeps its words
        status = Status.unschedulable(f"gang of {job.replicas} replicas; {at_once} fit at once ({nodes} one)")
        return Pending(job.id, status.by(GANG), verdicts, fits_nowhere=True)
    codes = {status.code for status, _ in statuses}
    code = Code.UNSCHEDULABLE if Code.UNSCHEDULABLE in codes else Code.UNRESOLVABLE
    reason = "no node fits" if statuses else "the cluster has no nodes"
    return Pending(job.id, Status(code, (reason,)), verdicts, fits_nowhere=True)


def _replicas_at_once(framework: Framework, state: CycleState, job: Job) -> int:
    """How many replicas of the gang `job` fit together now: placed one by one in a trial that is
    undone (a node may take several, so counting nodes that take one says too little)."""
    placed = 0
    with state.trial():
        while placed < job.replicas and GreedyPlacer._place_replica(framework, state, job, None) is not None:
            placed += 1
    return placed
