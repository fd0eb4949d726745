"""The extender's planner: the profile run over every pending pod at once, and the plan kept.

A pass (`run_cycle` over an `ExtenderWorld`) reads the mirror, schedules every pending GPU pod
of this scheduler in one decision, and swaps the new plan in. Passes run one at a time, in the
background every `interval_s` and when a pod is asked about that no plan can answer; while one
runs, the verbs go on answering from the last plan, so kube-scheduler never waits for a pass.
A pod the plan has no place for is placed alone (`run_cycle` over a `PodWorld`) by the same
Scheduler, which gives a call made beside a pass an index of its own.

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
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from extender.state import ClusterView, View
from extender.translate import HeldBy, PodJob
from extender.world import Clock, ExtenderWorld, PodWorld, SystemClock
from scheduler import capacity, costing
from scheduler.decision import Decision, Pending
from scheduler.model import AllocationError, ClusterSnapshot, Grant, Job, Placement, ReplicaPlacement
from scheduler.plugin import Cycle
from scheduler.world import Scheduler, run_cycle

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
    made_at: float  # the clock's monotonic seconds when the plan was last known current
    after: ClusterSnapshot
    committed_usd_per_hour: float = 0.0
    planned: dict[str, str] = field(default_factory=dict)  # pod UID -> job id in `after`
    fixed: set[str] = field(default_factory=set)  # jobs in `after` with a pod bound: never dropped
    jobs: Mapping[str, Job] = field(default_factory=dict)  # job id -> the pending job the view made

    @classmethod
    def of(cls, view: View, decision: Decision, made_at: float) -> Plan:
        nodes: dict[str, Target] = {}
        planned: dict[str, str] = {}
        after = view.snapshot
        for placement in decision.placements:
            after = after.assume(placement)
            for pod, replica in zip(view.pods_of[placement.job.id], placement.replicas, strict=True):
                nodes[pod.uid] = (replica.node, replica.grants)
                planned[pod.uid] = placement.job.id
        committed = costing.committed_usd_per_hour(view.snapshot.pools, view.snapshot.nodes, decision.placements)
        jobs = {job.id: job for job in view.pending}
        return cls(view, decision, nodes, made_at, after, committed, planned, jobs=jobs)

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
        placement = Placement(replace(job, id=str(HeldBy(job.id, uid)), replicas=1), (ReplicaPlacement(node, grants),))
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


class Planner:
    """Plans every pending pod with the profile; keeps the last plan; thread-safe."""

    def __init__(
        self, view: ClusterView, scheduler: Scheduler, interval_s: float = 1.0, clock: Clock | None = None
    ) -> None:
        if scheduler.profile.postfilter:
            raise ValueError("a plan never counts on evicting a pod: plan with a profile without postfilter plugins")
        self.cluster = view
        self.scheduler = scheduler
        self.clock = clock or SystemClock()
        self.interval_s = interval_s
        self._passes = threading.Lock()  # one pass at a time
        self._lock = threading.Lock()  # the plan and the held GPUs
        self._plan: Plan | None = None
        self._held: dict[str, tuple[str, tuple[Grant, ...], Job]] = {}  # pod UID -> node, GPUs, its job
        self._version = -1  # the mirror's version the plan was made from
        self._stop = threading.Event()
        self.active: Callable[[], bool] = lambda: True  # passes run in the background only while true (the leader)
        # Governance on (`extender.guardrails`): the snapshot a pass is shown, with the guardrails'
        # view of this instant on it; and what is done with each new plan (Events on held pods).
        # A pod placed alone is shown, beside the pending jobs, the plan's jobs not bound yet.
        self.govern: Callable[[ClusterSnapshot, Sequence[Job], Sequence[Job]], ClusterSnapshot] | None = None
        self.on_plan: Callable[[Plan], object] | None = None
        # What is done once a plan counts GPUs a pod that ended freed (asking kube-scheduler again
        # for the pods it turned away: without it they wait up to a minute in its queue).
        self.on_freed: Callable[[], object] | None = None

    def reset(self) -> None:
        """Forgets the plan and the held GPUs (a new term as leader starts from the mirror alone)."""
        with self._lock:
            self._plan = None
            self._held.clear()
            self._version = -1

    def plan(self) -> Plan:
        """Plans now, from the mirror as it stands, and keeps the result."""
        with self._passes:
            freed = self.cluster.take_freed()  # before the view is read: this plan counts those GPUs free
            world = ExtenderWorld(self)
            run_cycle(world, self.scheduler)
            assert world.plan is not None
            if self.on_plan is not None:
                self.on_plan(world.plan)
            if freed and self.on_freed is not None:
                self.on_freed()
            return world.plan

    def adopt(self, view: View, decision: Decision, version: int) -> Plan:
        """Makes `decision`, taken on `view` (the mirror at `version`), the current plan, with
        the bindings the view does not show yet held out of it."""
        plan = Plan.of(view, decision, self.clock.monotonic_s())
        with self._lock:
            for uid, (node, grants, job) in list(self._held.items()):
                if str(HeldBy(job.id, uid)) in view.snapshot.running or not self.cluster.knows("pod", uid):
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
            world = PodWorld(self, plan, pod, self._unreserved(plan, pod, names))
            run_cycle(world, self.scheduler)
            return world.target

    def _unreserved(self, plan: Plan, pod: PodJob, names: Collection[str] | None) -> Collection[str] | None:
        """The nodes a pod placed alone may take: `names` (every node when None), less the nodes
        the pass's reservation holds when the pod may still run at its shadow time. The pass
        keeps the reserved GPUs free of such pods (`scheduler.backfill`); alone, the pod is kept
        off the reserved nodes entirely, which is coarser but never delays the reserved job."""
        reservation = plan.decision.reservation
        if reservation is None or reservation.job == pod.job.id:
            return names
        now_s = self.clock.now_s()
        if now_s + self.scheduler.framework.runtime_s(Cycle(now_s, plan.after), pod.job) <= reservation.start_s:
            return names
        offered = plan.after.nodes if names is None else names
        return [name for name in offered if name not in reservation.nodes]

    def explain(self, job: Job) -> Pending:
        """Why a pending job the last pass was not shown waits: per node class, as the plan leaves them."""
        plan = self._plan
        if plan is None:
            raise RuntimeError("explain before the first plan")
        return self.scheduler.explain(plan.after, job, now_s=self.clock.now_s())

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

    def held(self) -> set[str]:
        """The pods whose GPUs are held for a binding the mirror does not show yet."""
        with self._lock:
            return set(self._held)

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
            if not self.active():
                continue
            try:
                with self._lock:
                    plan = self._plan
                    if plan is not None and self._version == self.cluster.version:
                        plan.made_at = self.clock.monotonic_s()
                        continue
                self.plan()
            except Exception:
                log.exception("planning failed; the last plan stays")

    def stop(self) -> None:
        self._stop.set()
