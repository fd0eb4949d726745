"""The governance section of a run's summary.json, read into values and printed as tables.

`read_section` checks the section's shape (the format simulator/guardrail_report.py writes:
budgets per period, teams per period, approvals, fair share, Jain's index; keys it does not
show, such as `queues`, are left alone) and turns it into frozen values. A field of the wrong
type is an InputError naming the file and the field's path, e.g. `run/summary.json:
governance.budgets.vision-monthly.periods.2026-11.spent_usd: must be a number >= 0, got '5'`.
`render_report` prints three tables (budgets per period, teams per period, teams over the run)
and Jain's index, for `fleetsched budget status`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.errors import InputError

STATES = ("ok", "warning", "over")


@dataclass(frozen=True)
class BudgetPeriod:
    """One budget in one calendar period."""

    budget: str
    period: str
    action: str
    budget_usd: float
    warn_usd: float
    spent_usd: float
    reserved_usd: float
    state: str

    @property
    def used_fraction(self) -> float:
        """Spent and reserved over the budget (a reservation is spent once its job ends)."""
        committed = self.spent_usd + self.reserved_usd
        if self.budget_usd > 0:
            return committed / self.budget_usd
        return float("inf") if committed > 0 else 0.0


@dataclass(frozen=True)
class TeamPeriod:
    """One team's spend and held jobs in one period."""

    team: str
    period: str
    spent_usd: float
    jobs_held: Mapping[str, int]
    hours_held: Mapping[str, float]
    jobs_denied: int


@dataclass(frozen=True)
class TeamTotals:
    """One team over the whole run: approvals, and fair share against GPUs used (time averages)."""

    team: str
    queue: str
    approvals_requested: int
    approvals_approved: int
    approvals_rejected: int
    mean_wait_s: float | None
    max_wait_s: float | None
    fair_share_gpus: float
    used_gpus: float


@dataclass(frozen=True)
class GovernanceReport:
    """The whole section."""

    rules_file: str
    budgets: tuple[BudgetPeriod, ...]
    team_periods: tuple[TeamPeriod, ...]
    teams: tuple[TeamTotals, ...]
    jain_index: float | None
    enforced: bool = True  # False: the profile had no guardrail plugin; its holds and approvals would-have-beens


class _Reader:
    """Typed access to the JSON section, naming the field's path in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str) -> InputError:
        return InputError(problem, source=self.source, field=path)

    def table(self, value: Any, path: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be an object, got {json_type(value)}")
        return value

    def item(self, table: Mapping[str, Any], key: str, path: str) -> Any:
        if key not in table:
            raise self.fail(f"{path}.{key}", "missing")
        return table[key]

    def number(self, table: Mapping[str, Any], key: str, path: str) -> float:
        value = self.item(table, key, path)
        # `not value >= 0` is also true of NaN, which Python's JSON reader accepts.
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise self.fail(f"{path}.{key}", f"must be a number >= 0, got {value!r}")
        return float(value)

    def optional_number(self, table: Mapping[str, Any], key: str, path: str) -> float | None:
        """A number that may be absent or null (a wait when nothing waited)."""
        return None if table.get(key) is None else self.number(table, key, path)

    def count(self, table: Mapping[str, Any], key: str, path: str) -> int:
        value = self.item(table, key, path)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.fail(f"{path}.{key}", f"must be a whole number >= 0, got {value!r}")
        return value

    def text(self, table: Mapping[str, Any], key: str, path: str) -> str:
        value = self.item(table, key, path)
        if not isinstance(value, str):
            raise self.fail(f"{path}.{key}", f"must be text, got {value!r}")
        return value

    def counts(self, table: Mapping[str, Any], key: str, path: str) -> dict[str, int]:
        found = self.table(table.get(key, {}), f"{path}.{key}")
        return {reason: self.count(found, reason, f"{path}.{key}") for reason in sorted(found)}

    def numbers(self, table: Mapping[str, Any], key: str, path: str) -> dict[str, float]:
        found = self.table(table.get(key, {}), f"{path}.{key}")
        return {reason: self.number(found, reason, f"{path}.{key}") for reason in sorted(found)}


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def read_section(section: Any, source: str) -> GovernanceReport:
    """The report of a summary's `governance` value; InputError naming `source` and the field if malformed."""
    reader = _Reader(source)
    root = reader.table(section, "governance")
    budgets = reader.table(reader.item(root, "budgets", "governance"), "governance.budgets")  # a run writes both,
    teams = reader.table(reader.item(root, "teams", "governance"), "governance.teams")  # if only empty
    jain_index = reader.optional_number(root, "jain_index", "governance")
    rules_file = root.get("file", "")
    return GovernanceReport(
        rules_file=rules_file if isinstance(rules_file, str) else "",
        budgets=tuple(row for name in sorted(budgets) for row in _budget(reader, name, budgets[name])),
        team_periods=tuple(row for name in sorted(teams) for row in _team_periods(reader, name, teams[name])),
        teams=tuple(_team_totals(reader, name, teams[name]) for name in sorted(teams)),
        jain_index=jain_index,
        enforced=root.get("enforced", True) is not False,
    )


