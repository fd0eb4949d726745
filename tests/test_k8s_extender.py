"""The extender's view of a cluster (nodes to pools, bound and pending pods) and its answers."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

import policies
from extender.nodes import PoolRule, read_node
from extender.state import GPUS, UNCONFIRMED_S, ClusterView, parse_grants
from extender.verbs import AlreadyBound, GpuExtender
from extender.wire import BindingArgs, ExtenderArgs, PreemptionArgs
from scheduler.catalog import default_catalog
from scheduler.model import Capacity, Grant, MigMode, RequestKind

CATALOG = default_catalog()
SCHEDULER = "fleetsched"


def node(name: str, gpus: int = 8, *, labels: Mapping[str, str] | None = None, ready: bool = True,
         allocatable: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", **(labels or {})}},
        "spec": {},
        "status": {
            "allocatable": dict(allocatable) if allocatable is not None else {"nvidia.com/gpu": str(gpus), "cpu": "96"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(name: str, gpus: int = 1, *, uid: str | None = None, node_name: str = "", labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None, priority: int = 0, scheduler: str = SCHEDULER,
        resources: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ml", "uid": uid or f"uid-{name}", "labels": dict(labels or {}),
                     "annotations": dict(annotations or {}), "creationTimestamp": CREATED},
        "spec": {"schedulerName": scheduler, "priority": priority, "nodeName": node_name or None,
                 "containers": [{"name": "main", "resources": {"requests": dict(resources or {"nvidia.com/gpu": str(gpus)})}}]},
        "status": {"phase": "Running" if node_name else "Pending"},
    }


SPOT = {"karpenter.sh/capacity-type": "spot", "node.kubernetes.io/instance-type": "p5.48xlarge",
        "karpenter.k8s.aws/instance-gpu-name": "h100"}
ON_DEMAND = {**SPOT, "karpenter.sh/capacity-type": "on-demand"}


class FakeApi:
    """Records annotations and bindings as the API server would apply them."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view
        self.annotations: dict[str, dict[str, str]] = {}
        self.bound: dict[str, str] = {}
        self.timeouts: list[float] = []  # each Binding request's timeout_s

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        self.timeouts.append(timeout_s)
        key = f"{namespace}/{name}"
        if key in self.bound:
            raise AlreadyBound(self.bound[key])
        self.bound[key] = node
        self.annotations.setdefault(key, {}).update(annotations)


class FakeClock:
    """The extender's clock, set by the test: wall time NOW (an hour after the pods were made)
    and a monotonic time that moves only when told."""

    def __init__(self, now_s: float) -> None:
        self.wall_s = now_s
        self.monotonic = 1000.0

    def now_s(self) -> float:
        return self.wall_s

    def monotonic_s(self) -> float:
        return self.monotonic


CREATED = "2026-11-27T03:00:00Z"
NOW = datetime.fromisoformat("2026-11-27T04:00:00+00:00").timestamp()


def extender(nodes: list[dict[str, Any]], pods: list[dict[str, Any]], profile: str = "cost-greedy",
             rules: tuple[PoolRule, ...] = (), clock: FakeClock | None = None) -> tuple[GpuExtender, ClusterView, FakeApi]:
    clock = clock or FakeClock(NOW)
    view = ClusterView(rules, CATALOG, SCHEDULER, clock)
    view.replace("node", nodes)
    view.replace("pod", pods)
    api = FakeApi(view)
    return GpuExtender.of(view, api, CATALOG, policies.profile(profile), clock=clock), view, api


def test_nodes_become_pools_from_standard_labels_and_catalog_prices() -> None:
    info = read_node(node("spot-1", labels=SPOT), (), CATALOG)
    assert info is not None and info.ready
    assert info.pool.capacity is Capacity.SPOT and info.pool.gpus_per_node == 8
    assert info.pool.usd_per_node_hour == CATALOG.prices["aws:p5.48xlarge:spot"].usd_per_hour
    assert info.pool.name == "auto/H100-80GB/p5.48xlarge/spot"
    gke = read_node(node("g-1", labels={"cloud.google.com/gke-spot": "true"}), (), CATALOG)
    assert gke is not None and gke.pool.capacity is Capacity.SPOT and gke.pool.usd_per_node_hour == 0.0
    assert "unpriced" in gke.pool.price_source
    assert read_node(node("cpu", allocatable={"cpu": "8"}), (), CATALOG) is None
    assert read_node(node("odd", labels={"nvidia.com/gpu.product": "Quantum-Q1"}), (), CATALOG) is None


