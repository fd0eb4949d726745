"""The summary's `governance` section: budgets per period, teams' spend, holds, approvals, fair share.

```json
{"file": "gov.toml", "epoch": 1793491200.0,
 "budgets": {"vision-month": {"teams": ["vision"], "period": "month", "action": "hold", "periods": {
     "2026-11": {"budget_usd": 5000.0, "warn_usd": 4000.0, "spent_usd": 4100.5, "reserved_usd": 0.0,
                 "state": "warning"}}}},
 "teams": {"vision": {"queue": "vision", "periods": {"2026-11": {"spent_usd": 4100.5,
     "jobs_held": {"BudgetGuard": 3}, "hours_held": {"BudgetGuard": 12.5}, "jobs_denied": 0}},
   "approvals": {"requested": 2, "approved": 1, "rejected": 1, "mean_wait_s": 1800.0, "max_wait_s": 3600.0},
   "fair_share_gpus": 7.5, "used_gpus": 6.9}},
 "queues": {"vision": {"a100": {"fair_share_gpus": 7.5, "used_gpus": 6.9}}},
 "jain_index": 0.97}
```

A budget's state in a period: `over` once spent plus reserved reach its dollars, `warning` from
its warning level, else `ok`. Fair share and GPUs used are averages over the whole run; Jain's
index is taken over the team queues' GPUs used divided by their fair share.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from scheduler.governance import Budget, period_bounds
from simulator.runs import MS

if TYPE_CHECKING:
    from simulator.guardrails import Guardrails

DIGITS = 6


def _round(value: float) -> float:
    return round(value, DIGITS) + 0.0  # + 0.0: no "-0.0" in the output


def budget_state(budget: Budget, committed_usd: float) -> str:
    if committed_usd >= budget.usd:
        return "over"
    return "warning" if committed_usd >= budget.warn_usd else "ok"


def periods_between(budget: Budget, start_unix_s: float, end_unix_s: float) -> list[str]:
    """The labels of the budget's periods from `start_unix_s` to `end_unix_s`, in order."""
    labels: list[str] = []
    moment = start_unix_s
    while True:
        _, end, label = period_bounds(budget.period, moment)
        labels.append(label)
        if end > end_unix_s:
            return labels
        moment = end


def governance_document(guardrails: Guardrails, end_ms: int) -> dict[str, Any]:
    rules, book = guardrails.rules, guardrails.book
    end_unix_s = guardrails.unix_s(end_ms)
    budgets: dict[str, Any] = {}
    for budget in rules.budgets:
        periods: dict[str, Any] = {}
        for label in periods_between(budget, rules.epoch_s, end_unix_s):
            spent = book.spent.get((budget.name, label), 0.0)
            reserved = book.reserved.get((budget.name, label), 0.0)
            periods[label] = {"budget_usd": _round(budget.usd), "warn_usd": _round(budget.warn_usd),
                              "spent_usd": _round(spent), "reserved_usd": _round(reserved),
                              "state": budget_state(budget, spent + reserved)}  # fmt: skip
        budgets[budget.name] = {"teams": sorted(budget.teams), "period": budget.period.value,
                                "action": budget.action.value, "periods": periods}  # fmt: skip
    duration_ms = max(end_ms, 1)
    used_ms = dict(guardrails.used_ms)
    for (queue, flavor), value in guardrails.used_ms.items():
        declared = rules.queue(queue)
        if declared is not None and declared.parent:  # an organisation uses what its queues use
            used_ms[(declared.parent, flavor)] = used_ms.get((declared.parent, flavor), 0.0) + value
    queues: dict[str, dict[str, Any]] = {}
    for queue, flavor in sorted({*guardrails.shares_ms, *used_ms}):
        queues.setdefault(queue, {})[flavor] = {
            "fair_share_gpus": _round(guardrails.shares_ms.get((queue, flavor), 0.0) / duration_ms),
            "used_gpus": _round(used_ms.get((queue, flavor), 0.0) / duration_ms),
        }
    teams = sorted({*rules.teams(), *guardrails.teams, *(team for team, _ in book.team_spent)})
    return {
        "file": Path(rules.source).name,
        "epoch": rules.epoch_s,
        "budgets": budgets,
        "teams": {team: _team(guardrails, team, queues) for team in teams},
        "queues": queues,
        "jain_index": _jain(queues, {rules.queue_name(team) for team in teams}),
        **({} if guardrails.enforced else {"enforced": False}),  # holds, approvals, denials: what would have been
    }


def _team(guardrails: Guardrails, team: str, queues: dict[str, dict[str, Any]]) -> dict[str, Any]:
    rules, book = guardrails.rules, guardrails.book
    record = guardrails.teams.get(team)
    labels = {period for name, period in (*book.team_spent, *book.team_reserved) if name == team}
    if record is not None:
        labels |= {period for period, _ in (*record.jobs_held, *record.held_ms)} | set(record.denied)
    periods: dict[str, Any] = {}
    for label in sorted(labels):
        held = {guard: count for (period, guard), count in sorted((record.jobs_held if record else {}).items())
                if period == label}  # fmt: skip
        hours = {guard: _round(held_ms / MS / 3600) for (period, guard), held_ms in
                 sorted((record.held_ms if record else {}).items()) if period == label}  # fmt: skip
        periods[label] = {"spent_usd": _round(book.team_spent.get((team, label), 0.0)),
                          "reserved_usd": _round(book.team_reserved.get((team, label), 0.0)),
                          "jobs_held": held, "hours_held": hours,
                          "jobs_denied": record.denied.get(label, 0) if record else 0}  # fmt: skip
    waits = record.waits_ms if record else []
    approvals = {
        "requested": record.requested if record else 0,
        "approved": record.approved if record else 0,
        "rejected": record.rejected if record else 0,
        "mean_wait_s": _round(sum(waits) / len(waits) / MS) if waits else 0.0,
        "max_wait_s": _round(max(waits) / MS) if waits else 0.0,
    }
    flavors = queues.get(rules.queue_name(team), {})
    return {
        "queue": rules.queue_name(team),
        "periods": periods,
        "approvals": approvals,
        "fair_share_gpus": _round(sum(f["fair_share_gpus"] for f in flavors.values())),
        "used_gpus": _round(sum(f["used_gpus"] for f in flavors.values())),
    }


def _jain(queues: dict[str, dict[str, Any]], team_queues: set[str]) -> float:
    """Jain's fairness index of GPUs used over fair share, across the team queues with a share."""
    ratios = []
    for queue in sorted(team_queues):
        flavors = queues.get(queue, {})
        share = sum(f["fair_share_gpus"] for f in flavors.values())
        if share > 0:
            ratios.append(sum(f["used_gpus"] for f in flavors.values()) / share)
    if not ratios or not any(ratios):
        return 1.0
    return _round(sum(ratios) ** 2 / (len(ratios) * sum(r * r for r in ratios)))
