"""The guardrails' parts: the governance file, calendar periods, water-filling, the spend book, the plugins."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policies
from policies.governance import ApprovalGate, BudgetGuard, BudgetSpotOnly, FairShareOrder, QuotaLimit
from scheduler.decision import Code
from scheduler.errors import InputError
from scheduler.fairshare import Claim, make_view, water_fill
from scheduler.governance import Period, period_bounds, utc_text
from scheduler.governance_file import load_governance
from scheduler.model import Capacity
from scheduler.plugin import Cycle
from scheduler.spend import SpendBook
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, whole

GOOD = """\
epoch = 2026-11-01T00:00:00Z
default_runtime_s = 7200
[[flavor]]
name = "a100"
gpu_models = ["A100-80GB"]
[[queue]]
name = "research"
[[queue]]
name = "vision"
parent = "research"
teams = ["vision", "vision-dev"]
quota.a100 = { guaranteed_gpus = 2, weight = 2, limit_gpus = 4 }
[[queue]]
name = "speech"
parent = "research"
[[budget]]
queue = "research"
period = "week"
usd = 1000
action = "spot-only"
[[approval]]
name = "huge"
above_gpus = 8
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "governance.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file(tmp_path: Path) -> None:
    rules = load_governance(write(tmp_path, GOOD))
    assert rules.epoch_s == dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    assert rules.queue_of("vision-dev").name == "vision"  # type: ignore[union-attr]
    assert rules.queue_name("speech") == "speech" and rules.queue_name("nobody") == "nobody"
    (budget,) = rules.budgets
    assert budget.name == "research-week" and budget.teams == {"vision", "vision-dev", "speech"}
    assert rules.flavor_of(make_pool(gpu="A100-80GB")) == "a100"
    assert rules.flavor_of(make_pool(gpu="H100-80GB")) == "H100-80GB"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("usd = 1000", "usd = -5"), "19: budget[0].usd: must be a finite number >= 0, got -5"),
        (('period = "week"', 'period = "fortnight"'), "18: budget[0].period: must be one of day, week, month"),
        (('parent = "research"\nteams', 'parent = "resarch"\nteams'), "10: queue[1] (vision).parent: no queue 'resarch'"),
        (('gpu_models = ["A100-80GB"]', 'gpu_models = ["A100-81GB"]'), "5: flavor[0] (a100).gpu_models: unknown GPU model"),
        (("weight = 2", "weight = 1e-9"), "12: queue[1] (vision).quota.a100.weight: must be 0 or from 0.001"),
        (("limit_gpus = 4", "limit_gpus = 1"), "12: queue[1] (vision).quota.a100.limit_gpus: is below guaranteed_gpus"),
        (("quota.a100", "quota.h100"), "12: queue[1] (vision).quota.h100: no flavour 'h100'"),
        (("above_gpus = 8", "above_gpu = 8"), "23: approval[0] (huge).above_gpu: unknown key; an approval has"),
        (("epoch = 2026-11-01T00:00:00Z", 'epoch = "2026-13-01T00:00:00Z"'), "1: epoch: no such date and time"),
        (("epoch = 2026-11-01T00:00:00Z", "epoch = 2026-11-01T00:00:00"),
         "1: epoch: must say its time zone (end it in Z for UTC), got 2026-11-01T00:00:00"),  # as written, no repr
        (("epoch = 2026-11-01T00:00:00Z", "epoch = 2026-11-01"),
         '1: epoch: must be a date and time with its zone, such as "2026-11-01T00:00:00Z", got 2026-11-01'),
        (('name = "speech"', 'name = "vision"'), "14: queue[2].name: queue 'vision' is defined twice"),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))
    with pytest.raises(InputError) as caught:
        load_governance(path)
    assert str(caught.value).startswith(f"{path}:{expected}")


def test_an_organisation_lists_no_teams(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('name = "research"\n', 'name = "research"\nteams = ["x"]\n', 1))
    with pytest.raises(InputError, match="an organisation holds queues, not teams"):
        load_governance(path)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-2 * 10**12, max_value=4 * 10**12))
