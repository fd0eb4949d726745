"""The extender's planner: the profile run over every pending pod at once, and the plan kept.

A pass reads the mirror, schedules every pending GPU pod of this scheduler in one decision,
and swaps the new plan in. Passes run one at a time, in the background every `interval_s`
and when a pod is asked about that no plan can answer; while one runs, the verbs go on
answering from the last plan, so kube-scheduler never waits for a pass.

The plan is also the ledger binds draw on. A pod bound by this process holds its GPUs in
`_held` until the mirror shows it bound: a pass that read the mirror before the binding
would otherwise see those GPUs free and give them to another pod (two pods on one GPU, and
one GPU that looks free here while kube-scheduler counts it used, so that the pod planned
onto it waits for ever). Each new plan takes the held GPUs back before it is swapped in, and
planned pods in their way are taken out of it; they get a per-pod answer when asked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from extender.state import ClusterView, View
from extender.translate import PodJob
from scheduler import capacity, costing
from scheduler.decision import Decision
from scheduler.model import AllocationError, ClusterSnapshot, Grant, Job, Placement, ReplicaPlacement
from scheduler.world import Scheduler

log = logging.getLogger(__name__)

Target = tuple[str, tuple[Grant, ...]]  # node, and the GPUs on it


@dataclass(slots=True)
class Plan:
    """One planning pass: where each pending pod goes, and what that commits.

    `after` is the cluster with the plan carried out; pods the pass did not see are placed on
    it one by one (`Planner.place_one`) until the next pass. `planned` names the job each
    planned pod's GPUs are held under in `after` (a gang's pods share one).
    """

    view: View
    decision: Decision
    nodes: dict[str, Target]  # pod UID -> (node, grants)
    made_at: float  # time.monotonic() when the plan was last known current
    after: ClusterSnapshot
    committed_usd_per_hour: float = 0.0
    reasons: Mapping[str, str] = field(default_factory=dict)  # job id -> why it waits
    planned: dict[str, str] = field(default_factory=dict)  # pod UID -> job id in `after`
    fixed: set[str] = field(default_factory=set)  # jobs in `after` with a pod bound: never dropped

    @classmethod
    def of(cls, view: View, decision: Decision) -> Plan:
        nodes: dict[str, Target] = {}
        planned: dict[str, str] = {}
        after = view.snapshot
        for placement in decision.placements:
            after = after.assume(placement)
            for pod, replica in zip(view.pods_of[placement.job.id], placement.replicas, strict=True):
                nodes[pod.uid] = (replica.node, replica.grants)
                planned[pod.uid] = placement.job.id
        committed = costing.committed_usd_per_hour(view.snapshot.pools, view.snapshot.nodes, decision.placements)
        reasons = {job_id: str(pending.status) for job_id, pending in decision.pending.items()}
        return cls(view, decision, nodes, time.monotonic(), after, committed, reasons, planned)

    def put(self, uid: str, placement: Placement) -> Target:
        """Adds a one-pod placement to the plan."""
        self.after = self.after.assume(placement)
        self.planned[uid] = placement.job.id
        self.nodes[uid] = (placement.replicas[0].node, placement.replicas[0].grants)
        return self.nodes[uid]

    def drop(self, uid: str) -> None:
        """Takes a pod's planned place out of the plan (a gang's: the whole gang's)."""
        job_id = self.planned.get(uid)
        if job_id is None or job_id in self.fixed:
            return
        self.after = self.after.release(job_id)
        for other in [u for u, j in self.planned.items() if j == job_id]:
            del self.planned[other]
            self.nodes.pop(other, None)

    def keep(self, uid: str) -> None:
        """The pod is bound where it was planned: its job stays in the plan whatever comes."""
        if uid in self.planned:
            self.fixed.add(self.planned[uid])

    def clear(self, node: str, gpus: Collection[int] | None = None) -> None:
        """Takes out of the plan every planned pod on `node` (on those `gpus`, when given)."""
        for uid, (name, grants) in list(self.nodes.items()):
            if name == node and (gpus is None or not {g.gpu for g in grants}.isdisjoint(gpus)):
                self.drop(uid)

    def hold(self, uid: str, node: str, grants: tuple[Grant, ...], job: Job) -> None:
        """GPUs bound to a pod that the plan's view does not show bound: kept out of the plan."""
        if self.nodes.get(uid) == (node, grants):
            self.keep(uid)  # planned just where it went
            return
        self.drop(uid)
        self.clear(node, {g.gpu for g in grants})
        placement = Placement(replace(job, id=f"{job.id}@{uid}", replicas=1), (ReplicaPlacement(node, grants),))
        try:
            self.after = self.after.assume(placement)
        except AllocationError:
            self._around_guesses(placement)

    def _around_guesses(self, placement: Placement) -> None:
        """Holds a binding whose GPUs the view guessed for a pod bound by another scheduler:
        the guesses move to other free GPUs of the node (only their number is known)."""
        node = placement.replicas[0].node
        guessed = [running.placement.job for job_id, running in self.after.running.items()
                   if job_id in self.view.guessed and running.placement.replicas[0].node == node]  # fmt: skip
        after = self.after
        try:
            for job in guessed:
                after = after.release(job.id)
            after = after.assume(placement)
            for job in guessed:
                state = after.nodes[node]
                grants = capacity.find_grants(after.pools[state.pool], state, job.request)
                if grants is None:
                    raise AllocationError(f"no GPU left for {job.id}")
                after = after.assume(Placement(job, (ReplicaPlacement(node, grants),)))
        except AllocationError as error:  # the node holds more than it has: the next pass sees it all
            log.warning("pod %s was bound to %s but %s", placement.job.id, node, error)
            return
        self.after = after