def test_configured_pools_win_and_carry_their_price() -> None:
    rule = PoolRule("team-a100", {"pool": "a"}, usd_per_node_hour=12.5, gpu="A100-80GB", sharing=True)
    info = read_node(node("a-1", 4, labels={"pool": "a"}), (rule,), CATALOG)
    assert info is not None and info.pool.name == "team-a100" and info.pool.sharing
    assert info.pool.usd_per_node_hour == 12.5 and info.pool.gpu.name == CATALOG.resolve("A100-80GB").name


def test_a_mixed_strategy_mig_node_becomes_a_fixed_layout() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "2"}
    info = read_node(node("mig-1", labels=labels, allocatable={"nvidia.com/mig-3g.20gb": "2", "nvidia.com/mig-1g.5gb": "8"}),
                     (), CATALOG)
    assert info is not None and info.pool.mig_mode is MigMode.FIXED and info.pool.gpus_per_node == 2
    profiles = sorted(instance.profile for instance in info.pool.mig_layout)
    assert profiles == ["1g.5gb"] * 4 + ["3g.20gb"]


def test_bound_pods_hold_their_annotated_gpus_and_pending_pods_become_jobs() -> None:
    bound = pod("old", 2, node_name="n-1", annotations={GPUS: "4,5"})
    _, view, _ = extender([node("n-1", labels=ON_DEMAND)], [bound, pod("new", 1), pod("other", 1, scheduler="default-scheduler")])
    seen = view.view()
    gpus = seen.snapshot.nodes["n-1"].gpus
    assert [index for index, gpu in enumerate(gpus) if not gpu.free] == [4, 5]
    assert [job.id for job in seen.pending] == ["ml/new"]
    assert parse_grants("3@4,0") == (Grant(3, 4), Grant(0))
    with pytest.raises(ValueError, match="is not like"):
        parse_grants("a,b")


def test_a_pod_bound_without_the_annotation_never_takes_gpus_another_pod_was_given() -> None:
    # The unannotated pod's UID sorts first: were its GPUs guessed first, it would take GPU 0,
    # the annotated pod would no longer fit, and its GPU would look free to the planner.
    guessed = pod("plain", 1, uid="a-plain", node_name="n-1", scheduler="default-scheduler")
    written = [pod(f"ours-{n}", 1, uid=f"b-{n}", node_name="n-1", annotations={GPUS: str(n)}) for n in range(7)]
    _, view, _ = extender([node("n-1", labels=ON_DEMAND)], [guessed, *written])
    seen = view.view()
    assert seen.problems == {}
    assert [gpu.free for gpu in seen.snapshot.nodes["n-1"].gpus] == [False] * 8
    assert len(seen.snapshot.running) == 8


def test_a_gang_waits_until_every_pod_exists_then_is_one_job() -> None:
    gang = {"fleetsched.io/gang": "trainer"}
    size = {"fleetsched.io/gang-size": "2"}
    first = pod("t-0", 8, labels=gang, annotations=size)
    ext, view, _ = extender([node("n-1", labels=ON_DEMAND), node("n-2", labels=ON_DEMAND)], [first])
    reply = ext.filter(ExtenderArgs(first, ("n-1", "n-2")))
    waiting = "gang trainer: 1 of 2 pods exist"
    assert reply.node_names == () and reply.failed == {"n-1": waiting, "n-2": waiting}
    second = pod("t-1", 8, labels=gang, annotations=size)
    view.replace("pod", [first, second])
    ext.planner.plan()
    one, two = ext.filter(ExtenderArgs(first, ("n-1", "n-2"))), ext.filter(ExtenderArgs(second, ("n-1", "n-2")))
    assert {one.node_names[0], two.node_names[0]} == {"n-1", "n-2"}
    (job,) = view.view().pending
    assert job.replicas == 2 and job.id == "ml/gang:trainer"


