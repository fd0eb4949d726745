"""The spend book: what each team and budget spent and reserved per period, in both worlds.

A run's estimated cost is reserved when it starts, against the period it starts in, and
settled to its actual cost when it stops (ends, is evicted or taken back): so jobs started
together can overrun a budget by no more than the gap between their estimates and their
actual costs. The book is plain data a world keeps; the extender keeps a copy in the API
server (`to_json`, `from_json`) so that spend survives a restart.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scheduler.errors import InputError

VERSION = 1


@dataclass(frozen=True, slots=True)
class Reservation:
    """A running job's estimate, held against its team and budgets in one period each."""

    team: str
    team_period: str
    budgets: tuple[tuple[str, str], ...]  # (budget, period label)
    usd: float


@dataclass(slots=True)
class SpendBook:
    """Dollars spent (settled) and reserved per (team or budget, period label)."""

    spent: dict[tuple[str, str], float] = field(default_factory=dict)
    team_spent: dict[tuple[str, str], float] = field(default_factory=dict)
    reserved: dict[tuple[str, str], float] = field(default_factory=dict)
    team_reserved: dict[tuple[str, str], float] = field(default_factory=dict)
    open: dict[str, Reservation] = field(default_factory=dict)

    def reserve(self, job_id: str, team: str, team_period: str, budgets: Sequence[tuple[str, str]], usd: float) -> None:
        """Holds `usd` for a job starting now against its team and each (budget, period)."""
        if job_id in self.open:
            raise ValueError(f"job {job_id} already holds a reservation")
        self.open[job_id] = Reservation(team, team_period, tuple(budgets), usd)
        _add(self.team_reserved, (team, team_period), usd)
        for key in budgets:
            _add(self.reserved, key, usd)

    def settle(self, job_id: str, usd: float) -> Reservation | None:
        """Replaces the job's reservation by what its run cost; None when it held none."""
        reservation = self.open.pop(job_id, None)
        if reservation is None:
            return None
        _add(self.team_reserved, (reservation.team, reservation.team_period), -reservation.usd)
        _add(self.team_spent, (reservation.team, reservation.team_period), usd)
        for key in reservation.budgets:
            _add(self.reserved, key, -reservation.usd)
            _add(self.spent, key, usd)
        return reservation

    def committed(self, budget: str, period: str) -> float:
        """Spent plus reserved by `budget` in `period`."""
        return self.spent.get((budget, period), 0.0) + self.reserved.get((budget, period), 0.0)

    def to_json(self) -> str:
        """The book as JSON (keys sorted: the same book gives the same text)."""

        def rows(table: Mapping[tuple[str, str], float]) -> list[list[object]]:
            return [[name, period, usd] for (name, period), usd in sorted(table.items())]

        return json.dumps({
            "version": VERSION,
            "spent": rows(self.spent),
            "team_spent": rows(self.team_spent),
            "open": {job: [r.team, r.team_period, [list(b) for b in r.budgets], r.usd]
                     for job, r in sorted(self.open.items())},
        }, sort_keys=True, separators=(",", ":"))  # fmt: skip

    @classmethod
    def from_json(cls, text: str, source: str = "spend book") -> SpendBook:
        """A book read back from `to_json`; InputError naming `source` when it is not one."""
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, expected {VERSION}")
            book = cls()
            for name, period, usd in data["spent"]:
                book.spent[(str(name), str(period))] = float(usd)
            for name, period, usd in data["team_spent"]:
                book.team_spent[(str(name), str(period))] = float(usd)
            for job, (team, team_period, budgets, usd) in data["open"].items():
                book.reserve(str(job), str(team), str(team_period), [(str(b), str(p)) for b, p in budgets], float(usd))
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise InputError(f"not a spend book: {error}", source=source) from None
        return book


def _add(table: dict[tuple[str, str], float], key: tuple[str, str], usd: float) -> None:
    total = table.get(key, 0.0) + usd
    if abs(total) < 1e-9:  # a settled reservation leaves no dust behind
        table.pop(key, None)
    else:
        table[key] = total
