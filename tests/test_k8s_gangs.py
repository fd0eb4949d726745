"""Gangs bind whole: no member is bound until every member has a granted place."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from extender.state import GPUS, ClusterView, parse_grants
from extender.verbs import GpuExtender
from extender.wire import BindingArgs, ExtenderArgs
from tests.test_k8s_extender import NOW, ON_DEMAND, FakeApi, FakeClock, extender, node, pod
from tests.test_k8s_gang_bind import FakeLeadership, led
from tests.test_k8s_gang_bind import member as small

GANG = {"fleetsched.io/gang": "trainer"}


def member(index: int, size: int = 2) -> dict[str, Any]:
    return pod(f"trainer-{index}", 4, labels=GANG, annotations={"fleetsched.io/gang-size": str(size)})


def planned(ext: GpuExtender, members: list[dict[str, Any]], nodes: tuple[str, ...]) -> list[str]:
    """Where filter sends each member (as kube-scheduler asks, one pod at a time)."""
    return [ext.filter(ExtenderArgs(raw, nodes)).node_names[0] for raw in members]


def bind(ext: GpuExtender, index: int, node_name: str) -> str:
    return ext.bind(BindingArgs(f"trainer-{index}", "ml", f"uid-trainer-{index}", node_name))


def first_member_waits(ext: GpuExtender) -> tuple[threading.Thread, list[str]]:
    """trainer-0's bind on od-1 in a thread of its own, once its place is recorded: the thread, and its answer to come."""
    answer: list[str] = []
    waiting = threading.Thread(target=lambda: answer.append(bind(ext, 0, "od-1")))
    waiting.start()
    while not ext.gangs.recorded():
        threading.Event().wait(0.01)
    return waiting, answer


def test_a_member_waits_for_the_whole_gang_and_the_last_binds_them_all() -> None:
    members = [member(0), member(1)]
    ext, _, api = extender([node("od-1", labels=ON_DEMAND)], members)
    ext.gangs.wait_s = 0.2
    assert planned(ext, members, ("od-1",)) == ["od-1", "od-1"]
    answer = bind(ext, 0, "od-1")
    assert answer == "gang ml/trainer: 1 of 2 pods have a place; none is bound until all do"
    assert api.bound == {}  # its place is recorded, not bound
    assert bind(ext, 1, "od-1") == ""
    assert api.bound == {"ml/trainer-0": "od-1", "ml/trainer-1": "od-1"}
    grants = [set(parse_grants(api.annotations[f"ml/trainer-{i}"][GPUS])) for i in (0, 1)]
    assert len(grants[0]) == len(grants[1]) == 4 and not grants[0] & grants[1]
    assert bind(ext, 0, "od-1") == ""  # kube-scheduler retries the pod it was told to wait: bound already


def test_members_binding_at_once_are_answered_when_the_last_has_its_place() -> None:
    members = [member(i, 3) for i in range(3)]
    ext, _, api = extender([node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND)], members)
    ext.gangs.wait_s = 10.0
    nodes = planned(ext, members, ("od-1", "od-2"))
    answers: dict[int, str] = {}
    waiting = [threading.Thread(target=lambda i=i: answers.__setitem__(i, bind(ext, i, nodes[i]))) for i in (0, 1)]
    for thread in waiting:
        thread.start()
    while sum(map(len, ext.gangs.recorded().values())) < 2:  # both wait with their places recorded
        threading.Event().wait(0.01)
    assert api.bound == {}
    assert bind(ext, 2, nodes[2]) == ""
    for thread in waiting:
        thread.join(5)
    assert answers == {0: "", 1: ""}
    assert api.bound == {f"ml/trainer-{i}": nodes[i] for i in range(3)}


