"""Guardrails in the simulator checked by hand: two teams, one budget crossed, one approval, one reclaim.

One 8-GPU node at $16/node-hour ($2/GPU-hour). Time 0 is 2026-11-30 00:00 UTC. Team a has a
daily budget of $170 (hold); an approval rule names jobs estimated above $100, answered 1,800 s
after they are asked for. Teams a and b have equal weight in one organisation, no guarantees.

- t=0: a1 and a2 (4 GPUs each, 10 h: estimates $80 each) start: a commits $160 of $170.
- t=3,600: a3 (1 GPU, 10 h: $20) would take a to $180: held by the budget.
- t=7,200: b1 (4 GPUs, 2 h, but declared up to 20 h: estimated $160) needs approval: held by ApprovalGate.
- t=9,000: b1 is approved. Fair share: a wants 8 GPUs (a3 is held until tomorrow and claims
  none), b 4: 4 each. b uses 0, a 8: b reclaims 4 GPUs from a, taking a1 (a1 and a2 lose the
  same work; a1's id sorts first). a1 ran 2.5 h: $20 settled. b1 starts.
- t=16,200: b1 ends ($16). a commits $20 (a1) + $80 (a2 reserved) = $100: a1 again ($80)
  would pass $170 and is held; a3 ($20) fits and starts. a3 was held 12,600 s = 3.5 h.
- t=36,000: a2 ends ($80). t=52,200: a3 ends ($20). Day 1: a spent $20 + $80 + $20 = $120.
- t=86,400: a new day: a1 starts ($80 of day 2), ending at 122,400. a1 was held 70,200 s = 19.5 h.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from fleetsched import api
from scheduler.cluster import Cluster
from scheduler.errors import InputError
from scheduler.governance_file import load_governance
from scheduler.model import Job
from simulator.budget_status import read_section, render_report
from simulator.engine import SimResult
from simulator.metrics import summary
from simulator.tally import OUTCOMES
from tests.builders import make_job, make_pool, whole

RULES = """
epoch = "2026-11-30T00:00:00Z"
[[queue]]
name = "org"
[[queue]]
name = "a"
parent = "org"
[[queue]]
name = "b"
parent = "org"
[[budget]]
team = "a"
period = "day"
usd = 170
action = "ACTION"
[[approval]]
name = "big"
above_usd = 100
delay_s = 1800
"""

HOUR = 3600.0
JOBS = [
    make_job("a1", whole(4), team="a", submit_s=0, duration_s=10 * HOUR),
    make_job("a2", whole(4), team="a", submit_s=0, duration_s=10 * HOUR),
    make_job("a3", whole(1), team="a", submit_s=HOUR, duration_s=10 * HOUR),
    replace(make_job("b1", whole(4), team="b", submit_s=2 * HOUR, duration_s=2 * HOUR), runtime_limit_s=20 * HOUR),
]


def cluster() -> Cluster:
    from types import MappingProxyType

    pool = make_pool("a100", gpu="A100-80GB", gpus_per_node=8, usd_per_node_hour=16.0)
    return Cluster("hand", MappingProxyType({pool.name: pool}))


def rules_file(tmp_path: Path, action: str = "hold") -> Path:
    path = tmp_path / "governance.toml"
    path.write_text(RULES.replace("ACTION", action), encoding="utf-8")
    return path


def test_the_hand_computed_day(tmp_path: Path) -> None:
    result = api.simulate(JOBS, cluster(), "governed", governance=rules_file(tmp_path))
    runs = result.world.runs
    assert {job: (run.first_start_ms, run.end_ms) for job, run in runs.items()} == {
        "a1": (0, 122_400_000), "a2": (0, 36_000_000), "a3": (16_200_000, 52_200_000), "b1": (9_000_000, 16_200_000),
    }  # fmt: skip
    assert runs["a1"].preemptions == 1
    document = summary(result)["governance"]
    day1, day2 = document["budgets"]["a-day"]["periods"].values()
    assert day1 == {"budget_usd": 170.0, "warn_usd": 136.0, "spent_usd": 120.0, "reserved_usd": 0.0, "state": "ok"}
    assert day2["spent_usd"] == 80.0
    a, b = document["teams"]["a"], document["teams"]["b"]
    # A team's own figures count by calendar month: day 1 is November's, day 2 December's.
    assert a["periods"]["2026-11"] == {"spent_usd": 120.0, "reserved_usd": 0.0, "jobs_held": {"BudgetGuard": 2},
                                       "hours_held": {"BudgetGuard": 23.0}, "jobs_denied": 0}  # fmt: skip
    assert a["periods"]["2026-12"]["spent_usd"] == 80.0
    assert b["periods"] == {"2026-11": {"spent_usd": 16.0, "reserved_usd": 0.0, "jobs_held": {"ApprovalGate": 1},
                                        "hours_held": {"ApprovalGate": 0.5}, "jobs_denied": 0}}  # fmt: skip
    assert b["approvals"] == {"requested": 1, "approved": 1, "rejected": 0, "mean_wait_s": 1800.0, "max_wait_s": 1800.0}
    # Team spend is the ledger's attributed cost, to the cent.
    assert summary(result)["cost_usd"]["by_team"] == {"a": 200.0, "b": 16.0}


def test_a_budget_that_denies_ends_the_job_with_the_reason(tmp_path: Path) -> None:
    result = api.simulate(JOBS, cluster(), "governed", governance=rules_file(tmp_path, "deny"))
    runs = result.world.runs
    assert runs["a3"].outcome == "denied" and runs["a3"].first_start_ms is None
    # a1, evicted by the reclaim and then over the budget again, ran before: it is held to day 2, not
    # denied (what it ran is paid for), and runs then as under `hold`
    assert (runs["a1"].outcome, runs["a1"].first_start_ms, runs["a1"].end_ms) == ("completed", 0, 122_400_000)
    document = summary(result)
    assert document["jobs"]["completed"] == 3
    assert document["governance"]["jobs_denied"] == 1
    # the counts add up to the total, and a denied job (it never completed) has no JCT
    jobs = document["jobs"]
    assert jobs["denied"] == 1 and sum(jobs[name] for name in (*OUTCOMES, "denied")) == jobs["total"]
    ran = [run.end_ms / 1000 - run.job.submit_s for run in runs.values() if run.outcome != "denied"]
    assert document["jct_s"]["mean"] == round(sum(ran) / len(ran), 3)
    assert document["governance"]["teams"]["a"]["periods"]["2026-11"]["jobs_denied"] == 1


def test_an_ungoverned_profile_only_reports_the_budget(tmp_path: Path) -> None:
    """The default profile names no guardrail: the same day runs as if none were set, and the
    governance section says what it would have cost against the budget: a1 and a2 run to
    36,000 s, a3 then starts in day 1 too: $80 + $80 + $20 = $180, past the $170."""
    result = api.simulate(JOBS, cluster(), "default", governance=rules_file(tmp_path))
    document = summary(result)["governance"]
    day1 = document["budgets"]["a-day"]["periods"]["2026-11-30"]
    assert day1["spent_usd"] == 180.0 and day1["state"] == "over"
    assert all(not period["jobs_held"] for period in document["teams"]["a"]["periods"].values())
    # the section says the rules were not enforced, and `budget status` says so first
    assert document["enforced"] is False
    assert "enforced" not in summary(api.simulate(JOBS, cluster(), "governed", governance=rules_file(tmp_path)))[
        "governance"]  # fmt: skip
    text = render_report(read_section(document, "summary.json"))
    assert text.splitlines()[1].startswith("not enforced: the run's profile has no guardrail plugin.")


def test_replays_are_identical(tmp_path: Path) -> None:
    first = summary(api.simulate(JOBS, cluster(), "governed", governance=rules_file(tmp_path)))
    second = summary(api.simulate(JOBS, cluster(), "governed", governance=rules_file(tmp_path)))
    assert first == second


def test_a_governance_file_with_a_typo_names_file_line_and_key(tmp_path: Path) -> None:
    path = rules_file(tmp_path).with_name("typo.toml")
    path.write_text(RULES.replace("ACTION", "hodl"), encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_governance(path)
    assert str(caught.value) == f"{path}:15: budget[0].action: must be one of hold, spot-only, deny, got 'hodl'"


FAIR = """
[[queue]]
name = "org"
[[queue]]
name = "a"
parent = "org"
QUOTA_A
[[queue]]
name = "b"
parent = "org"
QUOTA_B
"""


def two_nodes() -> Cluster:
    from types import MappingProxyType

    pool = make_pool("a100", gpu="A100-80GB", gpus_per_node=8, usd_per_node_hour=16.0, nodes=2)
    return Cluster("fair", MappingProxyType({pool.name: pool}))


def crowd(team: str, submit_s: float) -> list[Job]:
    return [make_job(f"{team}{n:02d}", whole(1), team=team, submit_s=submit_s, duration_s=10 * HOUR) for n in range(16)]


def running_at(result: SimResult, at_ms: int) -> dict[str, int]:
    """GPUs each team runs once every event at `at_ms` has happened."""
    running: dict[str, int] = {}
    for now_ms, name, data in result.world.log:
        if now_ms > at_ms or name not in ("start", "stop"):
            continue
        team = data["job"][0]
        running[team] = running.get(team, 0) + (1 if name == "start" else -1)
    return running


def fair_rules(tmp_path: Path, quota_a: str = "", quota_b: str = "") -> Path:
    path = tmp_path / "fair.toml"
    path.write_text(FAIR.replace("QUOTA_A", quota_a).replace("QUOTA_B", quota_b), encoding="utf-8")
    return path


def test_equal_teams_converge_to_half_each_in_one_reclaim_round(tmp_path: Path) -> None:
    """a takes all 16 GPUs; b arrives an hour later: the one cycle at 3,600 s evicts 8 of a's
    jobs and starts 8 of b's; nothing moves after until jobs end."""
    result = api.simulate(crowd("a", 0) + crowd("b", HOUR), two_nodes(), "governed", governance=fair_rules(tmp_path))
    assert running_at(result, 0) == {"a": 16}
    assert running_at(result, 3_600_000) == {"a": 8, "b": 8}
    assert running_at(result, 36_000_000 - 1) == {"a": 8, "b": 8}
    assert sum(run.preemptions for run in result.world.runs.values()) == 8


