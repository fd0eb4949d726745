"""The extender's guardrails on the fakes: teams, reservations and settlements, held pods told why, approvals, the book kept."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from extender.events import EventPoster
from extender.governance_api import Approval, read_spend_state
from extender.guardrails import EVENT_EVERY_S, Guardrails, attach
from extender.server import Metrics
from extender.translate import TeamRule, read_pod
from extender.verbs import GpuExtender
from extender.wire import BindingArgs, ExtenderArgs
from scheduler.catalog import default_catalog
from scheduler.governance_file import load_governance
from scheduler.spend import SpendBook
from tests.test_k8s_extender import NOW, ON_DEMAND, FakeApi, FakeClock, extender, node, pod
from tests.test_k8s_node_modes import FakeEvents

CATALOG = default_catalog()
GPU_HOUR_USD = CATALOG.prices["aws:p5.48xlarge:on-demand"].usd_per_hour / 8  # one H100 of a p5.48xlarge
HOUR = {"fleetsched.io/runtime-limit-s": "3600"}
GOVERNANCE = """
default_runtime_s = 7200
team_from = "namespace"
[[queue]]
name = "ml"
[[budget]]
name = "ml-month"
team = "ml"
period = "month"
usd = 10
action = "hold"
[[approval]]
name = "big"
above_gpus = 4
"""


class FakeStore:
    """The ConfigMap and the approvals, as `extender.governance_api.GovernanceStore` keeps them."""

    def __init__(self, text: str | None = None) -> None:
        self.text = text
        self.writes = 0
        self.items: list[Approval] = []
        self.reachable = True

    def read_spend(self) -> str | None:
        if not self.reachable:
            raise OSError("API server away")
        return self.text

    def write_spend(self, text: str) -> None:
        self.text = text
        self.writes += 1

    def approvals(self) -> list[Approval]:
        return list(self.items)


Governed = tuple[GpuExtender, FakeApi, Guardrails, FakeStore, FakeEvents, FakeClock]


def governed(tmp_path: Path, pods: list[dict[str, Any]], text: str = GOVERNANCE, store: FakeStore | None = None,
             gpus: int = 8) -> Governed:  # fmt: skip
    path = tmp_path / "governance.toml"
    path.write_text(text, encoding="utf-8")
    clock = FakeClock(NOW)
    ext, _, api = extender([node("od-1", gpus, labels=ON_DEMAND)], pods, profile="governed", clock=clock)
    store = store or FakeStore()
    events = FakeEvents()
    guard = Guardrails(load_governance(path), clock, store, EventPoster(events, background=False))
    with contextlib.suppress(OSError):  # as extender.main starts: an API server away is read later
        guard.load()
    attach(ext, guard)
    return ext, api, guard, store, events, clock


def bind(ext: GpuExtender, name: str) -> str:
    return ext.bind(BindingArgs(name, "ml", f"uid-{name}", "od-1"))


def test_the_team_comes_from_the_namespace_or_the_label_the_file_names() -> None:
    raw = pod("a", labels={"fleetsched.io/team": "vision", "owner": "nlp"})
    assert read_pod(raw, CATALOG).job.labels.team == "vision"  # type: ignore[union-attr]
    assert read_pod(raw, CATALOG, teams=TeamRule("namespace")).job.labels.team == "ml"  # type: ignore[union-attr]
    assert read_pod(raw, CATALOG, teams=TeamRule("label", "owner")).job.labels.team == "nlp"  # type: ignore[union-attr]
    assert read_pod(pod("b"), CATALOG, teams=TeamRule("label", "owner")).job.labels.team == ""  # type: ignore[union-attr]


def test_a_bind_reserves_the_estimate_and_the_next_pod_is_held_with_the_reason_and_one_event(tmp_path: Path) -> None:
    first, second = pod("first", annotations=HOUR), pod("second", annotations=HOUR)
    ext, api, guard, _, events, clock = governed(tmp_path, [first, second])
    assert ext.filter(ExtenderArgs(first, ("od-1",))).node_names == ("od-1",)
    held = ext.filter(ExtenderArgs(second, ("od-1",)))
    # The pass admitted the first (not bound yet): the second's estimate would pass the budget.
    assert held.node_names == () and held.failed["od-1"].startswith(
        f"BudgetGuard: budget ml-month: ${GPU_HOUR_USD:,.2f} of $10.00 committed in 2026-11")
    assert bind(ext, "first") == "" and api.bound == {"ml/first": "od-1"}
    assert guard.book.committed("ml-month", "2026-11") == pytest.approx(GPU_HOUR_USD)  # 1 GPU for the hour declared
    ext.planner.plan()
    reason = ext.filter(ExtenderArgs(second, ("od-1",))).failed["od-1"]
    assert f"${GPU_HOUR_USD:,.2f} of $10.00 committed in 2026-11" in reason
    events.posted = [e for e in events.posted if e[1]["name"] == "second"]
    assert [(e[1]["uid"], e[2]) for e in events.posted] == [("uid-second", "BudgetGuard")]
    assert events.posted[0][3].startswith("fleetsched holds the pod: BudgetGuard: budget ml-month")
    ext.planner.plan()
    clock.monotonic += EVENT_EVERY_S - 1
    ext.planner.plan()
    assert len(events.posted) == 1  # not again within a minute
    clock.monotonic += 1
    ext.planner.plan()
    assert len(events.posted) == 2


def test_a_pod_that_ends_is_settled_to_its_actual_cost_and_the_held_pod_is_asked_for_again(tmp_path: Path) -> None:
    first, second = pod("first", annotations=HOUR), pod("second", annotations=HOUR)
    ext, _, guard, _, _, clock = governed(tmp_path, [first, second])
    asked: list[list[tuple[str, str]]] = []
    ext.requeue = lambda pods: asked.append(list(pods))
    ext.filter(ExtenderArgs(first, ("od-1",)))
    assert bind(ext, "first") == ""
    ext.planner.plan()
    guard.tick(ext.planner, ext.requeue)  # the first tick: the periods are new, nothing else changed
    asked.clear()
    clock.wall_s += 900  # it ran a quarter of its declared hour
    ext.planner.cluster.apply("pod", "DELETED", {**first, "spec": {**first["spec"], "nodeName": "od-1"}})
    guard.tick(ext.planner, ext.requeue)
    assert guard.book.spent[("ml-month", "2026-11")] == pytest.approx(GPU_HOUR_USD / 4)
    assert guard.book.committed("ml-month", "2026-11") == pytest.approx(GPU_HOUR_USD / 4)
    assert asked == [[("ml", "second")]]
    assert ext.filter(ExtenderArgs(second, ("od-1",))).node_names == ("od-1",)


def test_a_pod_held_for_approval_binds_once_approved_and_is_denied_once_rejected(tmp_path: Path) -> None:
    big, other = pod("big", 8), pod("other", 8)
    ext, _, guard, store, events, _ = governed(tmp_path, [big, other], GOVERNANCE.replace("usd = 10", "usd = 1000"))
    asked: list[list[tuple[str, str]]] = []
    ext.requeue = lambda pods: asked.append(list(pods))
    reply = ext.filter(ExtenderArgs(big, ("od-1",)))
    assert reply.failed == {"od-1": "ApprovalGate: waiting for approval (big)"}
    guard.tick(ext.planner, ext.requeue)
    store.items = [Approval("pod.ml.big", "ml/big", True, "eval", "alice"),
                   Approval("pod.ml.other", "ml/other", False, "too dear", "bob")]
    guard.tick(ext.planner, ext.requeue)
    assert asked == [[("ml", "big")]]
    assert ext.filter(ExtenderArgs(big, ("od-1",))).node_names == ("od-1",)
    denied = ext.filter(ExtenderArgs(other, ("od-1",)))
    assert denied.unresolvable == {"od-1": "ApprovalGate: approval rejected (big)"}
    assert ("uid-other", "ApprovalGateDenied") in {(e[1]["uid"], e[2]) for e in events.posted}


def test_the_book_is_written_when_it_changed_at_most_every_persist_s_and_read_back(tmp_path: Path) -> None:
    first = pod("first", annotations=HOUR)
    ext, _, guard, store, _, clock = governed(tmp_path, [first])
    assert guard.save() is False and store.writes == 0  # nothing changed
    ext.filter(ExtenderArgs(first, ("od-1",)))
    bind(ext, "first")
    assert guard.save() is True and store.writes == 1
    guard.book.reserve("ml/x@uid-x", "ml", "2026-11", [("ml-month", "2026-11")], 1.0)
    guard._dirty = True  # as a bind marks it
    assert guard.save() is False  # changed, but written less than persist_s ago
    clock.monotonic += guard.persist_s
    assert guard.save() is True and store.writes == 2
    assert store.text is not None
    book_json, started = read_spend_state(store.text)
    assert list(started) == ["ml/first@uid-first"] and started["ml/first@uid-first"][0] == NOW
    assert started["ml/first@uid-first"][1] == pytest.approx(GPU_HOUR_USD)
    again = Guardrails(guard.rules, clock, store)
    again.load()
    assert again.book.to_json() == guard.book.to_json() == SpendBook.from_json(book_json).to_json()


def test_nothing_is_written_before_the_stored_book_was_read(tmp_path: Path) -> None:
    store = FakeStore('{"book": {"version": 1, "spent": [["ml-month", "2026-11", 9.5]], "team_spent": [], "open": {}},'
                      ' "started": {}}')
    store.reachable = False
    ext, _, guard, _, _, _ = governed(tmp_path, [pod("late")], store=store)
    assert not guard.loaded
    late, info = ext.planner.cluster.pod("uid-late"), ext.planner.cluster.node_info("od-1")
    assert late is not None and info is not None
    guard.started(late, info.pool)  # a bind while the API server was away
    assert guard.save(force=True) is False and store.writes == 0
    store.reachable = True
    guard.tick(ext.planner, None)
    assert guard.loaded and guard.book.committed("ml-month", "2026-11") == 9.5


def test_a_garbled_stored_book_is_reported_and_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore('{"book": {"version": 7}, "started": {}}')
    _, _, guard, _, _, _ = governed(tmp_path, [], store=store)
    assert "the stored spend book cannot be read" in caplog.text and guard.loaded
    assert guard.save(force=True) is True and read_spend_state(store.text or "")[1] == {}


def test_metrics_show_budget_spend_held_jobs_and_fair_share_by_team(tmp_path: Path) -> None:
    first, second = pod("first", annotations=HOUR), pod("second", annotations=HOUR)
    ext, _, _, _, _, _ = governed(tmp_path, [first, second])
    ext.filter(ExtenderArgs(first, ("od-1",)))
    bind(ext, "first")
    ext.planner.plan()
    gauges = ext.gauges()
    budget = (("budget", "ml-month"), ("period", "2026-11"), ("team", "ml"))
    assert gauges["fleetsched_budget_usd"][budget] == 10.0
    assert gauges["fleetsched_budget_committed_usd"][budget] == pytest.approx(GPU_HOUR_USD)
    assert gauges["fleetsched_team_spend_usd"][(("period", "2026-11"), ("team", "ml"))] == pytest.approx(GPU_HOUR_USD)
    assert gauges["fleetsched_held_jobs"][(("reason", "BudgetGuard"), ("team", "ml"))] == 1.0
    assert gauges["fleetsched_held_jobs"][(("reason", "ApprovalGate"), ("team", "ml"))] == 0.0
    assert gauges["fleetsched_used_gpus"][(("flavor", "H100-80GB"), ("queue", "ml"))] == 1.0
    assert gauges["fleetsched_fair_share_gpus"][(("flavor", "H100-80GB"), ("queue", "ml"))] > 0
    text = Metrics().render(gauges)
    assert f'fleetsched_budget_committed_usd{{budget="ml-month",period="2026-11",team="ml"}} {round(GPU_HOUR_USD, 6)}' in text


def test_a_pod_past_its_queues_gpu_limit_is_held_by_quota_with_its_own_event(tmp_path: Path) -> None:
    quota = ('[[flavor]]\nname = "h100"\ngpu_models = ["H100-80GB"]\n[[queue]]\nname = "ml"\n'
             'quota.h100 = { guaranteed_gpus = 1, limit_gpus = 2 }\n')
    one, two = pod("one", 1), pod("two", 2)
    ext, _, _, _, events, _ = governed(tmp_path, [one, two], quota)
    assert ext.filter(ExtenderArgs(one, ("od-1",))).node_names == ("od-1",)
    assert bind(ext, "one") == ""
    ext.planner.plan()
    reply = ext.filter(ExtenderArgs(two, ("od-1",)))
    assert reply.failed == {"od-1": "QuotaLimit: queue ml uses 1 of its 2 h100 GPUs"}
    assert ("uid-two", "QuotaLimit") in {(e[1]["uid"], e[2]) for e in events.posted}
    assert ext.gauges()["fleetsched_held_jobs"][(("reason", "QuotaLimit"), ("team", "ml"))] == 1.0
    assert ext.gauges()["fleetsched_used_gpus"][(("flavor", "h100"), ("queue", "ml"))] == 1.0


def test_a_gang_is_approved_by_its_gang_name_and_each_member_reserves_its_share(tmp_path: Path) -> None:
    members = [pod(f"g-{i}", 3, labels={"fleetsched.io/gang": "g"}, annotations={"fleetsched.io/gang-size": "2", **HOUR})
               for i in range(2)]  # fmt: skip
    ext, _, guard, store, events, _ = governed(tmp_path, members, GOVERNANCE.replace("usd = 10", "usd = 1000"))
    assert ext.filter(ExtenderArgs(members[0], ("od-1",))).failed == {"od-1": "ApprovalGate: waiting for approval (big)"}
    assert {e[1]["name"] for e in events.posted if e[2] == "ApprovalGate"} == {"g-0", "g-1"}
    store.items = [Approval("gang.ml.g", "ml/gang:g", True)]
    guard.tick(ext.planner, None)
    plan = ext.planner.current()
    assert plan is not None and {uid: node for uid, (node, _) in plan.nodes.items()} == {"uid-g-0": "od-1", "uid-g-1": "od-1"}
    ext.gangs.wait_s = 0.2
    for member in members:
        assert ext.filter(ExtenderArgs(member, ("od-1",))).node_names == ("od-1",)
    assert "none is bound until all do" in ext.bind(BindingArgs("g-0", "ml", "uid-g-0", "od-1"))
    assert guard.book.committed("ml-month", "2026-11") == 0.0  # nothing bound, nothing reserved
    assert ext.bind(BindingArgs("g-1", "ml", "uid-g-1", "od-1")) == ""  # the last member binds them all
    assert sorted(guard.book.open) == ["ml/g-0@uid-g-0", "ml/g-1@uid-g-1"]
    assert guard.book.committed("ml-month", "2026-11") == pytest.approx(6 * GPU_HOUR_USD)


def test_a_pod_placed_alone_counts_the_plans_jobs_not_bound_yet(tmp_path: Path) -> None:
    # kube-scheduler can ask about a pod before the mirror shows it: the pod is placed alone on
    # what the plan leaves, and the plan's first pod, admitted but not bound, has taken the budget.
    first, late = pod("first", annotations=HOUR), pod("late", annotations=HOUR)
    ext, _, guard, _, _, _ = governed(tmp_path, [first])
    assert ext.filter(ExtenderArgs(first, ("od-1",))).node_names == ("od-1",)
    assert guard.book.open == {}  # not bound: nothing reserved yet
    reply = ext.filter(ExtenderArgs(late, ("od-1",)))
    assert reply.node_names == ()
    assert reply.failed["od-1"].startswith(f"BudgetGuard: budget ml-month: ${GPU_HOUR_USD:,.2f} of $10.00 committed")