def test_periods_are_the_utc_calendar(unix_ms: int) -> None:
    unix_s = unix_ms / 1000  # simulated time is whole milliseconds
    moment = dt.datetime.fromtimestamp(unix_s, dt.UTC)
    day = dt.datetime(moment.year, moment.month, moment.day, tzinfo=dt.UTC)
    assert period_bounds(Period.DAY, unix_s) == (day.timestamp(), (day + dt.timedelta(days=1)).timestamp(),
                                                 day.strftime("%Y-%m-%d"))  # fmt: skip
    monday = day - dt.timedelta(days=day.weekday())
    year, week, _ = monday.isocalendar()
    assert period_bounds(Period.WEEK, unix_s) == (monday.timestamp(), (monday + dt.timedelta(days=7)).timestamp(),
                                                  f"{year}-W{week:02d}")  # fmt: skip
    first = day.replace(day=1)
    following = (first + dt.timedelta(days=32)).replace(day=1)
    assert period_bounds(Period.MONTH, unix_s) == (first.timestamp(), following.timestamp(), first.strftime("%Y-%m"))
    assert utc_text(unix_s) == moment.strftime("%Y-%m-%d %H:%M UTC")


claims = st.dictionaries(
    st.sampled_from("abcdef"),
    st.builds(Claim, st.floats(0, 20), st.one_of(st.just(0.0), st.floats(0.001, 5)), st.floats(0, 30)),
    min_size=1,
)


@settings(max_examples=300, deadline=None)
@given(st.floats(0, 64), claims)
def test_water_filling(capacity: float, made: dict[str, Claim]) -> None:
    shares = water_fill(capacity, made)
    assert sum(shares.values()) <= capacity + 1e-6
    for name, claim in made.items():
        assert shares[name] <= claim.cap + 1e-6
    promised = sum(min(c.guaranteed, c.cap) for c in made.values())
    if promised <= capacity:
        for name, claim in made.items():
            assert shares[name] >= min(claim.guaranteed, claim.cap) - 1e-6
        # Work-conserving: capacity is left only when every queue with a weight has all it wants.
        if sum(shares.values()) < capacity - 1e-6:
            assert all(shares[n] >= c.cap - 1e-6 for n, c in made.items() if c.weight > 0)
        # Beyond guarantees, weights decide among those not at their cap.
        growing = [n for n, c in made.items() if c.weight > 0 and shares[n] < c.cap - 1e-6]
        extra = [(shares[n] - min(made[n].guaranteed, made[n].cap)) / made[n].weight for n in growing]
        assert max(extra, default=0) - min(extra, default=0) < 1e-6


def test_water_filling_by_hand() -> None:
    assert water_fill(12, {"a": Claim(0, 1, 20), "b": Claim(0, 2, 20)}) == {"a": 4.0, "b": 8.0}
    assert water_fill(12, {"a": Claim(8, 1, 20), "b": Claim(0, 1, 20)}) == {"a": 10.0, "b": 2.0}
    assert water_fill(6, {"a": Claim(8, 1, 20), "b": Claim(4, 1, 20)}) == {"a": 4.0, "b": 2.0}  # scaled down


def test_the_spend_book_settles_and_survives_json() -> None:
    book = SpendBook()
    book.reserve("j1", "vision", "2026-11", [("research-week", "2026-W45")], 100.0)
    book.reserve("j2", "vision", "2026-11", [("research-week", "2026-W45")], 50.0)
    assert book.committed("research-week", "2026-W45") == 150.0
    book.settle("j1", 80.0)
    assert book.committed("research-week", "2026-W45") == 130.0
    assert book.spent == {("research-week", "2026-W45"): 80.0}
    again = SpendBook.from_json(book.to_json())
    assert again.to_json() == book.to_json() and again.committed("research-week", "2026-W45") == 130.0
    with pytest.raises(ValueError, match="already holds"):
        book.reserve("j2", "vision", "2026-11", [], 1.0)


@pytest.mark.parametrize("text", ["", "[]", '{"version": 2}', '{"version": 1, "spent": [[1]]}'])
def test_a_spend_book_that_is_not_one(text: str) -> None:
    with pytest.raises(InputError, match="configmap fleetsched-spend: not a spend book"):
        SpendBook.from_json(text, "configmap fleetsched-spend")


def cycle_for(tmp_path: Path, jobs: list, committed: dict[str, float], running: tuple = (), approved: frozenset = frozenset()) -> Cycle:  # type: ignore[type-arg]
    rules = load_governance(write(tmp_path, GOOD))
    on_demand = make_pool("od", gpu="A100-80GB", gpus_per_node=8, usd_per_node_hour=16.0)
    spot = make_pool("spot", gpu="A100-80GB", gpus_per_node=8, usd_per_node_hour=8.0, capacity=Capacity.SPOT)
    snapshot = make_snapshot(on_demand, spot)
    view = make_view(rules, snapshot, rules.epoch_s, committed, jobs, approved)
    return Cycle(0.0, replace(snapshot, governance=view))


