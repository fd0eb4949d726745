"""Benchmark: the three-team sample replayed without and with guardrails; spend, budget and queue times.

Replays traces/samples/three-teams.jsonl on three-teams-cluster.toml twice with the same seed:
ungoverned (profile `default`) and governed (profile `governed` with three-teams-governance.toml:
a monthly budget for the biggest spender at half its ungoverned spend). Prints per team and
period (the budget's calendar period, UTC, from the governance file's epoch): spend (each job's
cost, charged to the period it started in, as budgets count it), the budget, and the mean and
p95 queue time of the jobs submitted in that period, before and after. Then two checks, each
printed with its numbers (exit 1 if one fails):

- a budgeted team's spend per period exceeds its budget by at most one job's estimate error
  (the largest gap between a job's estimated cost, reserved at its start, and its actual cost
  in the governed run);
- every team without a budget waits no longer on average than without guardrails.

    python benchmarks/bench_governance.py [--trace T] [--cluster C] [--governance G] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import describe, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleetsched import api
from scheduler.cluster import load_cluster
from scheduler.governance import Governance, estimate_usd, period_bounds
from scheduler.governance_file import load_governance
from scheduler.model import Job
from traces.formats import read_trace_jobs

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"
TOLERANCE_USD = 0.01  # costs in jobs.csv are rounded to cents


@dataclass(frozen=True)
class TeamPeriod:
    """One team in one period of one run."""

    team: str
    period: str
    spend_usd: float
    jobs_submitted: int
    queue_mean_s: float | None
    queue_p95_s: float | None


@dataclass(frozen=True)
class BudgetCheck:
    """One budget in one period of the governed run, against its limit."""

    budget: str
    period: str
    budget_usd: float
    spent_usd: float
    allowance_usd: float

    @property
    def ok(self) -> bool:
        return self.spent_usd <= self.budget_usd + self.allowance_usd + TOLERANCE_USD


@dataclass(frozen=True)
class QueueCheck:
    """One team without a budget: its mean queue time before and after."""

    team: str
    before_s: float
    after_s: float

    @property
    def ok(self) -> bool:
        return self.after_s <= self.before_s


def p95(values: Sequence[float]) -> float | None:
    """The 95th percentile, inclusive method (as the simulator's summary computes it)."""
    if not values:
        return None
    ordered = sorted(values)
    position = 0.95 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def team_periods(
    rows: Iterable[Mapping[str, str]], label_of: Callable[[float], str]
) -> dict[tuple[str, str], TeamPeriod]:
    """Per (team, period) of one run's jobs.csv rows: spend by the period each job started in,
    queue times of the jobs submitted in the period that started (a job never started has none)."""
    spend: dict[tuple[str, str], float] = defaultdict(float)
    queues: dict[tuple[str, str], list[float]] = defaultdict(list)
    submitted: dict[tuple[str, str], int] = defaultdict(int)
    for row in rows:
        team = row["team"]
        submitted_in = (team, label_of(float(row["submit_s"])))
        submitted[submitted_in] += 1
        if row["start_s"]:
            spend[(team, label_of(float(row["start_s"])))] += float(row["cost_usd"] or 0.0)
            queues[submitted_in].append(float(row["queue_s"]))
    keys = sorted(set(spend) | set(submitted))
    return {
        key: TeamPeriod(
            team=key[0], period=key[1], spend_usd=round(spend.get(key, 0.0), 2), jobs_submitted=submitted.get(key, 0),
            queue_mean_s=sum(queues[key]) / len(queues[key]) if queues.get(key) else None,
            queue_p95_s=p95(queues.get(key, [])),
        )
        for key in keys
    }


def mean_queue_by_team(rows: Iterable[Mapping[str, str]]) -> dict[str, float]:
    """Each team's mean queue time over the jobs that started."""
    found: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row["start_s"]:
            found[row["team"]].append(float(row["queue_s"]))
    return {team: sum(values) / len(values) for team, values in sorted(found.items())}


def largest_estimate_error(rows: Iterable[Mapping[str, str]], estimates_usd: Mapping[str, Sequence[float]]) -> float:
    """The largest gap between a started job's actual cost and its estimate (of every pool it ran on)."""
    largest = 0.0
    for row in rows:
        if row["start_s"] and row["id"] in estimates_usd:
            actual = float(row["cost_usd"] or 0.0)
            largest = max(largest, *(abs(actual - estimate) for estimate in estimates_usd[row["id"]]))
    return largest


def budget_checks(
    spend: Mapping[tuple[str, str], TeamPeriod], budgets: Iterable[tuple[str, frozenset[str], Mapping[str, float]]],
    allowance_usd: float,
) -> list[BudgetCheck]:
    """Each budget's periods: the spend of its teams in the period against the period's budget."""
    checks = []
    for name, teams, by_period in budgets:
        for period, budget_usd in sorted(by_period.items()):
            spent = sum(row.spend_usd for (team, label), row in spend.items() if team in teams and label == period)
            checks.append(BudgetCheck(name, period, budget_usd, round(spent, 2), allowance_usd))
    return checks


def queue_checks(before: Mapping[str, float], after: Mapping[str, float], teams: Iterable[str]) -> list[QueueCheck]:
    """The mean queue time of each of `teams`, before and after."""
    return [QueueCheck(team, before.get(team, 0.0), after.get(team, 0.0)) for team in sorted(teams)]


def read_rows(run: Path) -> list[dict[str, str]]:
    with (run / "jobs.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def estimates(jobs: Iterable[Job], rows: Iterable[Mapping[str, str]], cluster_pools: Mapping[str, Any],
              rules: Governance) -> dict[str, list[float]]:
    """Each started job's estimated cost on each pool it ran on, as the budget guard reserves it."""
    pools_of = {row["id"]: [p for p in row["pools"].split("|") if p] for row in rows if row["start_s"]}
    found = {}
    for job in jobs:
        if job.id in pools_of:
            found[job.id] = [estimate_usd(job, cluster_pools[pool], rules.default_runtime_s)
                             for pool in pools_of[job.id]]
    return found


def run_both(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, float, float]:
    """Replays ungoverned and governed; the two run directories and the wall seconds of each."""
    before, after = folder / "ungoverned", folder / "governed"
    start = time.perf_counter()
    api.simulate(args.trace, args.cluster, "default", seed=args.seed, out=before)
    middle = time.perf_counter()
    api.simulate(args.trace, args.cluster, "governed", seed=args.seed, out=after, governance=args.governance)
    return before, after, middle - start, time.perf_counter() - middle


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    rules = load_governance(args.governance)
    before_run, after_run, before_s, after_s = run_both(args, folder)
    before_rows, after_rows = read_rows(before_run), read_rows(after_run)
    period = rules.budgets[0].period if rules.budgets else "month"

    def label_of(simulated_s: float) -> str:
        return period_bounds(period, rules.epoch_s + simulated_s)[2]

    before, after = team_periods(before_rows, label_of), team_periods(after_rows, label_of)
    section = json.loads((after_run / "summary.json").read_text(encoding="utf-8"))["governance"]
    jobs = list(read_trace_jobs(args.trace))
    error_usd = largest_estimate_error(after_rows, estimates(jobs, after_rows, load_cluster(args.cluster).pools, rules))
    budgets = [(budget.name, budget.teams, {label: float(value["budget_usd"]) for label, value
                                            in section["budgets"][budget.name]["periods"].items()})
               for budget in rules.budgets]
    budgeted = {team for budget in rules.budgets for team in budget.teams}
    teams = sorted({row["team"] for row in before_rows})
    return {
        "machine": machine(), "trace": Path(args.trace).name, "cluster": Path(args.cluster).name,
        "governance": Path(args.governance).name, "seed": args.seed, "period": period,
        "wall_s": {"ungoverned": round(before_s, 2), "governed": round(after_s, 2)},
        "rows": [_row(key, before, after, budgets) for key in sorted(set(before) | set(after))],
        "largest_estimate_error_usd": round(error_usd, 2),
        "budget_checks": [asdict(check) | {"ok": check.ok} for check in budget_checks(after, budgets, error_usd)],
        "queue_checks": [asdict(check) | {"ok": check.ok} for check in queue_checks(
            mean_queue_by_team(before_rows), mean_queue_by_team(after_rows), (t for t in teams if t not in budgeted))],
        "jain_index": section.get("jain_index"),
    }


def _row(
    key: tuple[str, str], before: Mapping[tuple[str, str], TeamPeriod], after: Mapping[tuple[str, str], TeamPeriod],
    budgets: Sequence[tuple[str, frozenset[str], Mapping[str, float]]],
) -> dict[str, Any]:
    team, period = key
    limit = [by_period[period] for _, teams, by_period in budgets if team in teams and period in by_period]
    empty = TeamPeriod(team, period, 0.0, 0, None, None)
    was, now = before.get(key, empty), after.get(key, empty)
    return {"team": team, "period": period, "budget_usd": min(limit) if limit else None,
            "spend_usd": [was.spend_usd, now.spend_usd], "jobs_submitted": was.jobs_submitted,
            "queue_mean_s": [was.queue_mean_s, now.queue_mean_s], "queue_p95_s": [was.queue_p95_s, now.queue_p95_s]}


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} s"