def _budget(reader: _Reader, name: str, value: Any) -> list[BudgetPeriod]:
    path = f"governance.budgets.{name}"
    budget = reader.table(value, path)
    action = reader.text(budget, "action", path)
    periods = reader.table(reader.item(budget, "periods", path), f"{path}.periods")
    rows = []
    for period in sorted(periods):
        where = f"{path}.periods.{period}"
        row = reader.table(periods[period], where)
        state = reader.text(row, "state", where)
        if state not in STATES:
            raise reader.fail(f"{where}.state", f"must be one of {', '.join(STATES)}, got {state!r}")
        rows.append(BudgetPeriod(
            budget=name, period=period, action=action, budget_usd=reader.number(row, "budget_usd", where),
            warn_usd=reader.number(row, "warn_usd", where), spent_usd=reader.number(row, "spent_usd", where),
            reserved_usd=reader.number(row, "reserved_usd", where), state=state,
        ))
    return rows


def _team_periods(reader: _Reader, name: str, value: Any) -> list[TeamPeriod]:
    path = f"governance.teams.{name}"
    periods = reader.table(reader.item(reader.table(value, path), "periods", path), f"{path}.periods")
    rows = []
    for period in sorted(periods):
        where = f"{path}.periods.{period}"
        row = reader.table(periods[period], where)
        rows.append(TeamPeriod(
            team=name, period=period, spent_usd=reader.number(row, "spent_usd", where),
            jobs_held=reader.counts(row, "jobs_held", where), hours_held=reader.numbers(row, "hours_held", where),
            jobs_denied=reader.count(row, "jobs_denied", where) if "jobs_denied" in row else 0,
        ))
    return rows


def _team_totals(reader: _Reader, name: str, value: Any) -> TeamTotals:
    path = f"governance.teams.{name}"
    team = reader.table(value, path)
    where = f"{path}.approvals"
    approvals = reader.table(team.get("approvals", {}), where)

    def count(key: str) -> int:
        return reader.count(approvals, key, where) if key in approvals else 0

    queue = team.get("queue")
    return TeamTotals(
        team=name,
        queue=queue if isinstance(queue, str) else "",
        approvals_requested=count("requested"),
        approvals_approved=count("approved"),
        approvals_rejected=count("rejected"),
        mean_wait_s=reader.optional_number(approvals, "mean_wait_s", where),
        max_wait_s=reader.optional_number(approvals, "max_wait_s", where),
        fair_share_gpus=reader.number(team, "fair_share_gpus", path),
        used_gpus=reader.number(team, "used_gpus", path),
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Columns padded to their widest cell; `right` aligns a column (of numbers) to the right."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.rjust(width) if align else cell.ljust(width)
                  for cell, width, align in zip(cells, widths, right, strict=True))
        return "  ".join(padded).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def usd(value: float) -> str:
    return f"${value:,.2f}"


def _wait(team: TeamTotals, value: float | None) -> str:
    """An approval wait; none when the team asked for no approval (the summary says 0 then)."""
    return "-" if value is None or not team.approvals_requested else f"{value:,.0f} s"


def _held(period: TeamPeriod) -> str:
    reasons = sorted(set(period.jobs_held) | set(period.hours_held))
    parts = [f"{reason} {period.jobs_held.get(reason, 0):,} ({period.hours_held.get(reason, 0.0):,.1f} h)"
             for reason in reasons]
    return ", ".join(parts) or "none"


def render_report(report: GovernanceReport) -> str:
    """The report as tables for the terminal; a budget over its limit shows OVER in capitals."""
    lines = [f"guardrails: {report.rules_file or '(file not named)'}", ""]
    if not report.enforced:
        lines[1:1] = ["not enforced: the run's profile has no guardrail plugin. Holds, approvals and denials below",
                      "are what the rules would have done; every job ran as if there were none."]  # fmt: skip
    if report.budgets:
        lines += table(
            ("budget", "period", "action", "budget", "spent", "reserved", "used", "state"),
            [(row.budget, row.period, row.action, usd(row.budget_usd), usd(row.spent_usd), usd(row.reserved_usd),
              f"{row.used_fraction:.1%}", row.state.upper() if row.state == "over" else row.state)
             for row in report.budgets],
            (False, False, False, True, True, True, True, False),
        )
    else:
        lines.append("no budgets")
    lines.append("")
    lines += table(
        ("team", "period", "spent", "held jobs (hours held) by reason", "denied"),
        [(row.team, row.period, usd(row.spent_usd), _held(row), f"{row.jobs_denied:,}") for row in report.team_periods],
        (False, False, True, False, True),
    )
    lines.append("")
    lines += table(
        ("team", "queue", "approvals", "approved", "rejected", "wait mean", "wait max", "fair share GPUs",
         "used GPUs"),
        [(row.team, row.queue or "-", f"{row.approvals_requested:,}", f"{row.approvals_approved:,}",
          f"{row.approvals_rejected:,}", _wait(row, row.mean_wait_s), _wait(row, row.max_wait_s),
          f"{row.fair_share_gpus:,.1f}", f"{row.used_gpus:,.1f}") for row in report.teams],
        (False, False, True, True, True, True, True, True, True),
    )
    lines.append("")
    jain = "n/a" if report.jain_index is None else f"{report.jain_index:.3f}"
    lines.append(f"Jain's fairness index over teams: {jain}")
    return "\n".join(lines)