def test_a_gang_whose_last_member_cannot_be_placed_leaves_no_member_bound() -> None:
    clock = FakeClock(NOW)
    members = [member(0), member(1)]
    ext, view, api = extender([node("od-1", labels=ON_DEMAND), node("od-2", 2, labels=ON_DEMAND)], members,
                              clock=clock)
    ext.gangs.wait_s = 0.1
    assert planned(ext, members, ("od-1", "od-2")) == ["od-1", "od-1"]
    assert bind(ext, 0, "od-1").startswith("gang ml/trainer: 1 of 2")
    # kube-scheduler's own filters sent the last member elsewhere, where the gang has no place.
    assert bind(ext, 1, "od-2").startswith("fleetsched cannot place pod ml/trainer-1 on od-2")
    assert api.bound == {}
    assert ext.gangs.recorded() == {"ml/trainer": frozenset({"uid-trainer-0"})}
    assert ext.planner.held() == {"uid-trainer-0"}
    clock.monotonic += 119.0
    view.touch("node")
    view.touch("pod")
    ext.filter(ExtenderArgs(members[1], ("od-1", "od-2")))
    assert ext.planner.held() == {"uid-trainer-0"}  # held for 120 s
    clock.monotonic += 2.0  # past hold_s: the recorded place is given back, and nothing is bound
    view.touch("node")
    view.touch("pod")
    assert planned(ext, members, ("od-1", "od-2")) == ["od-1", "od-1"]
    assert ext.gangs.recorded() == {} and ext.planner.held() == set() and api.bound == {}
    ext.gangs.wait_s = 5.0
    first, answer = first_member_waits(ext)
    assert bind(ext, 1, "od-1") == ""  # this time the whole gang has places: both are bound
    first.join(5)
    assert answer == [""] and api.bound == {"ml/trainer-0": "od-1", "ml/trainer-1": "od-1"}


def test_a_gang_member_the_plan_does_not_place_whole_is_never_bound() -> None:
    lone = member(0)  # its gang of 2 has one pod so far: it waits, and bind refuses it
    ext, _, api = extender([node("od-1", labels=ON_DEMAND)], [lone])
    assert ext.filter(ExtenderArgs(lone, ("od-1",))).node_names == ()
    assert bind(ext, 0, "od-1").startswith("fleetsched cannot place pod ml/trainer-0")
    assert api.bound == {} and isinstance(api, FakeApi)


def test_a_member_given_its_place_asks_for_the_rest_of_its_gang_again_once_in_a_while() -> None:
    clock = FakeClock(NOW)
    members = [member(i, 3) for i in range(3)]
    ext, view, _ = extender([node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND)], members, clock=clock)
    asked: list[list[tuple[str, str]]] = []
    ext.requeue = lambda pods: asked.append(list(pods))
    ext.gangs.wait_s = 0.05
    nodes = planned(ext, members[:1], ("od-1", "od-2"))
    assert asked == [[("ml", "trainer-1"), ("ml", "trainer-2")]]  # turned away before: asked for again
    planned(ext, members[1:2], ("od-1", "od-2"))
    assert len(asked) == 1  # not again within 10 s
    bind(ext, 0, nodes[0])  # trainer-0's place is recorded: it needs no call
    clock.monotonic += 10.0
    view.touch("node")
    view.touch("pod")
    planned(ext, members[2:], ("od-1", "od-2"))
    assert asked[1:] == [[("ml", "trainer-1")]]


class SlowApi(FakeApi):
    """The API server taking `delay_s` for each Binding."""

    def __init__(self, view: ClusterView, delay_s: float) -> None:
        super().__init__(view)
        self.delay_s = delay_s

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        time.sleep(self.delay_s)
        super().bind_pod(namespace, name, uid, node, annotations, timeout_s=timeout_s)


