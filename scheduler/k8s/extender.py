"""The extender's logic: a plan over every pending pod, and the verbs answered from it.

The `Planner` runs the configured profile (greedy or CP-SAT) over all pending GPU pods of this
scheduler at once, in the background every `interval_s` and whenever a pod is asked about
that the last plan has not seen. kube-scheduler asks about one pod at a time; `GpuExtender`
answers filter with the planned node alone (every other node fails with the reason), so the
pod lands where the batch placement put it; prioritize gives the planned node the top score.
A gang's pods fail every node, with the reason kube-scheduler shows in the pod's events,
until the whole gang exists and fits; then each gets its planned node.

Bind writes the GPUs the plan granted into the pod's `fleetsched.io/gpus` annotation and
creates the Binding; asked again for a pod already on that node, it succeeds (idempotent).
Preempt trims kube-scheduler's candidate victims to those whose eviction loses the least
work (GPUs times the time since their last checkpoint), never a pod of higher priority.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scheduler import capacity, costing
from scheduler.catalog import Catalog
from scheduler.decision import Code, Decision
from scheduler.k8s.state import GPUS, ClusterView, View, format_grants
from scheduler.k8s.translate import PodJob, read_pod
from scheduler.k8s.wire import BindingArgs, ExtenderArgs, FilterResult, PreemptionArgs, WireError
from scheduler.model import ClusterSnapshot, Grant
from scheduler.world import Scheduler

log = logging.getLogger(__name__)


class KubeApi(Protocol):
    """What the extender asks of the API server (a faithful fake stands in for it in tests)."""

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        """Creates the pod's Binding, which also sets `annotations` on the pod (one request);
        raises AlreadyBound(node) when the pod is bound already."""
        ...


class AlreadyBound(Exception):  # noqa: N818 - an answer, not a failure
    """The pod is bound already, to `node`."""

    def __init__(self, node: str) -> None:
        self.node = node
        super().__init__(f"already bound to {node}")


@dataclass(slots=True)
class Plan:
    """One planning pass: where each pending pod goes, and what that commits.

    `after` is the cluster with the plan carried out; pods the pass did not see are placed on
    it one by one (`Planner.place_one`) until the next pass.
    """

    view: View
    decision: Decision
    nodes: dict[str, tuple[str, tuple[Grant, ...]]]  # pod UID -> (node, grants)
    made_at: float
    after: ClusterSnapshot
    committed_usd_per_hour: float = 0.0
    reasons: Mapping[str, str] = field(default_factory=dict)  # job id -> why it waits


class Planner:
    """Plans every pending pod with the profile; keeps the last plan; thread-safe."""

    def __init__(self, view: ClusterView, scheduler: Scheduler, interval_s: float = 1.0) -> None:
        self.cluster = view
        self.scheduler = scheduler
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._stop = threading.Event()

    def plan(self) -> Plan:
        """Plans now, from the mirror as it stands, and keeps the result."""
        with self._lock:
            view = self.cluster.view()
            decision = self.scheduler.schedule(view.snapshot, view.pending, now_s=time.time())
            nodes: dict[str, tuple[str, tuple[Grant, ...]]] = {}
            for placement in decision.placements:
                for pod, replica in zip(view.pods_of[placement.job.id], placement.replicas, strict=True):
                    nodes[pod.uid] = (replica.node, replica.grants)
            committed = costing.committed_usd_per_hour(view.snapshot.pools, view.snapshot.nodes, decision.placements)
            reasons = {job_id: str(pending.status) for job_id, pending in decision.pending.items()}
            after = view.snapshot
            for placement in decision.placements:
                after = after.assume(placement)
            self._plan = Plan(view, decision, nodes, time.monotonic(), after, committed, reasons)
            return self._plan

    def place_one(self, pod: PodJob) -> tuple[str, tuple[Grant, ...]] | None:
        """The per-pod answer for a pod the last pass did not see: placed alone on what the plan
        leaves, kept until the next pass. None for a gang's pod or one that fits nowhere."""
        with self._lock:
            plan = self._plan
            if plan is None or pod.gang is not None:
                return None
            known = plan.nodes.get(pod.uid)
            if known is not None:
                return known
            decision = self.scheduler.schedule(plan.after, [pod.job], now_s=time.time())
            if not decision.placements:
                return None
            placement = decision.placements[0]
            plan.after = plan.after.assume(placement)
            plan.nodes[pod.uid] = (placement.replicas[0].node, placement.replicas[0].grants)
            return plan.nodes[pod.uid]

    def current(self) -> Plan | None:
        return self._plan

    def run(self) -> None:
        """Plans every `interval_s` until `stop()`; a failure is logged and the loop goes on."""
        while not self._stop.wait(self.interval_s):
            try:
                self.plan()
            except Exception:
                log.exception("planning failed; the last plan stays")

    def stop(self) -> None:
        self._stop.set()