def test_filter_keeps_the_planned_node_and_says_why_not_the_others() -> None:
    nodes = [node("spot-1", labels=SPOT), node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND)]
    firm = pod("firm", 2)
    ext, _, _ = extender(nodes, [firm])
    reply = ext.filter(ExtenderArgs(firm, ("spot-1", "od-1", "od-2", "cpu-9")))
    assert reply.node_names in (("od-1",), ("od-2",))
    assert reply.failed == {} and reply.unresolvable == {}  # reasons only when no node passes
    scores = ext.prioritize(ExtenderArgs(firm, ("od-1", "od-2")))
    assert scores == {reply.node_names[0]: 10.0}  # nodes left out score nothing
    assert ext.filter(ExtenderArgs(pod("cpu-only", resources={"cpu": "2"}), ("od-1",))).node_names == ("od-1",)
    broken = pod("broken", resources={"nvidia.com/gpu": "0.5"})
    assert "must be a whole number" in ext.filter(ExtenderArgs(broken, ("od-1",))).error


def test_a_pod_that_fits_nowhere_fails_every_node_and_wrong_pools_are_unresolvable() -> None:
    nodes = [node("spot-1", labels=SPOT), node("od-1", 2, labels=ON_DEMAND)]
    big = pod("big", 4)  # not preemptible: spot is closed to it; od-1 is too small
    ext, _, _ = extender(nodes, [big])
    reply = ext.filter(ExtenderArgs(big, ("spot-1", "od-1", "cpu-9")))
    assert reply.node_names == ()
    assert set(reply.failed) | set(reply.unresolvable) == {"spot-1", "od-1", "cpu-9"}
    assert "spot-1" in reply.unresolvable and reply.unresolvable["cpu-9"] == "not a GPU node fleetsched knows"


def test_a_planned_node_kube_scheduler_turned_down_gives_way_to_one_it_offered() -> None:
    # kube-scheduler's cache can count a pod the mirror has not seen: it then leaves the
    # planned node out of the request, and the pod goes alone onto a node it did offer.
    nodes = [node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND)]
    first = pod("first", 2)
    ext, _, api = extender(nodes, [first])
    planned = ext.planner.plan().nodes["uid-first"][0]
    other = "od-2" if planned == "od-1" else "od-1"
    reply = ext.filter(ExtenderArgs(first, (other,)))
    assert reply.node_names == (other,)
    assert ext.bind(BindingArgs("first", "ml", "uid-first", other)) == ""
    assert api.bound == {"ml/first": other} and len(parse_grants(api.annotations["ml/first"][GPUS])) == 2


def test_bind_writes_the_planned_gpus_and_is_idempotent() -> None:
    job = pod("job", 2)
    ext, _, api = extender([node("od-1", labels=ON_DEMAND)], [job])
    target = ext.filter(ExtenderArgs(job, ("od-1",))).node_names[0]
    args = BindingArgs("job", "ml", "uid-job", target)
    assert ext.bind(args) == ""
    assert api.bound == {"ml/job": "od-1"} and api.annotations["ml/job"] == {GPUS: "0,1"}
    assert ext.bind(args) == ""  # asked again: already there, fine
    assert ext.bind(BindingArgs("job", "ml", "uid-job", "od-9")) == "pod is bound to od-1 already"


