"""`fleetsched budget status --run DIR`: the governance tables of a run, and one line for every bad run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetsched.cli import main

# A hand-written governance section in the format the simulator writes (governance-spec): one
# monthly budget in warning in November and over in December (a reservation still open), a
# weekly one shared by two teams, one team with approvals and held jobs, one with neither.
SECTION: dict[str, Any] = {
    "file": "gov.toml",
    "budgets": {
        "vision-monthly": {"teams": ["vision"], "action": "hold", "periods": {
            "2026-11": {"budget_usd": 5000.0, "warn_usd": 4000.0, "spent_usd": 4100.5, "reserved_usd": 0.0,
                        "state": "warning"},
            "2026-12": {"budget_usd": 5000.0, "warn_usd": 4000.0, "spent_usd": 4800.0, "reserved_usd": 450.25,
                        "state": "over"}}},
        "research-weekly": {"teams": ["nlp", "vision"], "action": "deny", "periods": {
            "2026-W45": {"budget_usd": 2000.0, "warn_usd": 1600.0, "spent_usd": 300.0, "reserved_usd": 200.0,
                         "state": "ok"}}},
    },
    "teams": {
        "vision": {"queue": "vision", "periods": {
            "2026-11": {"spent_usd": 4100.5, "jobs_held": {"BudgetGuard": 3, "ApprovalGate": 1},
                        "hours_held": {"BudgetGuard": 12.5, "ApprovalGate": 1.0}, "jobs_denied": 0},
            "2026-12": {"spent_usd": 4800.0, "jobs_held": {"BudgetGuard": 7}, "hours_held": {"BudgetGuard": 30.5},
                        "jobs_denied": 0}},
            "approvals": {"requested": 2, "approved": 1, "rejected": 1, "mean_wait_s": 1800.0, "max_wait_s": 3600.0},
            "fair_share_gpus": 7.5, "used_gpus": 6.9},
        "nlp": {"queue": "nlp", "periods": {
            "2026-11": {"spent_usd": 300.0, "jobs_held": {}, "hours_held": {}, "jobs_denied": 2}},
            "approvals": {"requested": 0, "approved": 0, "rejected": 0, "mean_wait_s": 0.0, "max_wait_s": 0.0},
            "fair_share_gpus": 8.0, "used_gpus": 9.2},
    },
    "jain_index": 0.97,
}

# Widths worked out by hand: each column as wide as its widest cell, two spaces between.
EXPECTED = [
    "guardrails: gov.toml",
    "",
    "budget           period    action     budget      spent  reserved    used  state",
    "research-weekly  2026-W45  deny    $2,000.00    $300.00   $200.00   25.0%  ok",
    "vision-monthly   2026-11   hold    $5,000.00  $4,100.50     $0.00   82.0%  warning",
    "vision-monthly   2026-12   hold    $5,000.00  $4,800.00   $450.25  105.0%  OVER",
    "",
    "team    period       spent  held jobs (hours held) by reason" + " " * 14 + "  denied",
    "nlp     2026-11    $300.00  none" + " " * 42 + "       2",
    "vision  2026-11  $4,100.50  ApprovalGate 1 (1.0 h), BudgetGuard 3 (12.5 h)       0",
    "vision  2026-12  $4,800.00  BudgetGuard 7 (30.5 h)" + " " * 24 + "       0",
    "",
    "team    queue   approvals  approved  rejected  wait mean  wait max  fair share GPUs  used GPUs",
    "nlp     nlp             0         0         0          -         -              8.0        9.2",
    "vision  vision          2         1         1    1,800 s   3,600 s              7.5        6.9",
    "",
    "Jain's fairness index over teams: 0.970",
]


def status(capsys: pytest.CaptureFixture[str], run: Path | str) -> tuple[int, str, str]:
    code = main(["budget", "status", "--run", str(run)])
    out, err = capsys.readouterr()
    return code, out, err


def write_run(folder: Path, summary: Any) -> Path:
    folder.mkdir()
    text = summary if isinstance(summary, str) else json.dumps(summary, indent=2)
    (folder / "summary.json").write_text(text, encoding="utf-8")
    return folder


def test_prints_budgets_per_period_teams_and_jains_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", {"schema_version": 1, "governance": SECTION})
    code, out, err = status(capsys, run)
    assert (code, err) == (0, "")
    assert out.splitlines() == EXPECTED


def test_a_team_without_approvals_or_periods_and_no_budgets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    section = {"file": "g.toml", "budgets": {}, "jain_index": None,
               "teams": {"a": {"queue": "a", "periods": {}, "fair_share_gpus": 4.0, "used_gpus": 0.0}}}
    code, out, _ = status(capsys, write_run(tmp_path / "run", {"governance": section}))
    lines = out.splitlines()
    assert code == 0 and lines[2] == "no budgets" and lines[-1] == "Jain's fairness index over teams: n/a"
    assert lines[-3].split() == ["a", "a", "0", "0", "0", "-", "-", "4.0", "0.0"]


def test_the_same_run_prints_the_same_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", {"governance": SECTION})
    first = status(capsys, run)
    reordered = {"governance": {key: SECTION[key] for key in reversed(list(SECTION))}}
    (run / "summary.json").write_text(json.dumps(reordered), encoding="utf-8")
    assert status(capsys, run) == first


def bad(section_change: dict[str, Any]) -> dict[str, Any]:
    """SECTION with one vision-monthly November field replaced."""
    section = json.loads(json.dumps(SECTION))
    section["budgets"]["vision-monthly"]["periods"]["2026-11"].update(section_change)
    return {"governance": section}


NOV = "governance.budgets.vision-monthly.periods.2026-11"


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ({"schema_version": 1, "cost_usd": {}}, "summary.json: the run has no governance section: it was simulated "
                                                  "without --governance"),
        ({"governance": None}, "summary.json: the run has no governance section"),
        ('{"governance": {"budgets": \n  {"a": }}', "summary.json:2: not valid JSON: Expecting value"),
        ("[1, 2]", "summary.json: must be a JSON object, got a list"),
        ({"governance": []}, "summary.json: governance: must be an object, got a list"),
        (bad({"spent_usd": "4100"}), f"summary.json: {NOV}.spent_usd: must be a number >= 0, got '4100'"),
        (bad({"reserved_usd": -1.0}), f"summary.json: {NOV}.reserved_usd: must be a number >= 0, got -1.0"),
        (bad({"state": "red"}), f"summary.json: {NOV}.state: must be one of ok, warning, over, got 'red'"),
        ({"governance": {"budgets": {}, "teams": {"vision": {"periods": {}, "used_gpus": 1.0}}}},
         "summary.json: governance.teams.vision.fair_share_gpus: missing"),
        ({"governance": {"budgets": {}}}, "summary.json: governance.teams: missing"),  # a run writes it, if empty
    ],
    ids=["no-section", "null-section", "corrupt-json", "not-an-object", "section-not-an-object", "spent-is-text",
         "reserved-negative", "unknown-state", "fair-share-missing", "teams-missing"],
)
def test_a_bad_summary_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], summary: Any, message: str
) -> None:
    run = write_run(tmp_path / "run", summary)
    code, out, err = status(capsys, run)
    assert (code, out) == (2, "")
    assert err.startswith(f"fleetsched: {run}/{message}") and err.count("\n") == 1


def test_a_folder_without_summary_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    code, out, err = status(capsys, tmp_path / "run")
    assert (code, out, err) == (2, "", f"fleetsched: {tmp_path / 'run'}: no summary.json: not a fleetsched run directory\n")


def test_a_missing_run_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = status(capsys, tmp_path / "nowhere")
    assert (code, out, err) == (2, "", f"fleetsched: {tmp_path / 'nowhere'}: --run: no such directory\n")


def test_a_file_given_as_the_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "summary.json").write_text("{}", encoding="utf-8")
    code, out, err = status(capsys, tmp_path / "summary.json")
    assert (code, out, err) == (2, "", f"fleetsched: {tmp_path / 'summary.json'}: --run: not a directory\n")


def test_a_summary_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_bytes(b'{"governance": "\xe9"}')
    code, out, err = status(capsys, run)
    assert (code, out) == (2, "") and err == f"fleetsched: {run}/summary.json: not UTF-8 text: not a summary written by fleetsched\n"


def test_budget_verbs_have_help() -> None:
    for argv in (["budget", "--help"], ["budget", "status", "--help"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 0


def test_a_real_governed_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four 2-hour jobs of team big, each the whole 8-GPU node ($21.957642 an hour, so $43.915284 a job),
    under a daily budget of $153.70 (3.5 jobs): three run back to back on day 1. The fourth waits for
    the node until the second ends (14,400 s); from then the budget holds it (the third, running, has
    reserved $131.75 of the day) until day 2 starts: 72,000 s = 20.0 h. Team small's jobs run after
    the third. A team's own figures count by month."""
    trace = tmp_path / "jobs.jsonl"
    jobs = [{"id": f"big-{n}", "submit_s": n, "duration_s": 7200, "gpus": 8, "team": "big"} for n in range(4)]
    jobs += [{"id": f"small-{n}", "submit_s": 600 * (n + 1), "duration_s": 3600, "team": "small"} for n in range(4)]
    trace.write_text("".join(json.dumps(job) + "\n" for job in jobs), encoding="utf-8")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[[pool]]\nname = "a100"\ngpu = "A100-40GB"\ngpus_per_node = 8\n'
                       'price = "aws:p4d.24xlarge:on-demand"\nnodes = 1\n', encoding="utf-8")
    rules = tmp_path / "gov.toml"
    rules.write_text('epoch = "2026-10-01T00:00:00Z"\n[[flavor]]\nname = "a100"\ngpu_models = ["A100-40GB"]\n'
                     '[[queue]]\nname = "org"\n[[queue]]\nname = "big"\nparent = "org"\n'
                     '[[queue]]\nname = "small"\nparent = "org"\n'
                     '[[budget]]\nteam = "big"\nperiod = "day"\nusd = 153.70\n', encoding="utf-8")
    run = tmp_path / "run"
    assert main(["simulate", "--trace", str(trace), "--cluster", str(cluster), "--profile", "governed",
                 "--governance", str(rules), "--out", str(run)]) == 0
    capsys.readouterr()
    code, out, err = status(capsys, run)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:5] == [
        "guardrails: gov.toml",
        "",
        "budget   period      action   budget    spent  reserved   used  state",
        "big-day  2026-10-01  hold    $153.70  $131.75     $0.00  85.7%  warning",
        "big-day  2026-10-02  hold    $153.70   $43.92     $0.00  28.6%  ok",
    ]
    assert "big    2026-10  $175.66  BudgetGuard 1 (20.0 h)" in out
    # big held 8 GPUs for 4 x 2 h of the run's 93,600 s: 2.46 GPUs on average.
    assert lines[-4].split()[:3] == ["big", "big", "0"] and lines[-4].split()[-1] == "2.5"