def test_a_guarantee_holds_against_a_heavier_weight(tmp_path: Path) -> None:
    """a is guaranteed 12 GPUs; b weighs 100 times more and arrives when a holds all 16: b's fair
    share is 4 x 100/101 = 3.96 GPUs, so it reclaims 3 and a keeps 13, never below 12."""
    quota_a = 'quota."A100-80GB" = { guaranteed_gpus = 12 }'
    quota_b = 'quota."A100-80GB" = { weight = 100 }'
    result = api.simulate(crowd("a", 0) + crowd("b", HOUR), two_nodes(), "governed",
                          governance=fair_rules(tmp_path, quota_a, quota_b))  # fmt: skip
    assert running_at(result, 3_600_000) == {"a": 13, "b": 3}
    for at_ms in range(3_600_000, 36_000_000, 600_000):
        assert running_at(result, at_ms)["a"] >= 12


def test_a_guaranteed_team_reclaims_its_guarantee(tmp_path: Path) -> None:
    """b holds all 16 GPUs when a, guaranteed 12, arrives: a's share is 12 + 2 of the rest = 14."""
    quota_a = 'quota."A100-80GB" = { guaranteed_gpus = 12 }'
    result = api.simulate(crowd("b", 0) + crowd("a", HOUR), two_nodes(), "governed",
                          governance=fair_rules(tmp_path, quota_a))  # fmt: skip
    assert running_at(result, 3_600_000) == {"a": 14, "b": 2}