def test_preempt_keeps_the_node_whose_victims_lose_least_and_never_higher_priority() -> None:
    nodes = [node("od-1", 2, labels=ON_DEMAND), node("od-2", 2, labels=ON_DEMAND), node("od-3", 2, labels=ON_DEMAND)]
    saver = pod("saver", 2, node_name="od-1", annotations={GPUS: "0,1", "fleetsched.io/checkpoint-interval-s": "60"})
    long_run = pod("long", 2, node_name="od-2", annotations={GPUS: "0,1"})
    boss = pod("boss", 2, node_name="od-3", annotations={GPUS: "0,1"}, priority=100)
    urgent = pod("urgent", 2, priority=10)
    ext, _, _ = extender(nodes, [saver, long_run, boss, urgent])
    victims = {"od-1": ("uid-saver",), "od-2": ("uid-long",), "od-3": ("uid-boss",)}
    kept, violations = ext.preempt(PreemptionArgs(urgent, victims, dict.fromkeys(victims, 0)))
    assert kept == {"od-1": ("uid-saver",)} and violations == {"od-1": 0}
    # Work lost counts from when the pod started: one that started five seconds ago loses less
    # than one that checkpoints every ten minutes (five on average).
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 5))
    fresh = {**pod("fresh", 2, node_name="od-2", annotations={GPUS: "0,1"}), "status": {"phase": "Running", "startTime": started}}
    slow = pod("slow", 2, node_name="od-1", annotations={GPUS: "0,1", "fleetsched.io/checkpoint-interval-s": "600"})
    ext, _, _ = extender(nodes, [slow, fresh, urgent])
    victims = {"od-1": ("uid-slow",), "od-2": ("uid-fresh",)}
    assert ext.preempt(PreemptionArgs(urgent, victims, dict.fromkeys(victims, 0)))[0] == {"od-2": ("uid-fresh",)}


def test_readiness_follows_the_age_of_the_view_and_gauges_report_the_plan() -> None:
    clock = FakeClock(NOW)
    ext, view, _ = extender([node("od-1", labels=ON_DEMAND)], [pod("a", 1)], clock=clock)
    assert ext.readiness() == (True, "ready: cluster view 0.0 s old")
    clock.monotonic += 31.0  # the default stale_after_s is 30
    assert ext.readiness() == (False, "not ready: cluster view 31.0 s old (stale after 30 s)")
    ext.planner.plan()
    clock.monotonic += 2.5
    gauges = ext.gauges()
    assert gauges["fleetsched_plan_age_seconds"] == {(): 2.5}
    assert gauges["fleetsched_idle_gpus"] == {(("pool", view.view().snapshot.nodes["od-1"].pool),): 8.0}
    assert gauges["fleetsched_committed_usd_per_hour"][()] > 0
    assert gauges["fleetsched_pending_pods"][()] == 1.0


def test_idle_gpus_count_free_mig_slices_and_leave_out_cordoned_nodes() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "1"}
    mig = node("mig-1", labels=labels, allocatable={"nvidia.com/mig-1g.5gb": "7"})  # 7 free 1g.5gb: a whole GPU
    cordoned = node("od-2", labels=ON_DEMAND)
    cordoned["spec"] = {"unschedulable": True}
    ext, view, _ = extender([mig, node("od-1", labels=ON_DEMAND), cordoned], [pod("a", 1)])
    ext.planner.plan()
    nodes = view.view().snapshot.nodes
    idle = ext.gauges()["fleetsched_idle_gpus"]
    assert idle[(("pool", nodes["mig-1"].pool),)] == 1.0  # it read 0: no MIG GPU is ever "free"
    assert idle[(("pool", nodes["od-1"].pool),)] == 8.0  # od-2, cordoned, is in the same pool and adds nothing


