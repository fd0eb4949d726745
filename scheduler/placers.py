"""Placers decide how to search: the filters say which nodes are allowed, the scores how good.

`GreedyPlacer` is kube-scheduler's way: one job at a time in queue order, each replica on the
best-scoring feasible node equivalence class, a gang all or nothing. When a job fits nowhere
and some node rejected it as UNSCHEDULABLE, the profile's postfilter may name victims; the
placer accepts them only if the job then fits.

`scheduler.batch.placer.BatchPlacer` places the whole queue with one solve (CP-SAT),
warm-started from the greedy answer and falling back to it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol

from scheduler.decision import Code, Decision, Pending, Preemption, Status
from scheduler.framework import Framework, NodeClasses
from scheduler.model import Job, Node, Placement, ReplicaPlacement
from scheduler.plugin import Cycle

GANG = "Gang"


class Placer(Protocol):
    """Turns an ordered queue of admitted jobs into placements, preemptions and pending jobs."""

    def place(self, framework: Framework, cycle: Cycle, queue: Sequence[Job], classes: NodeClasses) -> Decision: ...


class GreedyPlacer:
    """Job by job in queue order; each replica to the best feasible class; gangs whole.

    A `trial` placer neither preempts nor explains: it is what a batch placer asks for a
    first answer to improve on.
    """

    name = "greedy"

    def __init__(self, *, trial: bool = False) -> None:
        self.trial = trial

    def place(self, framework: Framework, cycle: Cycle, queue: Sequence[Job], classes: NodeClasses) -> Decision:
        """Places `queue` in order; `classes` is the node index synced to cycle.snapshot.

        Capacity only shrinks while a cycle places jobs, so once a job fits nowhere, later jobs
        of the same shape fit nowhere either and share its explanation, until a preemption
        frees capacity.
        """
        running_before = cycle.snapshot.running  # immutable: the jobs evictable this cycle
        placements: list[Placement] = []
        preemptions: list[Preemption] = []
        pending: dict[str, Pending] = {}
        failed: dict[Hashable, Pending] = {}
        for job in queue:
            status = framework.prefilter(cycle, job)
            if not status.ok:
                pending[job.id] = Pending(job.id, status)
                continue
            shape = framework.shape(job)
            if shape in failed:
                first = failed[shape]
                pending[job.id] = Pending(job.id, first.status, first.verdicts, first.fits_nowhere)
                continue
            placement = self._place_gang(framework, cycle, classes, job, shape)
            if placement is None and self.trial:
                unplaced = Pending(job.id, Status.unschedulable("no node fits"), fits_nowhere=True)
                pending[job.id] = failed[shape] = unplaced
                continue
            if placement is None:
                victims = self._preempt(framework, cycle, classes, job, running_before)
                if victims:
                    placement = self._place_gang(framework, cycle, classes, job)
                    if placement is None:  # pragma: no cover - _preempt only returns victims that make room
                        raise AssertionError("victims were accepted but the job no longer fits")
                    preemptions.extend(victims)
                    failed.clear()
            if placement is None:
                pending[job.id] = failed[shape] = self._pending(framework, cycle, classes, job)
                continue
            cycle.assume(placement)
            placements.append(placement)
        return Decision(placements=tuple(placements), preemptions=tuple(preemptions), pending=pending)

    @staticmethod
    def _place_gang(
        framework: Framework, cycle: Cycle, classes: NodeClasses, job: Job, shape: Hashable | None = None
    ) -> Placement | None:
        """Places every replica or none: on failure the index is restored as it was."""
        before: list[Node] = []
        replicas: list[ReplicaPlacement] = []
        for _ in range(job.replicas):
            group = framework.best(cycle, job, classes, shape)
            if group is None:
                break
            node = classes.representative(group)
            pool = cycle.pools[node.pool]
            grants = framework.verdict(cycle, job, classes, group).grants_on(pool, node, job.request)
            if grants is None:  # pragma: no cover - the class verdict already found grants
                raise AssertionError(f"class verdict and allocator disagree on {node.name}")
            before.append(node)
            classes.update(node.grant(pool, job, grants))
            replicas.append(ReplicaPlacement(node.name, grants))
        if len(replicas) == job.replicas:
            return Placement(job, tuple(replicas))
        for node in reversed(before):
            classes.update(node)
        return None

    def _preempt(
        self, framework: Framework, cycle: Cycle, classes: NodeClasses, job: Job, evictable: Mapping[str, object]
    ) -> list[Preemption]:
        """Victims from the postfilter, kept only if the job fits once they are gone.

        Only jobs running before this cycle (`evictable`) can be victims: evicting a job the
        same decision places would make no sense.
        """
        if not framework.profile.postfilter:
            return []
        groups = classes.classes
        statuses = {group.id: framework.verdict(cycle, job, classes, group).status for group in groups}
        if not any(status.code is Code.UNSCHEDULABLE for status in statuses.values()):
            return []
        rejected = {name: statuses[group.id] for group in groups for name in group.members}
        victims = [v for v in framework.postfilter(cycle, job, rejected) if v.job in evictable]
        if not victims:
            return []
        saved_snapshot = cycle.snapshot
        saved_nodes = dict(classes.nodes)
        for victim in victims:
            cycle.snapshot = cycle.snapshot.release(victim.job)
        for name in sorted({r.node for v in victims for r in saved_snapshot.running[v.job].placement.replicas}):
            classes.update(cycle.snapshot.nodes[name])
        trial = self._place_gang(framework, cycle, classes, job)
        if trial is not None:
            for replica in trial.replicas:  # undo the trial; place() redoes it for real
                classes.update(cycle.snapshot.nodes[replica.node])
            return victims
        cycle.snapshot = saved_snapshot
        for node in saved_nodes.values():
            classes.update(node)
        return []

    @staticmethod
    def _pending(framework: Framework, cycle: Cycle, classes: NodeClasses, job: Job) -> Pending:
        if framework.explains:
            verdicts = framework.explain(cycle, job, classes)
            statuses = [(v.status, v.nodes) for v in verdicts]
        else:
            verdicts = ()
            statuses = [(framework.verdict(cycle, job, classes, g).status, len(g.members)) for g in classes.classes]
        if any(status.ok for status, _ in statuses):
            fits = sum(nodes for status, nodes in statuses if status.ok)
            status = Status.unschedulable(f"gang of {job.replicas} replicas; fewer fit at once ({fits} nodes fit one)")
            return Pending(job.id, status.by(GANG), verdicts, fits_nowhere=True)
        codes = {status.code for status, _ in statuses}
        code = Code.UNSCHEDULABLE if Code.UNSCHEDULABLE in codes else Code.UNRESOLVABLE
        reason = "no node fits" if statuses else "the cluster has no nodes"
        return Pending(job.id, Status(code, (reason,)), verdicts, fits_nowhere=True)