def render(report: Mapping[str, Any]) -> str:
    lines = [describe(), f"{report['trace']} on {report['cluster']}, seed {report['seed']}; governed: "
             f"{report['governance']} (profile governed); wall {report['wall_s']['ungoverned']} s ungoverned, "
             f"{report['wall_s']['governed']} s governed", ""]
    header = ("team", report["period"], "jobs", "budget", "spend before", "spend after", "queue mean before",
              "after", "queue p95 before", "after")
    cells = [header] + [(
        row["team"], row["period"], f"{row['jobs_submitted']:,}",
        "-" if row["budget_usd"] is None else f"${row['budget_usd']:,.0f}",
        f"${row['spend_usd'][0]:,.2f}", f"${row['spend_usd'][1]:,.2f}",
        _seconds(row["queue_mean_s"][0]), _seconds(row["queue_mean_s"][1]),
        _seconds(row["queue_p95_s"][0]), _seconds(row["queue_p95_s"][1]),
    ) for row in report["rows"]]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(header))]
    for line in cells:
        lines.append("  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True))).rstrip())
    lines += ["", f"largest estimate error of a job in the governed run: ${report['largest_estimate_error_usd']:,.2f}"]
    for check in report["budget_checks"]:
        lines.append(f"check {'ok  ' if check['ok'] else 'FAIL'} {check['budget']} {check['period']}: spent "
                     f"${check['spent_usd']:,.2f} <= budget ${check['budget_usd']:,.2f} "
                     f"+ ${check['allowance_usd']:,.2f}")
    for check in report["queue_checks"]:
        lines.append(f"check {'ok  ' if check['ok'] else 'FAIL'} {check['team']} (no budget): mean queue "
                     f"{check['before_s']:,.0f} s before, {check['after_s']:,.0f} s after: not worse")
    if report["jain_index"] is not None:
        lines.append(f"Jain's fairness index over teams (governed run): {report['jain_index']:.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=SAMPLES / "three-teams.jsonl")
    parser.add_argument("--cluster", type=Path, default=SAMPLES / "three-teams-cluster.toml")
    parser.add_argument("--governance", type=Path, default=SAMPLES / "three-teams-governance.toml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-governance-") as folder:
        report = measure(args, Path(folder))
    print(json.dumps(report, indent=2) if args.json else render(report))
    passed = all(check["ok"] for check in (*report["budget_checks"], *report["queue_checks"]))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
