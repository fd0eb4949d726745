"""Leader election over a Lease: acquire, renew, lose, hand over and release, on a fake API server and clock."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import policies
from extender.kubeapi import ApiError, Rest
from extender.lease import AlwaysLeader, LeaderElector, LeaseSettings, lease_namespace
from extender.state import ClusterView
from extender.verbs import GpuExtender
from extender.wire import BindingArgs, ExtenderArgs
from tests.test_k8s_extender import CATALOG, NOW, ON_DEMAND, FakeApi, FakeClock, node, pod


class LeaseServer(Rest):
    """Leases as the API server keeps them: a resourceVersion bumped on every write, a write
    carrying another version refused 409, a create of an existing lease refused 409."""

    def __init__(self) -> None:
        super().__init__("https://unused.invalid", verify=False)
        self.leases: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[str, str]] = []  # (method, holder) of every accepted write
        self.down = False
        self.before_write: Callable[[], object] = lambda: None  # runs between a replica's read and its write
        self.during_read: Callable[[], object] = lambda: None  # runs inside the next GET, before it reads

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        if self.down:
            raise OSError("connection refused")
        if method == "GET":
            hook, self.during_read = self.during_read, lambda: None
            hook()
            name = path.rsplit("/", 1)[1]
            if name not in self.leases:
                raise ApiError(404, f"leases {name!r} not found")
            return copy.deepcopy(self.leases[name])
        hook, self.before_write = self.before_write, lambda: None
        hook()
        name = body["metadata"]["name"]
        if method == "POST" and name in self.leases:
            raise ApiError(409, "already exists")
        if method == "PUT" and body["metadata"].get("resourceVersion") != self.leases[name]["metadata"]["resourceVersion"]:
            raise ApiError(409, "the object has been modified")
        self.version += 1
        self.leases[name] = {**copy.deepcopy(body), "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        self.writes.append((method, body["spec"]["holderIdentity"]))
        return copy.deepcopy(self.leases[name])

    def spec(self) -> dict[str, Any]:
        return dict(self.leases["fleetsched-extender"]["spec"])


SETTINGS = LeaseSettings("fleetsched-extender", "kube-system", "a", lease_duration_s=15.0, renew_deadline_s=10.0,
                         retry_period_s=2.0)


def electors(server: LeaseServer, clock: FakeClock) -> tuple[LeaderElector, LeaderElector]:
    return (LeaderElector(server, SETTINGS, clock),
            LeaderElector(server, LeaseSettings(**{**_fields(SETTINGS), "identity": "b"}), clock))


def _fields(settings: LeaseSettings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in LeaseSettings.__slots__}


def test_the_first_replica_creates_the_lease_and_renews_it_the_other_follows() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    assert a.try_acquire_or_renew() and a.is_leader() and a.term == 1
    assert server.writes == [("POST", "a"), ("PUT", "a")]  # created, then renewed once the cluster was read
    assert server.spec()["leaseDurationSeconds"] == 15 and server.spec()["leaseTransitions"] == 0
    assert not b.try_acquire_or_renew() and not b.is_leader() and b.leader() == "a"
    acquired = server.spec()["acquireTime"]
    clock.monotonic += 2.0
    clock.wall_s += 2.0
    assert a.try_acquire_or_renew() and a.term == 1  # a renewal, not a new term
    assert server.writes == [("POST", "a"), ("PUT", "a"), ("PUT", "a")]
    assert server.spec()["acquireTime"] == acquired and server.spec()["renewTime"] != acquired
    assert server.spec()["leaseTransitions"] == 0


def test_a_leader_that_cannot_renew_stops_at_the_renew_deadline_before_another_may_take_over() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()  # b observes a's record now
    server.down = True
    clock.monotonic += 9.9
    assert a.try_acquire_or_renew() and a.is_leader()  # the renewal failed, but the deadline is not past
    assert server.writes == [("POST", "a"), ("PUT", "a")]
    clock.monotonic += 0.1
    assert not a.is_leader()  # 10 s without a renewal: a stops at once, with no write needed
    server.down = False
    assert not b.try_acquire_or_renew()  # a's record stood 10 s of its 15: not yet b's
    clock.monotonic += 5.0
    assert b.try_acquire_or_renew() and b.is_leader() and b.leader() == "b"
    assert server.spec()["holderIdentity"] == "b" and server.spec()["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew() and not a.is_leader() and a.leader() == "b"


def test_a_record_that_keeps_changing_is_never_taken_over() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    a.try_acquire_or_renew()
    for _ in range(20):  # 40 s, far past the 15 s duration, with a renewing every 2 s
        clock.monotonic += 2.0
        clock.wall_s += 2.0
        assert a.try_acquire_or_renew()
        assert not b.try_acquire_or_renew()
    assert [holder for _, holder in server.writes] == ["a"] * 22  # a term's two writes, then 20 renewals


def test_of_two_replicas_writing_at_once_the_api_server_takes_one() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    a.try_acquire_or_renew()
    clock.monotonic += 10.0
    assert not a.is_leader()
    b.try_acquire_or_renew()  # b observes the record
    clock.monotonic += 15.0  # the lease has expired for both
    # a read the expired lease and is about to write it back when b takes it in between.
    server.before_write = b.try_acquire_or_renew
    assert not a.try_acquire_or_renew() and not a.is_leader()  # a's write carried an old resourceVersion: 409
    assert b.is_leader() and server.spec()["holderIdentity"] == "b"
    assert server.writes == [("POST", "a"), ("PUT", "a"), ("PUT", "b"), ("PUT", "b")]


def test_a_released_lease_is_taken_at_once_and_starts_a_new_term() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    a.release()
    assert not a.is_leader() and server.spec()["holderIdentity"] == ""
    assert b.try_acquire_or_renew() and b.is_leader()  # no waiting out the 15 s
    b.release()
    assert a.try_acquire_or_renew() and a.term == 2


def test_a_new_leader_reads_the_cluster_again_before_it_leads() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    seen: list[bool] = []
    elector = LeaderElector(server, SETTINGS, clock, on_started=lambda: seen.append(elector.is_leader()))
    assert elector.try_acquire_or_renew()
    assert seen == [False]  # it ran before the term began: nothing was answered from the old view


def test_a_follower_answers_nothing_and_says_who_leads() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    waiting = pod("job", 1)
    view = ClusterView((), CATALOG, "fleetsched", clock)
    view.replace("node", [node("od-1", labels=ON_DEMAND)])
    view.replace("pod", [waiting])
    api = FakeApi(view)
    ext = GpuExtender.of(view, api, CATALOG, policies.profile("cost-greedy"), clock=clock, leadership=b)
    a.try_acquire_or_renew()
    b.try_acquire_or_renew()
    assert ext.readiness() == (False, "follower (leader: a)")
    assert ext.filter(ExtenderArgs(waiting, ("od-1",))).error == "fleetsched promises nothing now: follower (leader: a)"
    assert ext.bind(BindingArgs("job", "ml", "uid-job", "od-1")).startswith("fleetsched binds nothing now: follower")
    assert api.bound == {} and not ext.planner.active()
    old = ext.planner.plan()
    a.release()
    assert b.try_acquire_or_renew()
    assert ext.readiness()[0] and ext.planner.active()
    assert ext.filter(ExtenderArgs(waiting, ("od-1",))).node_names == ("od-1",)
    assert ext.planner.current() is not old  # a new term plans afresh
    assert ext.bind(BindingArgs("job", "ml", "uid-job", "od-1")) == "" and api.bound == {"ml/job": "od-1"}
    server.down = True
    clock.monotonic += 10.0  # b cannot renew: it stops binding at once
    assert ext.readiness() == (False, "follower (leader: unknown)")
    assert ext.filter(ExtenderArgs(pod("other", 1), ("od-1",))).error.startswith("fleetsched promises nothing")


def test_the_lease_namespace_comes_from_the_configuration_the_pod_or_kube_system(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POD_NAMESPACE", "scheduling")
    assert lease_namespace("ops") == "ops" and lease_namespace("") == "scheduling"
    monkeypatch.delenv("POD_NAMESPACE")
    account = tmp_path / "namespace"
    monkeypatch.setattr("extender.lease.SERVICE_ACCOUNT_NAMESPACE", account)
    assert lease_namespace("") == "kube-system"  # no service account either
    account.write_text("team-a\n", encoding="utf-8")
    assert lease_namespace("") == "team-a"


def test_a_new_term_calls_on_leading_once_it_answers_and_not_on_renewals() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    calls: list[bool] = []
    elector = LeaderElector(server, SETTINGS, clock, on_leading=lambda: calls.append(elector.is_leader()))
    elector.try_acquire_or_renew()
    clock.monotonic += 2.0
    elector.try_acquire_or_renew()
    assert calls == [True]
    clock.monotonic += 10.0  # not renewed in time: the term ended; the next renewal starts another
    elector.try_acquire_or_renew()
    assert calls == [True, True] and elector.term == 2


def test_a_replica_following_kube_schedulers_lease_campaigns_only_while_its_own_pod_leads() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    following = {**_fields(SETTINGS), "follow": "fleetsched-scheduler"}
    a = LeaderElector(server, LeaseSettings(**following), clock)
    b = LeaderElector(server, LeaseSettings(**{**following, "identity": "b"}), clock)
    assert not a.try_acquire_or_renew() and not b.try_acquire_or_renew()  # no kube-scheduler leads yet
    assert "fleetsched-extender" not in server.leases
    server.leases["fleetsched-scheduler"] = {"metadata": {"name": "fleetsched-scheduler", "resourceVersion": "1"},
                                             "spec": {"holderIdentity": "b_0f6c2a1e-uuid"}}
    assert not a.try_acquire_or_renew() and b.try_acquire_or_renew()  # b's pod holds kube-scheduler's lease
    server.leases["fleetsched-scheduler"]["spec"]["holderIdentity"] = "a_77d1-uuid"  # kube-scheduler moved to a's pod
    assert not b.try_acquire_or_renew() and not b.is_leader()  # b steps down at once...
    assert server.spec()["holderIdentity"] == ""  # ...and releases its lease: a need not wait 15 s
    assert a.try_acquire_or_renew() and a.is_leader() and server.spec()["holderIdentity"] == "a"
    server.leases["fleetsched-scheduler"]["spec"]["holderIdentity"] = "ab_1234"  # a prefix is no match
    assert not a.try_acquire_or_renew() and not a.is_leader()


def test_time_left_counts_down_from_the_last_renewal_to_the_renew_deadline_and_is_zero_for_a_follower() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    assert a.time_left_s() == 0.0  # never led
    assert a.try_acquire_or_renew() and a.time_left_s() == 10.0
    assert not b.try_acquire_or_renew() and b.time_left_s() == 0.0
    clock.monotonic += 3.5
    assert a.time_left_s() == 6.5 and a.is_leader()
    assert a.try_acquire_or_renew() and a.time_left_s() == 10.0  # a renewal restarts the count
    clock.monotonic += 10.0
    assert a.time_left_s() == 0.0 and not a.is_leader()  # zero exactly when it stops counting as leader
    clock.monotonic += 5.0
    assert a.time_left_s() == 0.0  # never negative
    assert a.try_acquire_or_renew() and a.time_left_s() == 10.0
    a.release()
    assert a.time_left_s() == 0.0
    assert AlwaysLeader().time_left_s() == math.inf


def test_a_follower_dates_what_it_read_from_the_answer_not_from_a_slow_request() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    a, b = electors(server, clock)
    start = clock.monotonic
    assert a.try_acquire_or_renew()
    clock.monotonic += 1.0

    def slow_read() -> None:  # b's GET takes 8 s; a renews 7 s into it, and b's answer carries that renewal
        clock.monotonic += 7.0
        clock.wall_s += 7.0
        assert a.try_acquire_or_renew()
        clock.monotonic += 1.0

    server.during_read = slow_read
    assert not b.try_acquire_or_renew()
    # a is cut off after that renewal (at 8 s): it leads until 18 s. b saw the record at 9 s, so
    # it may take the lease at 24 s; dated from its request (1 s), it would have taken it at 16 s.
    for at_s in (15.5, 16.0, 17.9):
        clock.monotonic = start + at_s
        assert a.is_leader() and not b.try_acquire_or_renew(), at_s
    clock.monotonic = start + 18.0
    assert not a.is_leader()
    clock.monotonic = start + 23.9
    assert not b.try_acquire_or_renew()
    clock.monotonic = start + 24.0
    assert b.try_acquire_or_renew() and not a.is_leader() and server.spec()["holderIdentity"] == "b"


def test_a_relist_slower_than_the_renew_deadline_still_starts_a_term_dated_from_the_renewal_after_it() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    relists: list[float] = []

    def slow_relist() -> None:  # a paginated list of a large cluster: 12 s, past the 10 s renew deadline
        relists.append(clock.monotonic)
        clock.monotonic += 12.0

    a = LeaderElector(server, SETTINGS, clock, on_started=slow_relist)
    b = LeaderElector(server, LeaseSettings(**{**_fields(SETTINGS), "identity": "b"}), clock)
    assert a.try_acquire_or_renew() and a.is_leader() and a.term == 1
    assert a.time_left_s() == 10.0  # the term runs from the renewal after the list, not from the create
    assert server.writes == [("POST", "a"), ("PUT", "a")]
    for _ in range(5):
        clock.monotonic += 2.0
        assert a.try_acquire_or_renew() and a.term == 1 and not b.try_acquire_or_renew()
    assert len(relists) == 1  # one list, one term: not a list and a new term at every retry


def test_a_relist_that_fails_gives_the_lease_up_for_another_replica() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)

    def failing_relist() -> None:
        raise OSError("connection reset while listing pods")

    a = LeaderElector(server, SETTINGS, clock, on_started=failing_relist)
    b = LeaderElector(server, LeaseSettings(**{**_fields(SETTINGS), "identity": "b"}), clock)
    assert not a.try_acquire_or_renew() and not a.is_leader() and a.term == 0 and a.time_left_s() == 0.0
    assert server.spec()["holderIdentity"] == ""  # not held by a replica that does not lead
    assert b.try_acquire_or_renew() and b.is_leader()  # at once: no waiting out the 15 s
    assert not a.try_acquire_or_renew() and a.leader() == "b"


def test_a_replica_that_cannot_renew_after_its_relist_does_not_lead() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    b = LeaderElector(server, LeaseSettings(**{**_fields(SETTINGS), "identity": "b"}), clock)

    def relist_outlasting_the_lease() -> None:  # 16 s: the lease expired meanwhile and b took it
        assert not b.try_acquire_or_renew()
        clock.monotonic += 16.0
        assert b.try_acquire_or_renew()

    a = LeaderElector(server, SETTINGS, clock, on_started=relist_outlasting_the_lease)
    assert not a.try_acquire_or_renew() and not a.is_leader() and a.term == 0
    assert b.is_leader() and server.spec()["holderIdentity"] == "b"  # a's giving up left b's lease alone
    assert [holder for _, holder in server.writes] == ["a", "b", "b"]


def test_a_replica_cut_off_during_its_relist_does_not_lead() -> None:
    server, clock = LeaseServer(), FakeClock(NOW)
    lists: list[bool] = []

    def relist() -> None:
        lists.append(server.down)
        server.down = len(lists) == 1  # the first time, the API server goes away once the list is read

    a = LeaderElector(server, SETTINGS, clock, on_started=relist)
    assert not a.try_acquire_or_renew() and not a.is_leader() and a.term == 0
    assert server.writes == [("POST", "a")]  # no renewal, and the release could not be written either
    server.down = False
    clock.monotonic += 2.0
    assert a.try_acquire_or_renew() and a.is_leader() and a.term == 1  # its own lease: renewed, listed, leading
    assert lists == [False, False]
