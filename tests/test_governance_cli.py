"""`--governance` on simulate, compare and plan: what users see, and a bad file stopping everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleetsched.cli import main

ROOT = Path(__file__).resolve().parent.parent
TRACE = str(ROOT / "traces/samples/synth-2days.jsonl")
CLUSTER = str(ROOT / "traces/samples/elastic-spot-cluster.toml")
RULES = """\
epoch = "2026-11-01T00:00:00Z"
[[queue]]
name = "company"
[[queue]]
name = "research"
parent = "company"
[[queue]]
name = "prod"
parent = "company"
[[queue]]
name = "analytics"
parent = "company"
[[budget]]
team = "research"
period = "day"
usd = 3000
action = "hold"
[[approval]]
name = "gangs"
above_gpus = 8
delay_mean_s = 1800
reject_fraction = REJECT
"""


def rules(tmp_path: Path, reject: float = 0.0) -> str:
    path = tmp_path / "governance.toml"
    path.write_text(RULES.replace("REJECT", str(reject)), encoding="utf-8")
    return str(path)


def test_simulate_governed_holds_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "--trace", TRACE, "--cluster", CLUSTER, "--profile", "governed",
                 "--governance", rules(tmp_path), "--out", str(out), "--check"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "  guardrails  " in text and "  budget research-day $3,000.00 a day" in text
    document = json.loads((out / "summary.json").read_text())
    governance = document["governance"]
    periods = governance["budgets"]["research-day"]["periods"]
    assert set(periods) == {"2026-11-01", "2026-11-02", "2026-11-03"} or len(periods) >= 2
    held = sum(p["jobs_held"].get("BudgetGuard", 0) for p in governance["teams"]["research"]["periods"].values())
    assert held > 0, "research's daily budget holds some of its jobs"
    for period in periods.values():  # spend never passes the budget by more than one job's estimate error
        assert period["spent_usd"] <= period["budget_usd"] * 1.25
    assert document["jobs"]["completed"] == 400


def test_every_rejected_approval_is_denied_with_the_reason(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["simulate", "--trace", TRACE, "--cluster", CLUSTER, "--profile", "governed",
                 "--governance", rules(tmp_path, reject=1.0), "--out", str(out)]) == 0  # fmt: skip
    document = json.loads((out / "summary.json").read_text())
    approvals = [team["approvals"] for team in document["governance"]["teams"].values()]
    requested = sum(a["requested"] for a in approvals)
    assert requested > 0 and sum(a["rejected"] for a in approvals) == requested
    assert document["governance"]["jobs_denied"] == requested
    rows = [line for line in (out / "jobs.csv").read_text().splitlines() if ",denied," in line]
    assert len(rows) == requested and all("approval rejected (gangs)" in row for row in rows)


def test_a_governance_file_with_a_typo_stops_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(RULES.replace('action = "hold"', 'action = "hodl"').replace("REJECT", "0"), encoding="utf-8")
    for verb in (["simulate", "--profile", "governed"], ["compare", "--profiles", "default,governed"]):
        out = tmp_path / verb[0]
        code = main([*verb, "--trace", TRACE, "--cluster", CLUSTER, "--governance", str(bad), "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2
        assert err == f"fleetsched: {bad}:17: budget[0].action: must be one of hold, spot-only, deny, got 'hodl'\n"
        assert not out.exists()


def test_compare_with_governance_reports_each_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", "--trace", TRACE, "--cluster", CLUSTER, "--profiles", "default,governed",
                 "--governance", rules(tmp_path), "--workers", "1", "--out", str(out)]) == 0  # fmt: skip
    capsys.readouterr()
    for name in ("default-seed0", "governed-seed0"):
        document = json.loads((out / "runs" / name / "summary.json").read_text())
        assert "research-day" in document["governance"]["budgets"]


def test_plan_shows_a_job_held_for_approval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "big", "gpus": 8, "replicas": 3, "team": "prod", "duration_s": 3600}\n'
                    '{"id": "small", "gpus": 1, "team": "prod", "duration_s": 3600}\n', encoding="utf-8")  # fmt: skip
    assert main(["plan", "--cluster", CLUSTER, "--jobs", str(jobs), "--profile", "governed",
                 "--governance", rules(tmp_path)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "waiting for approval (gangs)" in text
    assert "placed 1 of 2 jobs" in text


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[[flavor]]\nname = "a100"\ngpu_models = ["A100-80GB"]\n',
         ":25: flavor[0] (a100).gpu_models: names no pool of the cluster (its GPU models: H100-80GB)"),
        ('[[flavor]]\nname = "od"\npools = ["h100-ondemand"]\n',
         ":25: flavor[0] (od).pools: no pool 'h100-ondemand' in the cluster; it has h100-od, h100-spot, h100-reserved"),
    ],
    ids=["model", "pool"],
)
def test_a_flavour_that_names_no_pool_of_the_cluster_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, expected: str
) -> None:
    path = Path(rules(tmp_path))
    path.write_text(path.read_text() + table, encoding="utf-8")
    out = tmp_path / "run"
    code = main(["simulate", "--trace", TRACE, "--cluster", CLUSTER, "--governance", str(path), "--out", str(out)])
    assert code == 2 and capsys.readouterr().err == f"fleetsched: {path}{expected}\n"
    assert not out.exists()