def restricted(snapshot: ClusterSnapshot, names: Collection[str]) -> ClusterSnapshot:
    """The snapshot with every node but `names` out of use (kept, so running jobs stay whole)."""
    offered = set(names)
    if offered.issuperset(snapshot.nodes):
        return snapshot
    nodes = {name: node if name in offered or not node.ready else replace(node, ready=False)
             for name, node in snapshot.nodes.items()}  # fmt: skip
    return replace(snapshot, nodes=MappingProxyType(nodes))


class Planner:
    """Plans every pending pod with the profile; keeps the last plan; thread-safe."""

    def __init__(self, view: ClusterView, scheduler: Scheduler, interval_s: float = 1.0) -> None:
        self.cluster = view
        self.scheduler = scheduler
        # A Scheduler keeps an index of the nodes it last saw: per-pod answers (under `_lock`)
        # run beside a pass (under `_passes`), so they get a Scheduler of their own.
        self._alone = Scheduler(scheduler.profile, explain=False)
        self.interval_s = interval_s
        self._passes = threading.Lock()  # one pass at a time
        self._lock = threading.Lock()  # the plan and the held GPUs
        self._plan: Plan | None = None
        self._held: dict[str, tuple[str, tuple[Grant, ...], Job]] = {}  # pod UID -> node, GPUs, its job
        self._version = -1  # the mirror's version the plan was made from
        self._stop = threading.Event()

    def plan(self) -> Plan:
        """Plans now, from the mirror as it stands, and keeps the result."""
        with self._passes:
            version = self.cluster.version
            view = self.cluster.view()
            decision = self.scheduler.schedule(view.snapshot, view.pending, now_s=time.time())
            plan = Plan.of(view, decision)
            with self._lock:
                for uid, (node, grants, job) in list(self._held.items()):
                    if f"{job.id}@{uid}" in view.snapshot.running or not self.cluster.knows("pod", uid):
                        del self._held[uid]  # the mirror has the binding (or the pod is gone)
                    else:
                        plan.hold(uid, node, grants, job)
                self._plan = plan
                self._version = version
            return plan

    def place_one(self, pod: PodJob, names: Collection[str] | None = None) -> Target | None:
        """The per-pod answer for a pod the last pass did not place: alone, on what the plan
        leaves (on `names` only, when given: the nodes kube-scheduler's own filters passed),
        kept until the next pass. None for a gang's pod or one that fits nowhere."""
        with self._lock:
            plan = self._plan
            if plan is None or pod.gang is not None:
                return None
            known = plan.nodes.get(pod.uid)
            if known is not None and (names is None or known[0] in names):
                return known
            plan.drop(pod.uid)
            offered = plan.after if names is None else restricted(plan.after, names)
            decision = self._alone.schedule(offered, [pod.job], now_s=time.time())
            if not decision.placements:
                return None
            try:
                return plan.put(pod.uid, decision.placements[0])
            except AllocationError:  # its old place is held for a binding: the next pass decides
                return None

    def reserve(self, pod: PodJob, node: str) -> tuple[Grant, ...] | None:
        """The GPUs `pod` takes on `node`, held until the mirror shows it bound: the planned
        ones, or (when kube-scheduler chose another node, or the plan moved on) free ones
        there, planned pods in the way moved out. None when the node cannot hold it."""
        with self._lock:
            held = self._held.get(pod.uid)
            if held is not None:
                return held[1] if held[0] == node else None
            plan = self._plan
            if plan is None:
                return None
            target = plan.nodes.get(pod.uid)
            if target is None or target[0] != node:
                if pod.gang is not None:
                    return None  # a gang goes where its plan put it, or waits for the next pass
                plan.drop(pod.uid)
                grants = self._free(plan, pod, node)
                if grants is None:
                    plan.clear(node)
                    grants = self._free(plan, pod, node)
                if grants is None:
                    return None
                target = plan.put(pod.uid, Placement(pod.job, (ReplicaPlacement(node, grants),)))
            plan.keep(pod.uid)
            self._held[pod.uid] = (node, target[1], pod.job)
            return target[1]

    @staticmethod
    def _free(plan: Plan, pod: PodJob, node: str) -> tuple[Grant, ...] | None:
        state = plan.after.nodes.get(node)
        if state is None or not state.ready:
            return None
        return capacity.find_grants(plan.after.pools[state.pool], state, pod.job.request)

    def unreserve(self, uid: str) -> None:
        """The binding failed: the pod's GPUs are no longer held for it."""
        with self._lock:
            self._held.pop(uid, None)
            plan = self._plan
            job_id = plan.planned.get(uid) if plan is not None else None
            if plan is not None and job_id is not None and all(plan.planned.get(u) != job_id for u in self._held):
                plan.fixed.discard(job_id)

    def current(self) -> Plan | None:
        return self._plan

    def run(self) -> None:
        """Plans every `interval_s` until `stop()`, unless nothing changed since the last pass
        (the plan is then as good as new); a failure is logged and the loop goes on."""
        while not self._stop.wait(self.interval_s):
            try:
                with self._lock:
                    plan = self._plan
                    if plan is not None and self._version == self.cluster.version:
                        plan.made_at = time.monotonic()
                        continue
                self.plan()
            except Exception:
                log.exception("planning failed; the last plan stays")

    def stop(self) -> None:
        self._stop.set()
