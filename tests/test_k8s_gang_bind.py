"""How a whole gang is bound: every HAMi node lock it needs taken before its first Binding, a
node's second member bound only after HAMi's device plugin let go of the first's lock, the
leadership checked before every request and each request's timeout capped at the time left
leading, and no more binds in progress than the workers can spare."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import Any

import policies
from extender import hami
from extender.kubeapi import ApiError
from extender.state import ClusterView
from extender.verbs import REQUEST_S, GpuExtender
from extender.wire import BindingArgs, ExtenderArgs
from tests.test_k8s_extender import CATALOG, NOW, ON_DEMAND, FakeApi, FakeClock, extender, node, pod
from tests.test_k8s_hami_lock import LockingApi
from tests.test_k8s_node_modes import HAMI_LABELS, REGISTER, gfd_node

GANG = {"fleetsched.io/gang": "trainer"}


def member(index: int, gpus: int = 1) -> dict[str, Any]:
    return pod(f"trainer-{index}", gpus, labels=GANG, annotations={"fleetsched.io/gang-size": "2"})


def bind(ext: GpuExtender, index: int, node_name: str) -> str:
    return ext.bind(BindingArgs(f"trainer-{index}", "ml", f"uid-trainer-{index}", node_name))


class FakeLeadership:
    """A leadership the test steers: whether it leads, its term, and the seconds it has left."""

    def __init__(self) -> None:
        self.leading = True
        self.term = 1
        self.left_s = math.inf

    def is_leader(self) -> bool:
        return self.leading

    def leader(self) -> str:
        return "" if self.leading else "other"

    def time_left_s(self) -> float:
        return self.left_s if self.leading else 0.0


class PluginApi(LockingApi):
    """LockingApi with HAMi's device plugin: once a pod is bound under a node's lock, the plugin
    allocates it and releases the lock after `allocate_after` reads of the node (None: never).
    `events` lists lock writes and Bindings in order."""

    def __init__(self, view: ClusterView, nodes: list[dict[str, Any]]) -> None:
        super().__init__(view, nodes)
        self.pods |= {"ml/trainer-0", "ml/trainer-1"}
        self.allocate_after: int | None = 0
        self.reads_since_bind: dict[str, int] = {}
        self.events: list[str] = []
        self.node_timeouts: list[float] = []
        self.after_lock: Any = lambda: None

    def get_node(self, name: str, *, timeout_s: float) -> Mapping[str, Any]:
        self.node_timeouts.append(timeout_s)
        lock = self.lock(name)
        if lock is not None and f"ml/{lock.rsplit(',', 1)[-1]}" in self.bound and self.allocate_after is not None:
            reads = self.reads_since_bind.get(name, 0)
            if reads >= self.allocate_after:
                self.write(name, {hami.LOCK: None})  # allocated: the plugin lets go of the lock
                self.events.append(f"plugin released {name}")
            self.reads_since_bind[name] = reads + 1
        return super().get_node(name, timeout_s=timeout_s)

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None], resource_version: str, *,
                               timeout_s: float) -> None:  # fmt: skip
        super().patch_node_annotations(name, annotations, resource_version, timeout_s=timeout_s)
        value = annotations.get(hami.LOCK)
        self.events.append(f"lock {name} for {value.rsplit(',', 1)[-1]}" if value else f"unlock {name}")
        if value:
            self.after_lock()

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        super().bind_pod(namespace, name, uid, node, annotations, timeout_s=timeout_s)
        self.events.append(f"bind {name} on {node}")
        self.reads_since_bind[node] = 0


def hami_gang(nodes: tuple[str, ...] = ("hami-1",), gpus: int = 1) -> tuple[GpuExtender, PluginApi, list[str]]:
    """Gang trainer (two pods of `gpus` GPUs) over HAMi nodes of two GPUs each, and where filter
    sends each member."""
    made = [gfd_node(name, HAMI_LABELS, {"nvidia.com/gpu": "20"}, {hami.REGISTER: REGISTER}) for name in nodes]
    members = [member(0, gpus), member(1, gpus)]
    ext, view, _ = extender(made, members)
    api = PluginApi(view, made)
    ext.api = api
    ext.gangs.wait_s = 5.0
    return ext, api, [ext.filter(ExtenderArgs(raw, nodes)).node_names[0] for raw in members]


def bind_both(ext: GpuExtender, nodes: list[str]) -> dict[int, str]:
    """trainer-0's bind waits with its place recorded; trainer-1's completes the gang."""
    answers: dict[int, str] = {}
    first = threading.Thread(target=lambda: answers.__setitem__(0, bind(ext, 0, nodes[0])))
    first.start()
    while not ext.gangs.recorded():
        threading.Event().wait(0.01)
    answers[1] = bind(ext, 1, nodes[1])
    first.join(10)
    return answers


def test_two_members_on_one_hami_node_bind_in_turn_each_under_its_own_lock() -> None:
    ext, api, nodes = hami_gang()
    assert nodes == ["hami-1", "hami-1"]
    assert bind_both(ext, nodes) == {0: "", 1: ""}
    assert api.bound == {"ml/trainer-0": "hami-1", "ml/trainer-1": "hami-1"}
    # The lock names one pod, the one HAMi's plugin allocates: the second waits for the first's allocation.
    assert api.events == ["lock hami-1 for trainer-0", "bind trainer-0 on hami-1", "plugin released hami-1",
                          "lock hami-1 for trainer-1", "bind trainer-1 on hami-1"]  # fmt: skip
    devices = {api.annotations[f"ml/trainer-{i}"][hami.TO_ALLOCATE] for i in (0, 1)}
    assert devices == {"GPU-aaa,NVIDIA,24000,100:;", "GPU-bbb,NVIDIA,24000,100:;"}


def test_every_hami_lock_of_the_gang_is_taken_before_its_first_binding() -> None:
    ext, api, nodes = hami_gang(("hami-1", "hami-2"), gpus=2)  # two GPUs each: one member per node
    api.allocate_after = None  # the plugin allocates nothing: each node's lock stays with its pod
    assert sorted(nodes) == ["hami-1", "hami-2"]
    assert bind_both(ext, nodes) == {0: "", 1: ""}
    assert api.events == [f"lock {nodes[0]} for trainer-0", f"lock {nodes[1]} for trainer-1",
                          f"bind trainer-0 on {nodes[0]}", f"bind trainer-1 on {nodes[1]}"]  # fmt: skip
    assert api.lock("hami-1") is not None and api.lock("hami-2") is not None  # left for the plugin


def test_a_lock_the_gang_cannot_take_binds_no_member_and_keeps_the_places(monkeypatch: Any) -> None:
    monkeypatch.setattr(hami, "TIMING", hami.LockTiming(wait_s=0.2, retry_s=0.01))
    ext, api, nodes = hami_gang(("hami-1", "hami-2"), gpus=2)
    rival = "2026-11-27T04:00:00Z,ml,rival"
    second = nodes[1]
    api.write(second, {hami.LOCK: rival})  # another pod is being allocated on trainer-1's node
    answers = bind_both(ext, nodes)
    why = f"binding failed before any of its gang was bound: node {second} is locked by HAMi ({hami.LOCK}={rival})"
    assert answers[0].startswith(why) and answers[1] == answers[0]
    assert api.bound == {} and api.lock(nodes[0]) is None  # the lock taken on the first node is given back
    assert ext.gangs.recorded() == {"ml/trainer": frozenset({"uid-trainer-0", "uid-trainer-1"})}
    assert ext.planner.held() == {"uid-trainer-0", "uid-trainer-1"}
    api.write(second, {hami.LOCK: None})  # the rival's pod is allocated
    assert bind(ext, 1, second) == ""  # kube-scheduler's retry: both places still recorded, the gang binds
    assert api.bound == {"ml/trainer-0": nodes[0], "ml/trainer-1": second}


def test_a_plugin_slower_than_the_call_leaves_the_second_member_to_kube_schedulers_retry() -> None:
    ext, api, nodes = hami_gang()
    api.allocate_after = None  # trainer-0 is not allocated within the call: its lock stays
    ext.gangs.call_s = 0.3
    answers = bind_both(ext, nodes)
    assert answers[0] == ""
    assert answers[1].startswith(f"binding failed: node hami-1 is locked by HAMi ({hami.LOCK}=")
    assert api.bound == {"ml/trainer-0": "hami-1"}  # the one partial bind this cannot exclude
    assert ext.planner.held() == {"uid-trainer-0"}  # trainer-1's GPU is free again, trainer-0's held
    api.allocate_after = 0  # the plugin allocates trainer-0 and lets go of the lock
    assert ext.filter(ExtenderArgs(member(1), ("hami-1",))).node_names == ("hami-1",)
    assert bind(ext, 1, "hami-1") == ""  # kube-scheduler's retry binds the gang's last pod alone
    assert api.bound == {"ml/trainer-0": "hami-1", "ml/trainer-1": "hami-1"}


class RefusingApi(FakeApi):
    """The API server with an admission webhook that refuses the Bindings of `refused` pods,
    and a hook run after each Binding."""

    def __init__(self, view: ClusterView) -> None:
        super().__init__(view)
        self.refused: set[str] = set()
        self.after_bind: Any = lambda name: None

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        if name in self.refused:
            raise ApiError(400, f'admission webhook "quota" denied the request: {name}')
        super().bind_pod(namespace, name, uid, node, annotations, timeout_s=timeout_s)
        self.after_bind(name)


def led(lead: FakeLeadership, pods: list[dict[str, Any]]) -> tuple[GpuExtender, RefusingApi]:
    """An extender under `lead` over on-demand node od-1 (8 GPUs), `pods` filtered onto it."""
    clock = FakeClock(NOW)
    _, view, _ = extender([node("od-1", labels=ON_DEMAND)], pods, clock=clock)
    api = RefusingApi(view)
    ext = GpuExtender.of(view, api, CATALOG, policies.profile("cost-greedy"), clock=clock, leadership=lead)
    ext.gangs.wait_s = 5.0
    assert [ext.filter(ExtenderArgs(raw, ("od-1",))).node_names for raw in pods] == [("od-1",)] * len(pods)
    return ext, api


def test_a_binding_the_api_server_refuses_after_another_was_made_leaves_that_one_bound() -> None:
    ext, api = led(FakeLeadership(), [member(0), member(1)])
    api.refused = {"trainer-1"}
    answers = bind_both(ext, ["od-1", "od-1"])
    assert answers == {0: "", 1: 'binding failed: HTTP 400: admission webhook "quota" denied the request: trainer-1'}
    assert api.bound == {"ml/trainer-0": "od-1"} and ext.planner.held() == {"uid-trainer-0"}
    api.refused = set()
    assert ext.filter(ExtenderArgs(member(1), ("od-1",))).node_names == ("od-1",)
    assert bind(ext, 1, "od-1") == ""  # kube-scheduler's retry; trainer-0 kept its place meanwhile
    assert api.bound == {"ml/trainer-0": "od-1", "ml/trainer-1": "od-1"}


def test_leadership_lost_between_two_members_stops_before_the_second_binding() -> None:
    lead = FakeLeadership()
    lead.left_s = 2.5
    ext, api = led(lead, [member(0), member(1)])
    api.after_bind = lambda name: setattr(lead, "leading", False)  # the lease runs out after the first
    answers = bind_both(ext, ["od-1", "od-1"])
    assert answers == {0: "", 1: "binding failed: this replica no longer leads its term 1 (leader: other)"}
    assert api.bound == {"ml/trainer-0": "od-1"} and api.timeouts == [2.5]  # capped at the time left leading


def test_a_new_term_between_two_members_stops_before_the_second_binding() -> None:
    lead = FakeLeadership()
    ext, api = led(lead, [member(0), member(1)])
    api.after_bind = lambda name: setattr(lead, "term", 2)  # lost and taken again: a fresh plan rules
    answers = bind_both(ext, ["od-1", "od-1"])
    assert answers[1] == "binding failed: this replica no longer leads its term 1 (leader: unknown)"
    assert api.bound == {"ml/trainer-0": "od-1"} and api.timeouts == [REQUEST_S]  # never over 4 s


def test_every_request_of_a_hami_binding_is_capped_and_checks_the_lead() -> None:
    ext, api, nodes = hami_gang()
    lead = FakeLeadership()
    lead.left_s = 1.5
    ext.leadership = lead
    api.after_lock = lambda: setattr(lead, "leading", False)  # lost between taking the lock and binding
    stopped = "binding failed: this replica no longer leads its term 1 (leader: other)"
    assert bind_both(ext, nodes) == {0: stopped, 1: stopped}
    assert api.bound == {} and api.lock() is None  # no Binding; the lock taken for it is given back
    assert api.node_timeouts == [1.5, hami.RELEASE_TIMEOUT_S]  # the lock read within the lead; its release always


def test_places_kept_by_a_gang_whose_locks_a_new_term_interrupted_are_forgotten() -> None:
    ext, api, nodes = hami_gang(("hami-1", "hami-2"), gpus=2)
    lead = FakeLeadership()
    ext.leadership = lead

    def new_term() -> None:  # after the first lock: the lead is lost and taken again, and a filter comes
        api.after_lock = lambda: None
        lead.term = 2
        ext.filter(ExtenderArgs(member(0, 2), tuple(nodes)))

    api.after_lock = new_term
    answers = bind_both(ext, nodes)
    stopped = "binding failed before any of its gang was bound: this replica no longer leads its term 1"
    assert answers[0].startswith(stopped) and answers[1] == answers[0]
    assert ext.gangs.recorded() == {} and ext.planner.held() == set()  # not recorded again for the new term
    assert api.bound == {} and api.lock("hami-1") is None and api.lock("hami-2") is None