def test_share_and_mig_pods_read_through_to_requests() -> None:
    share = pod("s", resources={}, annotations={"fleetsched.io/gpu-milli": "250", "fleetsched.io/gpu-memory-mib": "4096"})
    share["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    mig = pod("m", resources={"nvidia.com/mig-1g.5gb": "1"})
    _, view, _ = extender([node("od-1", labels=ON_DEMAND)], [share, mig])
    kinds = {job.id: job.request.kind for job in view.view().pending}
    assert kinds == {"ml/s": RequestKind.SHARE, "ml/m": RequestKind.MIG}


def test_a_pass_that_read_the_mirror_before_a_binding_never_gives_its_gpus_away() -> None:
    # The pass that follows a binding can have read the mirror before it: it sees the bound
    # pod still pending, its GPU free. The held binding wins; a pod planned onto that GPU is
    # taken out of the plan and gets a per-pod answer on another one.
    nodes = [node("n-1", 2, labels=ON_DEMAND)]
    first = pod("first", 1)
    ext, view, api = extender(nodes, [first])
    plan = ext.planner.plan()
    (gpu,) = plan.nodes["uid-first"][1]
    assert ext.planner.reserve(view.pod("uid-first"), "n-1") == (gpu,)  # type: ignore[arg-type]
    urgent = pod("urgent", 1, priority=100)  # a new pod that a pass places first, on the first GPU free
    view.apply("pod", "ADDED", urgent)
    plan = ext.planner.plan()  # the binding of `first` is not in the mirror yet
    assert plan.after.nodes["n-1"].gpus[gpu.gpu].owner == "ml/first@uid-first"
    assert "uid-urgent" not in plan.nodes  # it was planned onto that GPU: out of the plan
    assert ext.filter(ExtenderArgs(urgent, ("n-1",))).node_names == ("n-1",)
    assert ext.bind(BindingArgs("urgent", "ml", "uid-urgent", "n-1")) == ""
    assert parse_grants(api.annotations["ml/urgent"][GPUS]) != (gpu,)


def test_a_binding_moves_the_guessed_gpus_of_a_pod_another_scheduler_bound() -> None:
    # Which GPU a pod bound by another scheduler holds is a guess: a binding of ours to that
    # GPU, not yet in the mirror, moves the guess instead of being lost.
    nodes = [node("n-1", 2, labels=ON_DEMAND)]
    ours = pod("ours", 1)
    ext, view, _ = extender(nodes, [ours])
    (gpu,) = ext.planner.plan().nodes["uid-ours"][1]
    ext.planner.reserve(view.pod("uid-ours"), "n-1")  # type: ignore[arg-type]
    view.apply("pod", "ADDED", pod("theirs", 1, uid="a-theirs", node_name="n-1", scheduler="default-scheduler"))
    plan = ext.planner.plan()
    assert plan.view.guessed == {"ml/theirs@a-theirs"}
    owners = [state.owner for state in plan.after.nodes["n-1"].gpus]
    assert owners[gpu.gpu] == "ml/ours@uid-ours" and "ml/theirs@a-theirs" in owners


def test_a_pod_the_queue_held_back_is_explained_when_kube_scheduler_asks() -> None:
    """Two nodes take two 8-GPU pods: a pass is shown only those, and the third pod, held back,
    still gets every node's reason (which kube-scheduler shows and preemption reads)."""
    nodes = [node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND), node("od-small", 4, labels=ON_DEMAND)]
    pods = [pod(f"big-{n}", 8) for n in range(3)]
    ext, _, _ = extender(nodes, pods)
    plan = ext.planner.plan()
    assert sorted(node_name for node_name, _ in plan.nodes.values()) == ["od-1", "od-2"]
    held = next(p for p in pods if p["metadata"]["uid"] not in plan.nodes)
    assert plan.view.job_of[held["metadata"]["uid"]] not in plan.decision.pending, "held back, not decided on"
    reply = ext.filter(ExtenderArgs(held, ("od-1", "od-2", "od-small")))
    assert reply.node_names == ()
    assert reply.failed == dict.fromkeys(("od-1", "od-2"), "no node fits (WholeGpuFit: 0 of 8 GPUs free)")  # why, per pool
    assert reply.unresolvable == {"od-small": "no node fits (WholeGpuFit: replica needs 8 GPUs; node has 4)"}  # never


def test_preempt_asks_the_profiles_postfilter() -> None:
    """Under the `priority` profile only preemptible pods of lower priority are victims: the node
    whose pod is not preemptible is no candidate, whatever it would lose."""
    nodes = [node("od-1", 2, labels=ON_DEMAND), node("od-2", 2, labels=ON_DEMAND)]
    firm = pod("firm", 2, node_name="od-1", annotations={GPUS: "0,1", "fleetsched.io/checkpoint-interval-s": "60"})
    loose = pod("loose", 2, node_name="od-2", annotations={GPUS: "0,1"}, labels={"fleetsched.io/preemptible": "true"})
    urgent = pod("urgent", 2, priority=10)
    victims = {"od-1": ("uid-firm",), "od-2": ("uid-loose",)}
    args = PreemptionArgs(urgent, victims, dict.fromkeys(victims, 0))
    default, _, _ = extender(nodes, [firm, loose, urgent])
    assert default.preempt(args)[0] == {"od-1": ("uid-firm",)}, "LeastWorkLost: the pod that saves loses least"
    strict, _, _ = extender(nodes, [firm, loose, urgent], profile="priority")
    assert strict.preempt(args)[0] == {"od-2": ("uid-loose",)}