class GpuExtender:
    """Answers kube-scheduler's verbs from the planner's plan (see the module docstring)."""

    def __init__(self, planner: Planner, api: KubeApi, catalog: Catalog, *, stale_after_s: float = 30.0) -> None:
        self.planner = planner
        self.api = api
        self.catalog = catalog
        self.stale_after_s = stale_after_s

    def _plan_for(self, pod: PodJob, raw: Mapping[str, object]) -> Plan:
        plan = self.planner.current()
        uid = pod.uid
        if plan is None or (uid not in plan.view.job_of and uid not in plan.view.waiting and uid not in plan.nodes):
            # A pod the last plan has not seen (kube-scheduler's informer can be ahead of our
            # watch): take it from the request; place it alone on what the plan leaves, or,
            # for a gang's pod or one that fits nowhere, plan everything again.
            if not self.planner.cluster.knows("pod", uid):
                self.planner.cluster.apply("pod", "ADDED", raw)
            if plan is None or self.planner.place_one(pod) is None:
                plan = self.planner.plan()
            else:
                plan = self.planner.current() or plan
        return plan

    def filter(self, args: ExtenderArgs) -> FilterResult:
        try:
            pod = read_pod(args.pod, self.catalog)
        except WireError as error:
            return FilterResult(error=str(error))
        if pod is None:
            return FilterResult(args.node_names)  # no GPU asked: not ours to decide
        plan = self._plan_for(pod, args.pod)
        known = plan.view.snapshot.nodes
        unknown = {name: "not a GPU node fleetsched knows" for name in args.node_names if name not in known}
        waiting = plan.view.waiting.get(pod.uid)
        if waiting is not None:
            failed = {name: str(waiting) for name in args.node_names if name in known}
            return FilterResult((), failed, unknown)
        target = plan.nodes.get(pod.uid)
        if target is not None and target[0] in args.node_names:
            failed = {name: f"fleetsched placed this pod on {target[0]}" for name in args.node_names
                      if name in known and name != target[0]}  # fmt: skip
            return FilterResult((target[0],), failed, unknown)
        return self._explain(plan, pod.uid, args, unknown)

    def _explain(self, plan: Plan, uid: str, args: ExtenderArgs, unknown: Mapping[str, str]) -> FilterResult:
        job_id = plan.view.job_of.get(uid, "")
        pending = plan.decision.pending.get(job_id)
        reason = plan.reasons.get(job_id, "no node fits in the current plan")
        closed = {v.pool for v in (pending.verdicts if pending else ()) if v.status.code is Code.UNRESOLVABLE}
        snapshot = plan.view.snapshot
        failed: dict[str, str] = {}
        unresolvable = dict(unknown)
        for name in args.node_names:
            if name in snapshot.nodes:
                if snapshot.nodes[name].pool in closed:
                    unresolvable[name] = reason
                else:
                    failed[name] = reason
        return FilterResult((), failed, unresolvable)

    def prioritize(self, args: ExtenderArgs) -> Mapping[str, float]:
        try:
            pod = read_pod(args.pod, self.catalog)
        except WireError:
            return dict.fromkeys(args.node_names, 0.0)
        plan = self.planner.current()
        target = plan.nodes.get(pod.uid) if plan is not None and pod is not None else None
        # Nodes left out of the reply score nothing: only the planned node needs a line.
        return {target[0]: 10.0} if target is not None and target[0] in args.node_names else {}

    def bind(self, args: BindingArgs) -> str:
        plan = self.planner.current() or self.planner.plan()
        target = plan.nodes.get(args.pod_uid)
        grants: tuple[Grant, ...] | None = target[1] if target is not None and target[0] == args.node else None
        if grants is None:  # kube-scheduler chose another node (or the plan moved on): allocate there
            plan = self.planner.plan()
            node = plan.view.snapshot.nodes.get(args.node)
            job_id = plan.view.job_of.get(args.pod_uid)
            pods = plan.view.pods_of.get(job_id or "", ())
            pod = next((p for p in pods if p.uid == args.pod_uid), None)
            if node is None or pod is None:
                return f"fleetsched cannot place pod {args.pod_namespace}/{args.pod_name} on {args.node}"
            grants = capacity.find_grants(plan.view.snapshot.pools[node.pool], node, pod.job.request)
            if grants is None:
                return f"node {args.node} has no free capacity for pod {args.pod_namespace}/{args.pod_name}"
        try:
            self.api.bind_pod(args.pod_namespace, args.pod_name, args.pod_uid, args.node, {GPUS: format_grants(grants)})
        except AlreadyBound as bound:
            return "" if bound.node == args.node else f"pod is bound to {bound.node} already"
        except Exception as error:  # the API server said no: kube-scheduler retries the pod
            log.warning("binding %s/%s to %s failed: %s", args.pod_namespace, args.pod_name, args.node, error)
            return f"binding failed: {error}"
        # Until the watch brings the bound pod back, the view holds it where it went.
        self.planner.cluster.bound(args.pod_uid, args.node, {GPUS: format_grants(grants)})
        return ""

    def preempt(self, args: PreemptionArgs) -> tuple[Mapping[str, Sequence[str]], Mapping[str, int]]:
        try:
            pod = read_pod(args.pod, self.catalog)
        except WireError:
            return {}, {}
        priority = pod.job.priority if pod is not None else 0
        plan = self.planner.current() or self.planner.plan()
        snapshot = plan.view.snapshot
        by_uid = {job_id.rsplit("@", 1)[-1]: held for job_id, held in snapshot.running.items()}
        lost: dict[str, float] = {}
        for node, uids in args.victims.items():
            if node not in snapshot.nodes or not uids:
                continue
            pool = snapshot.pools[snapshot.nodes[node].pool]
            costs: list[float] = []
            for uid in uids:
                held = by_uid.get(uid)
                if held is None or held.placement.job.priority >= priority:
                    costs = []
                    break  # an unknown or not-lower-priority victim: this node is no candidate
                job = held.placement.job
                # Work lost: half a checkpoint interval on average, else everything since it started.
                elapsed_s = max(0.0, time.time() - held.start_s)
                lost_s = job.checkpoint_interval_s / 2 if job.checkpointable else elapsed_s
                costs.append(costing.gpu_fraction(pool, job.request) * lost_s)
            if costs:
                lost[node] = sum(costs)
        if not lost:
            return {}, {}
        least = min(lost.values())
        kept = {node: args.victims[node] for node, value in sorted(lost.items()) if value == least}
        return kept, {node: args.pdb_violations.get(node, 0) for node in kept}

    def readiness(self) -> tuple[bool, float]:
        age = self.planner.cluster.age_s()
        return age <= self.stale_after_s, age

    def gauges(self) -> Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]:
        plan = self.planner.current()
        if plan is None:
            return {}
        snapshot = plan.view.snapshot
        idle: dict[tuple[tuple[str, str], ...], float] = {}
        for node in snapshot.nodes.values():
            key = (("pool", node.pool),)
            idle[key] = idle.get(key, 0.0) + sum(gpu.free for gpu in node.gpus)
        return {
            "fleetsched_plan_age_seconds": {(): round(time.monotonic() - plan.made_at, 3)},
            "fleetsched_pending_pods": {(): float(sum(map(len, plan.view.pods_of.values())) + len(plan.view.waiting))},
            "fleetsched_committed_usd_per_hour": {(): round(plan.committed_usd_per_hour, 4)},
            "fleetsched_idle_gpus": idle,
        }