def slow_gang(delay_s: float, call_s: float) -> tuple[GpuExtender, SlowApi, dict[int, str]]:
    """trainer-0's bind waits (0.1 s, `call_s` while its Binding is made) while trainer-1's binds
    the gang, each Binding taking `delay_s`; each one's answer."""
    members = [member(0), member(1)]
    ext, view, _ = extender([node("od-1", labels=ON_DEMAND)], members)
    api = SlowApi(view, delay_s)
    ext.api = api
    ext.gangs.wait_s = 0.1
    ext.gangs.call_s = call_s
    assert planned(ext, members, ("od-1",)) == ["od-1", "od-1"]
    answers: dict[int, str] = {}
    waiting = threading.Thread(target=lambda: answers.__setitem__(0, bind(ext, 0, "od-1")))
    waiting.start()
    while not ext.gangs.recorded():
        threading.Event().wait(0.01)
    answers[1] = bind(ext, 1, "od-1")
    waiting.join(5)
    return ext, api, answers


def test_a_member_whose_binding_is_being_created_waits_for_it_within_the_call() -> None:
    _, api, answers = slow_gang(0.3, call_s=3.0)  # the gang takes 0.6 s to bind, past the 0.1 s wait
    assert answers == {0: "", 1: ""}  # trainer-0 is told its Binding succeeded, not that it has no place
    assert api.bound == {"ml/trainer-0": "od-1", "ml/trainer-1": "od-1"}


def test_a_member_whose_binding_outlasts_the_call_is_not_told_it_has_no_place() -> None:
    ext, api, answers = slow_gang(0.4, call_s=0.2)  # the call ends before trainer-0's Binding is made
    assert answers == {0: "gang ml/trainer: this pod's Binding is still being created; asked again, it is bound",
                       1: ""}  # fmt: skip
    assert api.bound == {"ml/trainer-0": "od-1", "ml/trainer-1": "od-1"}
    assert bind(ext, 0, "od-1") == ""  # kube-scheduler's retry finds it bound


def test_a_new_term_forgets_recorded_places_and_answers_their_waiting_calls() -> None:
    lead = FakeLeadership()
    ext, api = led(lead, [small(0), small(1)])
    waiting, answer = first_member_waits(ext)
    lead.term = 2  # lost the lead and took it again: the planner forgets its held GPUs
    assert ext.filter(ExtenderArgs(small(1), ("od-1",))).node_names == ("od-1",)
    waiting.join(5)
    assert answer == ["fleetsched began a new term as leader: the gang's places are planned again"]
    assert ext.gangs.recorded() == {} and ext.planner.held() == set()
    ext.gangs.wait_s = 0.05
    # trainer-1 no longer completes the gang: trainer-0's place from the last term is gone, nothing is bound
    assert bind(ext, 1, "od-1") == "gang ml/trainer: 1 of 2 pods have a place; none is bound until all do"
    assert api.bound == {}


def test_binds_past_the_limit_answer_at_once_so_filter_keeps_its_workers() -> None:
    ext, api = led(FakeLeadership(), [small(0), small(1), pod("plain", 1)])
    ext.limit_binds(1)
    ext.gangs.wait_s = 0.5
    waiting, answer = first_member_waits(ext)
    started = time.monotonic()
    assert bind(ext, 1, "od-1") == "fleetsched is busy: 1 binds are waiting; kube-scheduler retries this pod"
    assert time.monotonic() - started < 0.2 and api.bound == {}
    assert ext.planner.held() == {"uid-trainer-0"}  # the refused member's GPUs are not kept for it
    assert ext.filter(ExtenderArgs(small(1), ("od-1",))).node_names == ("od-1",)  # filter is not held up
    assert ext.bind(BindingArgs("plain", "ml", "uid-plain", "od-1")) == ""  # a plain bind never waits: no slot
    assert api.bound == {"ml/plain": "od-1"}
    waiting.join(5)
    assert answer == ["gang ml/trainer: 1 of 2 pods have a place; none is bound until all do"]
    assert bind(ext, 1, "od-1") == "" and api.bound == {"ml/plain": "od-1", "ml/trainer-0": "od-1",
                                                         "ml/trainer-1": "od-1"}