def test_a_pod_known_only_from_a_filter_request_stops_holding_gpus_once_the_api_server_never_shows_it() -> None:
    clock = FakeClock(NOW)
    ext, view, _ = extender([node("od-1", labels=ON_DEMAND)], [], clock=clock)
    phantom = pod("phantom", 8)  # asked about, never created (or deleted before the watch saw it)
    assert ext.filter(ExtenderArgs(phantom, ("od-1",))).node_names == ("od-1",)
    real = pod("real", 8)
    view.apply("pod", "ADDED", real)
    assert ext.filter(ExtenderArgs(real, ("od-1",))).node_names == ()  # the plan holds od-1 for the phantom
    clock.monotonic += UNCONFIRMED_S + 1
    view.touch("node")
    view.touch("pod")  # the watch is alive and has not shown the phantom
    ext.planner.plan()  # the planner's next pass (its loop plans again when the view changed)
    assert ext.filter(ExtenderArgs(real, ("od-1",))).node_names == ("od-1",)
    assert [job.id for job in view.view().pending] == ["ml/real"]
    # a pod the watch confirms in time is kept however long it waits
    confirmed = pod("confirmed", 8)
    ext.filter(ExtenderArgs(confirmed, ("od-1",)))
    view.apply("pod", "ADDED", confirmed)
    clock.monotonic += UNCONFIRMED_S + 1
    view.touch("node")
    view.touch("pod")
    assert sorted(job.id for job in view.view().pending) == ["ml/confirmed", "ml/real"]


def test_a_plan_that_counts_gpus_an_ended_pod_freed_asks_for_the_turned_away_pods_again() -> None:
    bound = pod("done-soon", 8, node_name="od-1", annotations={GPUS: "0,1,2,3,4,5,6,7"})
    waiting = pod("waiting", 8)
    ext, view, _ = extender([node("od-1", labels=ON_DEMAND)], [bound, waiting])
    asked: list[int] = []
    ext.planner.on_freed = lambda: asked.append(len(view.unbound()))
    ext.planner.plan()
    assert asked == []  # nothing freed yet
    view.apply("pod", "MODIFIED", {**bound, "status": {"phase": "Succeeded"}})
    ext.planner.plan()
    assert asked == [1]  # once, after the plan that counts od-1 free
    ext.planner.plan()
    view.apply("pod", "DELETED", {**bound, "status": {"phase": "Succeeded"}})  # it had ended: nothing more freed
    ext.planner.plan()
    assert asked == [1]
    assert ext.filter(ExtenderArgs(waiting, ("od-1",))).node_names == ("od-1",)


def test_pods_are_asked_for_again_at_most_every_10_s_however_many_pods_end(monkeypatch: pytest.MonkeyPatch) -> None:
    import extender.main as main_module

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(main_module, "_in_background", lambda call, *args: calls.append(args))
    clock = FakeClock(NOW)
    view = ClusterView((), CATALOG, SCHEDULER, clock)
    view.replace("pod", [pod("waiting", 1)])
    ask_again = main_module._on_freed(object(), view, clock)  # type: ignore[arg-type]
    for step_s in (0.0, 5.0, 6.0, 3.0):  # at 0, 5, 11 and 14 s
        clock.monotonic += step_s
        ask_again()
    assert [args[1] for args in calls] == [[("ml", "waiting")], [("ml", "waiting")]]  # at 0 and 11 s


def test_a_gang_with_more_pods_than_its_size_binds_none_and_says_why() -> None:
    gang, size = {"fleetsched.io/gang": "over"}, {"fleetsched.io/gang-size": "3"}
    members = [pod(f"o-{n}", 1, labels=gang, annotations=size) for n in range(4)]
    ext, _, _ = extender([node("n-1", labels=ON_DEMAND)], members)
    reply = ext.filter(ExtenderArgs(members[0], ("n-1",)))
    assert reply.node_names == () and reply.failed == {"n-1": "gang over: 4 pods for a gang of 3 (gang-size)"}
