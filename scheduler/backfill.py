"""EASY backfilling: a reservation for the first job that cannot start, and placements that keep it.

Slurm's backfill scheduler and most HPC schedulers work this way (EASY, the "aggressive"
backfilling). Jobs are placed in queue order. The first job that cannot start now gets a
*reservation*: the earliest time (the *shadow time*) at which the running jobs' expected ends
leave room for it, and the GPUs it would take then. A later job may start now only if it does
not delay that reservation: it is expected to end by the shadow time, or it takes none of the
reserved GPUs (it runs on the capacity free at the shadow time beyond what the reserved job
needs). Only one job holds a reservation in a cycle, and reservations are made anew each
cycle from the cluster as it is.

Run times come from the profile's reserve plugin (`ReservePlugin.runtime_s`). A running job is
expected to end at its start plus that answer, and at once when it is past it. A job without
an estimate (math.inf) never ends: it never makes room for a reservation, and it never
backfills onto reserved GPUs.

How the shadow time is found (`reserve`): in a trial on the cycle's state (jobs placed earlier
in the cycle count as running, started now), the running jobs are released in order of
expected end, one group of equal ends at a time. After each group the job is placed as the
placer would place it now, every filter included (GPU model, capacity type), and the first end
after which it fits is the shadow time. A job that fits nowhere even when every job with a
known end has ended cannot be delayed, so it gets no reservation; the next job that cannot
start may get one.

A later job that would still run at the shadow time is placed while a stand-in holds the
reserved GPUs that are free now, so the placer looks elsewhere (`Backfill.around`). A reserved
GPU that is partly used (a share, MIG instances) cannot be held whole, so a placement that
touches one is refused afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from scheduler.cycle import CycleState
from scheduler.decision import Reservation
from scheduler.framework import Framework
from scheduler.model import Grant, Job, MigMode, Node, Placement, RequestKind

#: How a placer places one job on the state as it stands: every replica or none.
Place = Callable[[Job], Placement | None]

#: What holds the free reserved GPUs while a job that would outlast the shadow time is placed.
STAND_IN = Job(id="<reserved>")


def expected_ends(framework: Framework, state: CycleState) -> list[tuple[float, str]]:
    """(expected end, job id) of every running job with a known run time, soonest first.

    A job is expected to end at its start plus its run time, or now when that has passed.
    """
    cycle = state.cycle
    ends: list[tuple[float, str]] = []
    for job_id, running in state.snapshot.running.items():
        end_s = running.start_s + framework.runtime_s(cycle, running.placement.job)
        if end_s < math.inf:
            ends.append((max(end_s, cycle.now_s), job_id))
    ends.sort()
    return ends


def reserve(framework: Framework, state: CycleState, job: Job, place: Place) -> Reservation | None:
    """The reservation for `job`, which cannot start now: when it can start as the running jobs
    end, and on which GPUs; None when it fits nowhere even once every job with a known end has
    ended. The state is left as it was.

    Releases touch only the node-class index the placer searches (filters and scores read the
    node, never the snapshot), and a cheap bound skips the ends after which too few GPUs are
    free for the job to be worth placing.
    """
    ends = expected_ends(framework, state)
    running = state.snapshot.running
    bound = _Bound(state, job)
    with state.trial():  # never kept: the releases and the placement are what-ifs
        freed: dict[str, Node] = {}  # nodes released since the index was last brought up to date
        index = 0
        while index < len(ends):
            end_s = ends[index][0]
            while index < len(ends) and ends[index][0] == end_s:
                _release(state, running[ends[index][1]].placement, freed, bound)
                index += 1
            if not bound.may_fit():
                continue
            for node in freed.values():
                state.classes.update(node)
            freed.clear()
            rooms = state.classes.free_rooms().values()
            if sum(room.replicas(job.request, 1) for room in rooms) < job.replicas:  # tighter, for any request
                continue
            placement = place(job)
            if placement is not None:
                gpus = frozenset((r.node, grant.gpu) for r in placement.replicas for grant in r.grants)
                return Reservation(job.id, end_s, gpus)
    return None


def _release(state: CycleState, placement: Placement, freed: dict[str, Node], bound: _Bound) -> None:
    """Frees what `placement` holds on the nodes in `freed` (taken from the index when absent)."""
    job_id = placement.job.id
    for replica in placement.replicas:
        node = freed.get(replica.node) or state.classes.nodes[replica.node]
        freed[replica.node] = released = node.without(state.pool_of(node), job_id, {g.gpu for g in replica.grants})
        bound.changed(node, released)


class _Bound:
    """How many replicas of a whole-GPU job the ready nodes could take, counted as they free up;
    an upper bound (filters aside). Other requests are always worth trying."""

    def __init__(self, state: CycleState, job: Job) -> None:
        request = job.request
        self.size = request.gpus if request.kind is RequestKind.WHOLE else 0
        self.replicas = job.replicas
        self.fit = 0
        if self.size:
            classes = state.classes
            self.fit = sum(self._fits(classes.representative(c)) * len(c.members) for c in classes.classes)

    def _fits(self, node: Node) -> int:
        return sum(gpu.free for gpu in node.gpus) // self.size if node.ready else 0

    def changed(self, before: Node, after: Node) -> None:
        if self.size:
            self.fit += self._fits(after) - self._fits(before)

    def may_fit(self) -> bool:
        return not self.size or self.fit >= self.replicas


class Remembered:
    """The last reservation worked out, and the cluster it was worked out on (a placer keeps one).

    A reservation depends on the job, the nodes and the running jobs, and on the time only
    through the ends already passed, which count as now. An answer whose shadow time is still
    ahead (or that found none) holds for the same job on the same snapshot: most cycles of a
    busy cluster (an arrival that has to wait) show the scheduler the snapshot it saw last.
    Snapshots are immutable, so the same objects mean the same cluster.
    """

    def __init__(self) -> None:
        self.last: tuple[Job, object, object, Reservation | None] | None = None

    def reserve(self, framework: Framework, state: CycleState, job: Job, place: Place) -> Reservation | None:
        """`reserve`, answered from the last time when the job and the snapshot are the same."""
        snapshot = state.snapshot
        last = self.last  # read once: another thread may replace it
        if last is not None and last[1] is snapshot.nodes and last[2] is snapshot.running and last[0] == job:
            reservation = last[3]
            if reservation is None or reservation.start_s > state.cycle.now_s:
                return reservation
        reservation = reserve(framework, state, job, place)
        self.last = (job, snapshot.nodes, snapshot.running, reservation)
        return reservation


class Backfill:
    """One cycle's reservation and the placing of later jobs around it (see the module)."""

    def __init__(self, framework: Framework, state: CycleState, place: Place, remembered: Remembered) -> None:
        self.framework = framework
        self.state = state
        self.place = place
        self.remembered = remembered
        self.reservation: Reservation | None = None
        self._hopeless: set[object] = set()  # job shapes that found no reservation this cycle

    def hold(self, job: Job, shape: object) -> None:
        """`job` cannot start now: it gets the reservation, unless one is held or it cannot have one.

        A shape that found none finds none later in the cycle either: placements only add
        running jobs, whose ends come no sooner than the shadow time would have.
        """
        if self.reservation is not None or shape in self._hopeless:
            return
        self.reservation = self.remembered.reserve(self.framework, self.state, job, self.place)
        if self.reservation is None:
            self._hopeless.add(shape)

    def runs_past(self, job: Job) -> bool:
        """Whether `job`, started now, may still run at the shadow time."""
        if self.reservation is None:
            raise RuntimeError("no reservation is held")
        cycle = self.state.cycle
        return cycle.now_s + self.framework.runtime_s(cycle, job) > self.reservation.start_s

    def around(self, job: Job) -> Placement | None:
        """`job` placed on GPUs the reservation does not need, or None (the state as it was)."""
        reservation = self.reservation
        if reservation is None:
            raise RuntimeError("no reservation is held")
        state = self.state
        with state.trial():  # the stand-in and the placement are tried; the placement is kept below
            self._hold_reserved(reservation)
            placement = self.place(job)
        if placement is None:
            return None
        if any((r.node, grant.gpu) in reservation.gpus for r in placement.replicas for grant in r.grants):
            return None  # on a partly used reserved GPU, which the stand-in could not hold
        state.assume(placement)
        return placement

    def fits_unreserved(self, job: Job) -> bool:
        """Whether `job` would fit now if nothing were reserved (the state is left as it was)."""
        with self.state.trial():
            return self.place(job) is not None

    def _hold_reserved(self, reservation: Reservation) -> None:
        """The stand-in takes every reserved GPU that is free now, on pools that offer whole GPUs."""
        state = self.state
        by_node: dict[str, list[int]] = {}
        for node_name, gpu in sorted(reservation.gpus):
            by_node.setdefault(node_name, []).append(gpu)
        for node_name, indexes in by_node.items():
            node = state.classes.nodes.get(node_name)
            if node is None or state.pool_of(node).mig_mode is not MigMode.OFF:
                continue
            grants = [Grant(index) for index in indexes if node.gpus[index].free]
            if grants:
                state.take(STAND_IN, node, grants)