def test_budget_guard_adds_up_one_cycle_and_names_the_period(tmp_path: Path) -> None:
    jobs = [make_job(f"j{n}", whole(2), team="speech", duration_s=3600 * 100) for n in range(3)]  # $400 each on od
    cycle = cycle_for(tmp_path, jobs, {"research-week": 100.0})
    guard = BudgetGuard()
    assert guard.admit(cycle, jobs[0]).ok and guard.admit(cycle, jobs[1]).ok
    third = guard.admit(cycle, jobs[2])
    assert third.code is Code.WAIT and "$900.00 of $1,000.00 committed in 2026-W44" in third.reasons[0]
    assert "only preemptible jobs run, on spot capacity, until 2026-11-02 00:00 UTC" in third.reasons[0]
    assert guard.admit(cycle, replace(jobs[2], preemptible=True)).ok
    assert guard.admit(cycle, make_job("other", whole(2), team="elsewhere", duration_s=3600 * 100)).ok
    too_big = make_job("big", whole(8), team="speech", duration_s=3600 * 100)
    assert guard.admit(cycle, too_big).code is Code.UNRESOLVABLE


def test_spent_spot_only_budget_keeps_a_team_on_spot(tmp_path: Path) -> None:
    job = make_job("j", whole(1), team="vision")
    cycle = cycle_for(tmp_path, [job], {"research-week": 1000.0})
    spot_only = BudgetSpotOnly()
    nodes = cycle.snapshot.nodes
    assert spot_only.filter(cycle, job, nodes["od-0"]).code is Code.UNRESOLVABLE
    assert spot_only.filter(cycle, job, nodes["spot-0"]).ok
    assert spot_only.filter(cycle, make_job("k", whole(1), team="elsewhere"), nodes["od-0"]).ok


def test_quota_limit_holds_past_the_limit_and_denies_past_it_alone(tmp_path: Path) -> None:
    jobs = [make_job(f"j{n}", whole(2), team="vision") for n in range(3)]
    cycle = cycle_for(tmp_path, jobs, {})
    limit = QuotaLimit()
    assert limit.admit(cycle, jobs[0]).ok and limit.admit(cycle, jobs[1]).ok
    third = limit.admit(cycle, jobs[2])
    assert third.code is Code.WAIT and third.reasons == ("queue vision uses 4 of its 4 a100 GPUs",)
    assert limit.admit(cycle, make_job("big", whole(6), team="vision")).code is Code.UNRESOLVABLE


def test_approval_gate(tmp_path: Path) -> None:
    big = make_job("big", whole(8), replicas=2, team="vision")
    cycle = cycle_for(tmp_path, [big], {})
    assert ApprovalGate().admit(cycle, big).reasons == ("waiting for approval (huge)",)
    assert ApprovalGate().admit(cycle, make_job("small", whole(8), team="vision")).ok
    approved = cycle_for(tmp_path, [big], {}, approved=frozenset({"big"}))
    assert ApprovalGate().admit(approved, big).ok


def test_fair_share_order_puts_the_queue_furthest_below_first(tmp_path: Path) -> None:
    jobs = [make_job("v", whole(1), team="vision"), make_job("s", whole(1), team="speech")]
    cycle = cycle_for(tmp_path, jobs, {})
    order = FairShareOrder()
    assert order.sort_key(cycle, jobs[0]) == order.sort_key(cycle, jobs[1]) == (0, 0.0)
    assert order.sort_key(cycle, replace(jobs[0], priority=5))[0] == -5


def test_a_job_shown_but_not_placed_takes_no_quota(tmp_path: Path) -> None:
    """vision may use 4 A100s. With 2 free, a 4-GPU job first in line cannot be placed: it must
    not count against the limit, so the 2-GPU job after it starts (a batch placer, which asks
    admission before placing anything, counts both and holds the second)."""
    big = make_job("big", whole(4), team="vision", submit_s=0)
    small = make_job("small", whole(2), team="vision", submit_s=1)
    rules = load_governance(write(tmp_path, GOOD))
    pool = make_pool("od", gpu="A100-80GB", gpus_per_node=2, usd_per_node_hour=4.0)
    snapshot = make_snapshot(pool)
    snapshot = replace(snapshot, governance=make_view(rules, snapshot, rules.epoch_s, {}, [big, small]))
    greedy = Scheduler(policies.profile("governed")).schedule(snapshot, [big, small])
    assert [p.job.id for p in greedy.placements] == ["small"]
    assert greedy.pending["big"].fits_nowhere
    batch = Scheduler(replace(policies.profile("governed"), placer="cpsat")).schedule(snapshot, [big, small])
    assert batch.placements == () and batch.pending["small"].status.plugin == "QuotaLimit"
