"""The extender's verbs: filter, prioritize, bind and preempt, answered from the planner's plan.

The `Planner` (`extender.planner`) runs the configured profile over every pending GPU pod
of this scheduler at once. kube-scheduler asks about one pod at a time; `GpuExtender` answers
filter with the planned node alone (every node fails, with the reason, only when none passes),
so the pod lands where the batch placement put it; prioritize gives the planned node the top
score. A gang's pods fail every node, with the reason kube-scheduler shows in the pod's events,
until the whole gang exists and fits; then each gets its planned node.

Bind writes the GPUs granted into the pod's `fleetsched.io/gpus` annotation and creates the
Binding (asked again for a pod on that node already, it succeeds). A gang binds whole
(`extender.gangs`). Before each request a bind makes, it checks this replica still leads in the
bind's term, and gives the request at most the time it still leads and `REQUEST_S` (4 s, under
kube-scheduler's 5 s httpTimeout); a request under way when the lead runs out may still land.
At most `bind_slots` binds that may wait (a gang's member, a pod on a HAMi node) run at once
(`limit_binds`): the others answer an error at once, so filter always has workers.

Only the leader (`extender.lease`) answers, and only from a fresh view: a follower, or a leader
whose view is older than `stale_after_s` (the API server or its watch gone quiet), refuses to
promise anything (filter and bind answer an error, prioritize scores nothing, preempt keeps no
candidate) and reports why on `/readyz`. A new term as leader starts from a fresh plan.
Preempt keeps, of kube-scheduler's candidate nodes, the one the profile's postfilter would
evict on (`LeastWorkLost` when the profile names none: the least work lost, GPU-worth times the
progress since the last checkpoint), never one with a victim of equal or higher priority.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from extender import hami
from extender.gangs import GangBinder, GangOutcome, Member, bind_in_turn
from extender.nodes import device_annotations
from extender.planner import Plan, Planner
from extender.state import GPUS, ClusterView, format_grants
from extender.translate import HeldBy, PodJob, read_pod
from extender.wire import BindingArgs, ExtenderArgs, FilterResult, PreemptionArgs, WireError
from extender.world import AlwaysLeader, Clock, Leadership
from policies.preemption import LeastWorkLost
from scheduler.capacity import gpus_used
from scheduler.catalog import Catalog
from scheduler.decision import Code, Status
from scheduler.framework import Framework
from scheduler.plugin import Cycle, PostFilterPlugin
from scheduler.profile import Profile
from scheduler.world import Scheduler

__all__ = ["AlreadyBound", "GpuExtender", "KubeApi", "Plan", "Planner", "Stopped"]

log = logging.getLogger(__name__)

GANG_CALL_S = 10.0
REQUEST_S = 4.0  # the longest one API request of a bind may take: kube-scheduler's httpTimeout is 5 s


class KubeApi(hami.BindingApi, Protocol):
    """What the extender asks of the API server (a faithful fake stands in for it in tests);
    the node calls of `hami.BindingApi` are made only when binding on a HAMi node."""

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        """Creates the pod's Binding, which also sets `annotations` on the pod (one request, given
        up after `timeout_s`); raises AlreadyBound(node) when the pod is bound already."""
        ...


class AlreadyBound(Exception):  # noqa: N818 - an answer, not a failure
    """The pod is bound already, to `node`."""

    def __init__(self, node: str) -> None:
        self.node = node
        super().__init__(f"already bound to {node}")


class Stopped(Exception):  # noqa: N818 - the binding's answer to kube-scheduler
    """This replica may make no more requests for a binding: it leads no more, or leads anew."""


class GpuExtender:
    """Answers kube-scheduler's verbs from the planner's plan (see the module docstring)."""

    def __init__(
        self,
        planner: Planner,
        api: KubeApi,
        catalog: Catalog,
        *,
        stale_after_s: float = 30.0,
        preemption: Sequence[PostFilterPlugin] = (),
        leadership: Leadership | None = None,
        gang_wait_s: float = 3.0,
    ) -> None:
        self.planner = planner
        self.api = api
        self.catalog = catalog
        self.stale_after_s = stale_after_s
        chosen = tuple(preemption) or (LeastWorkLost(),)
        self.preemption = Framework(replace(planner.scheduler.profile, postfilter=chosen))
        self.leadership: Leadership = leadership or AlwaysLeader()
        planner.active = self.leadership.is_leader  # a follower's planner stays idle
        self.gangs = GangBinder(self._bind_gang, planner.unreserve, planner.clock, wait_s=gang_wait_s)
        self.limit_binds(8)
        self._admitting = frozenset(str(getattr(plugin, "name", type(plugin).__name__))
                                    for plugin in planner.scheduler.profile.admit)  # fmt: skip
        self._term = self.leadership.term
        self._term_lock = threading.Lock()
        # Asks kube-scheduler to try pods again (`extender.kubeapi.requeue`, in the background); None: never.
        self.requeue: Callable[[Sequence[tuple[str, str]]], None] | None = None
        self._called: dict[str, float] = {}  # gang job id -> when its other pods were last asked for
        # Governance on (`extender.guardrails.attach`): told of each Binding made; more gauges.
        self.on_bound: Callable[[BindingArgs], None] | None = None
        self.more_gauges: Callable[[Plan], Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]] | None = None

    @classmethod
    def of(
        cls,
        view: ClusterView,
        api: KubeApi,
        catalog: Catalog,
        profile: Profile,
        *,
        interval_s: float = 1.0,
        stale_after_s: float = 30.0,
        clock: Clock | None = None,
        leadership: Leadership | None = None,
    ) -> GpuExtender:
        """The verbs over a planner for `profile`, as the command runs them: kube-scheduler
        preempts, and the preempt verb asks the profile's postfilter which of its candidates to
        keep, so the plans leave it out (a plan never counts on evicting a pod)."""
        planner = Planner(view, Scheduler(replace(profile, postfilter=()), explain=True), interval_s, clock)
        return cls(planner, api, catalog, stale_after_s=stale_after_s, preemption=profile.postfilter,
                   leadership=leadership)

    def limit_binds(self, slots: int) -> None:
        """At most `slots` binds that may wait (for their gang, for HAMi's lock) in progress at
        once; past them such a bind answers an error at once, so that filter, served by the same
        workers, always has some. Set before serving."""
        self.bind_slots = slots
        self._binds = threading.BoundedSemaphore(slots)

    def refusal(self) -> str:
        """Why this replica must not promise anything now; "" when it may."""
        if not self.leadership.is_leader():
            return f"follower (leader: {self.leadership.leader() or 'unknown'})"
        age = self.planner.cluster.age_s()
        if age > self.stale_after_s:
            return f"not ready: cluster view {age:.1f} s old (stale after {self.stale_after_s:g} s)"
        return ""

    def _may_answer(self) -> str:
        """`refusal()`; when there is none, a new term as leader first forgets the old plan."""
        refused = self.refusal()
        if not refused:
            with self._term_lock:
                if self._term != self.leadership.term:
                    self._term = self.leadership.term
                    self.planner.reset()
                    # The gangs' recorded places are GPUs the new plan may give away.
                    self.gangs.clear("fleetsched began a new term as leader: the gang's places are planned again")
        return refused

    def _plan_for(self, pod: PodJob, raw: Mapping[str, object]) -> Plan:
        plan = self.planner.current()
        uid = pod.uid
        if plan is None or (uid not in plan.view.job_of and uid not in plan.view.waiting and uid not in plan.nodes):
            # A pod the last plan has not seen (kube-scheduler's informer can be ahead of our
            # watch): take it from the request; place it alone on what the plan leaves, or,
            # for a gang's pod or one that fits nowhere, plan everything again.
            if not self.planner.cluster.knows("pod", uid):  # not news from the API server: the view's age stands
                self.planner.cluster.apply("pod", "ADDED", raw, fresh=False)
            if plan is None or self.planner.place_one(pod) is None:
                plan = self.planner.plan()
            else:
                plan = self.planner.current() or plan
        return plan

    def filter(self, args: ExtenderArgs) -> FilterResult:
        try:
            pod = read_pod(args.pod, self.catalog, teams=self.planner.cluster.teams)
        except WireError as error:
            return FilterResult(error=str(error))
        if pod is None:
            return FilterResult(args.node_names)  # no GPU asked: not ours to decide
        refused = self._may_answer()
        if refused:
            return FilterResult(error=f"fleetsched promises nothing now: {refused}")
        self.gangs.sweep()
        plan = self._plan_for(pod, args.pod)
        known = plan.view.snapshot.nodes
        unknown = {name: "not a GPU node fleetsched knows" for name in args.node_names if name not in known}
        waiting = plan.view.waiting.get(pod.uid)
        if waiting is not None:
            failed = {name: str(waiting) for name in args.node_names if name in known}
            return FilterResult((), failed, unknown)
        pending = plan.decision.pending.get(plan.view.job_of.get(pod.uid, ""))
        admitted = pending is None or pending.status.plugin not in self._admitting  # a guardrail: not alone either
        target = plan.nodes.get(pod.uid)
        if (target is None or target[0] not in args.node_names) and pod.gang is None and admitted:
            # The plan has no place for the pod (a binding the plan had not counted took it), or
            # kube-scheduler's own filters turned the planned node down (its cache can count a
            # pod our mirror has not seen yet): the pod goes alone onto a node it offered.
            target = self.planner.place_one(pod, args.node_names)
        if target is not None and target[0] in args.node_names:
            # Only the planned node passes. The others need no reason: kube-scheduler reads the
            # reasons only when no node passes (for the pod's events and for preemption), and
            # 999 of them cost both sides more than the rest of the reply.
            if pod.gang is not None:
                self._call_gang(plan, pod)
            return FilterResult((target[0],))
        return self._explain(plan, pod.uid, args, unknown)

    def _call_gang(self, plan: Plan, pod: PodJob) -> None:
        """A gang's pod has its place: the other pods of its gang, turned away while it was
        incomplete, are asked for again now (else they wait up to 90 s in kube-scheduler's
        unschedulable queue while this pod's place waits for them). Once per gang in 10 s."""
        job_id = plan.view.job_of.get(pod.uid)
        if self.requeue is None or job_id is None:
            return
        recorded = self.gangs.recorded().get(f"{pod.namespace}/{pod.gang}", frozenset())
        others = [(p.namespace, p.name) for p in plan.view.pods_of.get(job_id, ()) if p.uid not in recorded | {pod.uid}]
        now = self.planner.clock.monotonic_s()
        with self._term_lock:
            if not others or now - self._called.get(job_id, -GANG_CALL_S) < GANG_CALL_S:
                return
            self._called[job_id] = now
            for gang in [g for g, at in self._called.items() if now - at >= GANG_CALL_S]:
                del self._called[gang]
        self.requeue(others)

    def _explain(self, plan: Plan, uid: str, args: ExtenderArgs, unknown: Mapping[str, str]) -> FilterResult:
        job_id = plan.view.job_of.get(uid, "")
        pending = plan.decision.pending.get(job_id)
        if pending is None and job_id in plan.jobs:  # held back by the queue's bound: asked now
            pending = self.planner.explain(plan.jobs[job_id])
        reason = str(pending.status) if pending is not None else "no node fits in the current plan"
        closed = {v.pool for v in (pending.verdicts if pending else ()) if v.status.code is Code.UNRESOLVABLE}
        # Denied at admission (a guardrail): no node will ever do, and no preemption would help.
        denied = pending is not None and not pending.verdicts and pending.status.code is Code.UNRESOLVABLE
        snapshot = plan.view.snapshot
        why = {v.pool: str(v.status) for v in (pending.verdicts if pending else ()) if not v.status.ok}  # per pool
        failed: dict[str, str] = {}
        unresolvable = dict(unknown)
        for name in args.node_names:
            if name in snapshot.nodes:
                pool = snapshot.nodes[name].pool
                told = f"{reason} ({why[pool]})" if pool in why and why[pool] != reason else reason
                (unresolvable if denied or pool in closed else failed)[name] = told
        return FilterResult((), failed, unresolvable)

    def prioritize(self, args: ExtenderArgs) -> Mapping[str, float]:
        try:
            pod = read_pod(args.pod, self.catalog, teams=self.planner.cluster.teams)
        except WireError:
            return dict.fromkeys(args.node_names, 0.0)
        plan = self.planner.current() if not self.refusal() else None
        target = plan.nodes.get(pod.uid) if plan is not None and pod is not None else None
        # Nodes left out of the reply score nothing: only the planned node needs a line.
        return {target[0]: 10.0} if target is not None and target[0] in args.node_names else {}

    def bind(self, args: BindingArgs) -> str:
        refused = self._may_answer()
        if refused:
            return f"fleetsched binds nothing now: {refused}"
        return self._bind(args)

    def _bind(self, args: BindingArgs) -> str:
        where = f"pod {args.pod_namespace}/{args.pod_name} on {args.node}"
        self.gangs.sweep()
        if self.planner.current() is None:
            self.planner.plan()
        pod = self.planner.cluster.pod(args.pod_uid)
        if pod is None:
            return f"fleetsched cannot place {where}: it does not know the pod"
        if pod.node_name:  # bound already (a gang's pod by the call that bound its gang)
            return "" if pod.node_name == args.node else f"pod is bound to {pod.node_name} already"
        grants = self.planner.reserve(pod, args.node)
        if grants is None:  # kube-scheduler chose another node and the plan has no room there
            self.planner.plan()
            grants = self.planner.reserve(pod, args.node)
        if grants is None:
            return f"fleetsched cannot place {where}: the node has no free capacity for it"
        annotations = {GPUS: format_grants(grants)}
        info = self.planner.cluster.node_info(args.node)
        if info is not None:  # a device plugin told the chosen GPUs (HAMi) gets its annotations too
            annotations.update(device_annotations(info, pod, grants, self.planner.clock.now_s()))
        # Only a bind that may wait takes a slot (a gang's member, for its gang; a HAMi node's, for
        # the lock): a plain one is a single request, and refusing it would only slow a burst.
        waits = pod.gang is not None or hami.NODE in annotations
        if waits and not self._binds.acquire(blocking=False):
            self.planner.unreserve(pod.uid)
            return f"fleetsched is busy: {self.bind_slots} binds are waiting; kube-scheduler retries this pod"
        try:
            if pod.gang is not None:
                return self._bind_member(pod, args, annotations)
            return self._bind_one(args, annotations, self._budget(self.leadership.term))
        finally:
            if waits:
                self._binds.release()

    def _bind_member(self, pod: PodJob, args: BindingArgs, annotations: Mapping[str, str]) -> str:
        """A gang's pod, its GPUs reserved: bound with its whole gang, once every member has a place."""
        plan = self.planner.current()
        job_id = plan.view.job_of.get(pod.uid) if plan is not None else None
        if plan is None or job_id is None:
            self.planner.unreserve(pod.uid)
            return f"fleetsched cannot place pod {pod.namespace}/{pod.name}: its gang is not planned whole"
        # Its unbound pods: the plan can predate a Binding of the gang's (a partial bind, retried).
        seen = [self.planner.cluster.pod(member.uid) for member in plan.view.pods_of[job_id]]
        members = [member.uid for member, now in zip(plan.view.pods_of[job_id], seen, strict=True)
                   if now is None or not now.node_name]  # fmt: skip
        return self.gangs.bind(f"{pod.namespace}/{pod.gang}", members, args, annotations)

    def _budget(self, term: int) -> hami.Budget:
        """Seconds the next request of a binding begun in `term` may take: the time this replica
        still leads, at most REQUEST_S; raises Stopped when it leads no more (or leads anew)."""

        def next_request_s() -> float:
            left_s = self.leadership.time_left_s() if self.leadership.is_leader() else 0.0
            if left_s <= 0.0 or self.leadership.term != term:
                raise Stopped(f"this replica no longer leads its term {term} "
                              f"(leader: {self.leadership.leader() or 'unknown'})")  # fmt: skip
            return min(left_s, REQUEST_S)

        return next_request_s

    def _bind_one(self, args: BindingArgs, annotations: Mapping[str, str], budget: hami.Budget,
                  held: bool | None = None, wait_s: float | None = None) -> str:  # fmt: skip
        """Creates one pod's Binding with its GPUs reserved already; "" or why not. `held`,
        `wait_s`: HAMi's node lock as `hami.bind_pod` takes them."""
        where = f"pod {args.pod_namespace}/{args.pod_name} on {args.node}"
        try:
            hami.bind_pod(self.api, self.planner.clock, args, annotations, budget=budget, held=held,
                          wait_s=wait_s)  # on a HAMi node, under HAMi's node lock
        except AlreadyBound as bound:
            if bound.node == args.node:
                return ""
            self.planner.unreserve(args.pod_uid)
            return f"pod is bound to {bound.node} already"
        except Exception as error:  # the API server said no: kube-scheduler retries the pod
            self.planner.unreserve(args.pod_uid)
            log.warning("binding %s failed: %s", where, error)
            return f"binding failed: {error}"
        # Until the watch brings the bound pod back, the view holds it where it went.
        self.planner.cluster.bound(args.pod_uid, args.node, annotations)
        if self.on_bound is not None:
            self.on_bound(args)
        return ""

    def _bind_gang(self, places: Sequence[Member]) -> GangOutcome:
        """A whole gang's Bindings (`extender.gangs.bind_in_turn`), within one term's lead."""
        return bind_in_turn(places, self.api, self.planner.clock, self._budget(self.leadership.term), self._bind_one,
                            time.monotonic() + self.gangs.call_s)  # fmt: skip

    def preempt(self, args: PreemptionArgs) -> tuple[Mapping[str, Sequence[str]], Mapping[str, int]]:
        """Of kube-scheduler's candidate nodes, the one the profile's postfilter would evict on,
        with kube-scheduler's victims there. A node with a victim the mirror does not know, or
        whose victims are not all of lower priority, is no candidate."""
        try:
            pod = read_pod(args.pod, self.catalog, teams=self.planner.cluster.teams)
        except WireError:
            return {}, {}
        if pod is None:  # not a GPU pod: kube-scheduler's candidates stand
            return args.victims, args.pdb_violations
        if self._may_answer():
            return {}, {}
        plan = self.planner.current() or self.planner.plan()
        snapshot = plan.view.snapshot
        held = {HeldBy.parse(job_id).uid: job_id for job_id in snapshot.running}
        rejected: dict[str, Status] = {}
        keep: set[str] = set()
        for node, uids in args.victims.items():
            ids = [held.get(uid) for uid in uids]
            if node not in snapshot.nodes or not uids or None in ids:
                continue
            if any(snapshot.running[str(i)].placement.job.priority >= pod.job.priority for i in ids):
                continue
            rejected[node] = Status.unschedulable("kube-scheduler would evict here")
            keep.update(str(i) for i in ids)
        # The postfilter weighs kube-scheduler's victims alone: every other pod on a candidate
        # node stays where it is, so the cluster it is shown holds only those.
        shown = snapshot
        for job_id in sorted(snapshot.running):
            if job_id not in keep and any(r.node in rejected for r in snapshot.running[job_id].placement.replicas):
                shown = shown.release(job_id)
        victims = self.preemption.postfilter(Cycle(self.planner.clock.now_s(), shown), pod.job, rejected)
        nodes = {r.node for v in victims for r in shown.running[v.job].placement.replicas if r.node in rejected}
        kept = {node: args.victims[node] for node in sorted(nodes)}
        return kept, {node: args.pdb_violations.get(node, 0) for node in kept}

    def readiness(self) -> tuple[bool, str]:
        """Whether this replica answers (the leader, with a fresh view), and a line saying so."""
        refused = self.refusal()
        return not refused, refused or f"ready: cluster view {self.planner.cluster.age_s():.1f} s old"

    def gauges(self) -> Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]:
        plan = self.planner.current()
        if plan is None:
            return {}
        snapshot = plan.view.snapshot
        idle: dict[tuple[tuple[str, str], ...], float] = {}
        for node in snapshot.nodes.values():  # a cordoned node takes no pod: its free GPUs are not idle capacity
            key = (("pool", node.pool),)  # a MIG GPU's free slices count as the GPU's fraction they are
            free = len(node.gpus) - gpus_used(snapshot.pools[node.pool], node) if node.ready else 0.0
            idle[key] = round(idle.get(key, 0.0) + free, 4)
        return {
            **(self.more_gauges(plan) if self.more_gauges is not None else {}),
            "fleetsched_plan_age_seconds": {(): round(self.planner.clock.monotonic_s() - plan.made_at, 3)},
            "fleetsched_pending_pods": {(): float(sum(map(len, plan.view.pods_of.values())) + len(plan.view.waiting))},
            "fleetsched_committed_usd_per_hour": {(): round(plan.committed_usd_per_hour, 4)},
            "fleetsched_idle_gpus": idle,
        }

