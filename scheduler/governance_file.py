"""Reading a governance file (TOML): teams, queues with quotas, budgets, approval rules.

Validated when it is read, as cluster and profile files are: a mistake names the file, the
line and the key, and nothing runs.

```toml
epoch = "2026-11-01T00:00:00Z"   # the wall-clock time of simulated time 0 (periods are UTC)
default_runtime_s = 14400         # a job's estimated run time when it declares none
team_from = "namespace"           # Kubernetes: the team is the namespace, or a label:
team_label = "fleetsched.io/team"

[[flavor]]
name = "a100"
gpu_models = ["A100-80GB"]        # or pools = ["a100-od"]

[[queue]]
name = "research"                 # an organisation: no parent
[[queue]]
name = "vision"
parent = "research"
teams = ["vision"]                # default: [name]
quota.a100 = { guaranteed_gpus = 8, weight = 1, limit_gpus = 16 }

[[budget]]
team = "vision"                   # or queue = "research": all its teams
period = "month"                  # day, week or month
usd = 5000
warn_at = 0.8
action = "hold"                   # hold, spot-only or deny

[[approval]]
name = "big"
above_usd = 1000                  # any condition given makes a job need approval
above_gpus = 16
pools = ["h100-od"]
delay_mean_s = 3600               # simulation: the approver's delay (or delay_s, fixed)
reject_fraction = 0.1
```
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.governance import (
    SECONDS_PER_DAY,
    ApprovalRule,
    Budget,
    Flavor,
    Governance,
    OverBudget,
    Period,
    Queue,
    Quota,
    civil_from_days,
    days_from_civil,
)
from scheduler.model import Pool
from scheduler.tomlfile import TomlDocument

MAX_USD = 1e12
MIN_WEIGHT = 0.001  # weights divide shares: a vanishing one would overflow them
_TOP = {"epoch", "default_runtime_s", "team_from", "team_label", "flavor", "queue", "budget", "approval"}
_KEYS = {
    "flavor": {"name", "gpu_models", "pools"},
    "queue": {"name", "parent", "teams", "quota"},
    "budget": {"name", "team", "queue", "period", "usd", "warn_at", "action"},
    "approval": {"name", "above_usd", "above_gpus", "pools", "delay_s", "delay_mean_s", "reject_fraction"},
}
_QUOTA_KEYS = {"guaranteed_gpus", "weight", "limit_gpus"}


def load_governance(path: str | Path) -> Governance:
    """Reads a governance file; InputError naming file, line and key on any mistake."""
    return parse_governance(TomlDocument.read(path))


@dataclass(frozen=True, slots=True)
class _Table:
    """One `[[kind]]` table of the document, for errors that point at its lines."""

    document: TomlDocument
    kind: str
    index: int
    table: Mapping[str, Any]

    def fail(self, key: str, message: str) -> NoReturn:
        self.document.fail_in(self.kind, self.index, self.table, key, message)

    def check_keys(self) -> None:
        for key in self.table:
            if key not in _KEYS[self.kind]:
                article = "an" if self.kind[0] in "aeiou" else "a"
                self.fail(key, f"unknown key; {article} {self.kind} has {', '.join(sorted(_KEYS[self.kind]))}")

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "required text" if value is None else f"must be text, got {value!r}")
        return value.strip()

    def names(self, key: str, default: tuple[str, ...] = ()) -> frozenset[str]:
        value = self.table.get(key, list(default))
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            self.fail(key, f"must be a list of names, got {value!r}")
        return frozenset(item.strip() for item in value)

    def number(self, key: str, default: float, *, most: float = MAX_USD, keyed: str = "") -> float:
        value = self.table.get(key, default)
        return _number(value, lambda message: self.fail(keyed or key, message), most)


def _number(value: object, fail: Any, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        fail(f"must be a finite number >= 0, got {value!r}")
    if float(value) > most:  # type: ignore[arg-type]
        fail(f"must be at most {most:g}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def parse_governance(document: TomlDocument) -> Governance:
    data = document.data
    for key in data:
        if key not in _TOP:
            document.fail(key, f"unknown top-level key; a governance file has {', '.join(sorted(_TOP))}")
    team_from = _top_text(document, "team_from", "namespace")
    if team_from not in ("namespace", "label"):
        document.fail("team_from", f'must be "namespace" or "label", got {team_from!r}')
    runtime = _number(data.get("default_runtime_s", 4 * 3600.0), lambda m: document.fail("default_runtime_s", m),
                      365 * 86400.0)  # fmt: skip
    if runtime <= 0:
        document.fail("default_runtime_s", "must be more than 0")
    flavors = tuple(_flavor(table) for table in _tables(document, "flavor"))
    _unique(document, "flavor", [f.name for f in flavors])
    queues = _queues(document, {f.name for f in flavors})
    budgets = tuple(_budget(table, queues) for table in _tables(document, "budget"))
    _unique(document, "budget", [b.name for b in budgets])
    approvals = tuple(_approval(table) for table in _tables(document, "approval"))
    _unique(document, "approval", [a.name for a in approvals])
    return Governance(
        source=document.source,
        epoch_s=_epoch(document),
        default_runtime_s=runtime,
        team_from=team_from,
        team_label=_top_text(document, "team_label", "fleetsched.io/team"),
        flavors=flavors,
        queues=queues,
        budgets=budgets,
        approvals=approvals,
    )


def _top_text(document: TomlDocument, key: str, default: str) -> str:
    value = document.data.get(key, default)
    if not isinstance(value, str) or not value.strip():
        document.fail(key, f"must be text, got {value!r}")
    return value.strip()


_MOMENT = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?\s*(Z|[+-]\d{2}:\d{2})")


def _epoch(document: TomlDocument) -> float:
    """Simulated time 0 as Unix seconds: a TOML date-time with an offset, or the same as text."""
    value = document.data.get("epoch", "1970-01-01T00:00:00Z")
    if hasattr(value, "utcoffset") and hasattr(value, "timestamp"):  # TOML's own date-time
        if value.utcoffset() is None:
            document.fail("epoch", f"must say its time zone (end it in Z for UTC), got {value.isoformat()}")
        return float(value.timestamp())
    text = value.strip() if isinstance(value, str) else ""
    match = _MOMENT.fullmatch(text)
    if match is None:
        shown = value.isoformat() if hasattr(value, "isoformat") else repr(value)  # a TOML date alone, or a time
        document.fail("epoch", f'must be a date and time with its zone, such as "2026-11-01T00:00:00Z", got {shown}')
    year, month, day, hour, minute, second = (int(part or 0) for part in match.groups()[:6])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        document.fail("epoch", f"no such date and time: {text!r}")
    zone = match.group(7)
    offset_s = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    days = days_from_civil(year, month, day)
    if civil_from_days(days) != (year, month, day):
        document.fail("epoch", f"no such date: {text!r}")
    return days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_s


def _tables(document: TomlDocument, kind: str) -> list[_Table]:
    value = document.data.get(kind, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        document.fail(kind, f"must be [[{kind}]] tables")
    tables = [_Table(document, kind, index, table) for index, table in enumerate(value)]
    for table in tables:
        table.check_keys()
    return tables


def _unique(document: TomlDocument, kind: str, names: list[str]) -> None:
    for index, name in enumerate(names):
        if name in names[:index]:
            document.fail(f"{kind}[{index}].name", f"{kind} {name!r} is defined twice", key="name", table=kind,
                          index=index)  # fmt: skip


def _flavor(table: _Table) -> Flavor:
    models: set[str] = set()
    for name in sorted(table.names("gpu_models")):  # by the catalog's names: "A100" is not a model
        try:
            models.add(default_catalog().resolve(name).name)
        except InputError as error:
            table.fail("gpu_models", error.problem)
    flavor = Flavor(table.text("name"), frozenset(models), table.names("pools"))
    if not flavor.gpu_models and not flavor.pools:
        table.fail("gpu_models", "a flavour names gpu_models or pools")
    return flavor


def _queues(document: TomlDocument, flavors: set[str]) -> tuple[Queue, ...]:
    tables = _tables(document, "queue")
    queues: list[Queue] = []
    for table in tables:
        name = table.text("name")
        quotas = {flavor: _quota(table, flavor, value) for flavor, value in _quota_tables(table).items()}
        unknown = sorted(set(quotas) - flavors)
        if unknown and flavors:
            table.fail(f"quota.{unknown[0]}", f"no flavour {unknown[0]!r}; flavours: {', '.join(sorted(flavors))}")
        queues.append(Queue(name, table.text("parent", "") if "parent" in table.table else "",
                            table.names("teams", (name,)), MappingProxyType(quotas)))  # fmt: skip
    _unique(document, "queue", [q.name for q in queues])
    by_name = {q.name: q for q in queues}
    parents = {q.parent for q in queues if q.parent}
    for table, queue in zip(tables, queues, strict=True):
        if queue.parent and queue.parent not in by_name:
            table.fail("parent", f"no queue {queue.parent!r}")
        if queue.parent and by_name[queue.parent].parent:
            table.fail("parent", f"{queue.parent!r} is itself under {by_name[queue.parent].parent!r}; "
                                 "queues are two levels: organisation, then team")  # fmt: skip
        if queue.name in parents and "teams" in table.table:
            table.fail("teams", "an organisation holds queues, not teams; list the teams in its queues")
    final = tuple(Queue(q.name, q.parent, frozenset() if q.name in parents else q.teams, q.quotas) for q in queues)
    seen: dict[str, str] = {}
    for table, queue in zip(tables, final, strict=True):
        for team in sorted(queue.teams):
            if team in seen:
                table.fail("teams", f"team {team!r} is already in queue {seen[team]!r}")
            seen[team] = queue.name
    return final


def _quota_tables(table: _Table) -> Mapping[str, Any]:
    value = table.table.get("quota", {})
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        table.fail("quota", "must be tables per flavour: quota.FLAVOUR = { guaranteed_gpus = 8, weight = 1 }")
    return value


def _quota(table: _Table, flavor: str, value: Mapping[str, Any]) -> Quota:
    for key in value:
        if key not in _QUOTA_KEYS:
            table.fail(f"quota.{flavor}.{key}", f"unknown key; a quota has {', '.join(sorted(_QUOTA_KEYS))}")

    def number(key: str, default: float) -> float:
        return _number(value.get(key, default), lambda m: table.fail(f"quota.{flavor}.{key}", m), 1e9)

    quota = Quota(number("guaranteed_gpus", 0.0), number("weight", 1.0), number("limit_gpus", 1e9))
    if 0 < quota.weight < MIN_WEIGHT:
        table.fail(f"quota.{flavor}.weight", f"must be 0 or from {MIN_WEIGHT:g}, got {quota.weight!r}")
    if quota.limit_gpus < quota.guaranteed_gpus:
        table.fail(f"quota.{flavor}.limit_gpus", f"is below guaranteed_gpus ({quota.guaranteed_gpus:g})")
    return Quota(quota.guaranteed_gpus, quota.weight, quota.limit_gpus if "limit_gpus" in value else math.inf)


def _budget(table: _Table, queues: tuple[Queue, ...]) -> Budget:
    whose = [key for key in ("team", "queue") if key in table.table]
    if len(whose) != 1:
        table.fail("team", "give one of team = NAME or queue = NAME")
    owner = table.text(whose[0])
    if whose[0] == "team":
        teams = frozenset({owner})
    else:
        queue = next((q for q in queues if q.name == owner), None)
        if queue is None:
            table.fail("queue", f"no queue {owner!r}")
        teams = frozenset(queue.teams | {t for q in queues if q.parent == owner for t in q.teams})
    period_text = table.text("period", "month")
    if period_text not in Period.__members__.values():
        table.fail("period", f"must be one of {', '.join(p.value for p in Period)}, got {period_text!r}")
    action_text = table.text("action", "hold")
    if action_text not in OverBudget.__members__.values():
        table.fail("action", f"must be one of {', '.join(a.value for a in OverBudget)}, got {action_text!r}")
    if "usd" not in table.table:
        table.fail("usd", "required: the dollars allowed per period")
    usd = table.number("usd", 0.0)
    warn_at = table.number("warn_at", 0.8, most=1.0)
    name = table.text("name", f"{owner}-{period_text}")
    return Budget(name, teams, Period(period_text), usd, warn_at, OverBudget(action_text))


def _approval(table: _Table) -> ApprovalRule:
    conditions = [key for key in ("above_usd", "above_gpus", "pools") if key in table.table]
    if not conditions:
        table.fail("above_usd", "an approval rule needs a condition: above_usd, above_gpus or pools")
    gpus = table.table.get("above_gpus", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        table.fail("above_gpus", f"must be a whole number >= 0, got {gpus!r}")
    if "delay_s" in table.table and "delay_mean_s" in table.table:
        table.fail("delay_mean_s", "give delay_s (fixed) or delay_mean_s (exponential), not both")
    return ApprovalRule(
        name=table.text("name"),
        above_usd=table.number("above_usd", math.inf) if "above_usd" in table.table else math.inf,
        above_gpus=gpus,
        pools=table.names("pools"),
        delay_s=table.number("delay_s", 0.0, most=365 * 86400.0),
        delay_mean_s=table.number("delay_mean_s", 0.0, most=365 * 86400.0),
        reject_fraction=table.number("reject_fraction", 0.0, most=1.0),
    )


def check_against_cluster(rules: Governance, pools: Mapping[str, Pool]) -> None:
    """InputError, naming the governance file's line, for a flavour or approval rule that names
    no pool of the cluster: its quotas or its rule would silently never apply."""
    names = ", ".join(pools)
    for index, flavor in enumerate(rules.flavors):
        unknown = sorted(flavor.pools - set(pools))
        if unknown:
            _fail_at(rules, "flavor", index, "pools", f"no pool {unknown[0]!r} in the cluster; it has {names}")
        if not any(pool.name in flavor.pools or pool.gpu.name in flavor.gpu_models for pool in pools.values()):
            models = ", ".join(sorted({pool.gpu.name for pool in pools.values()}))
            _fail_at(rules, "flavor", index, "gpu_models", f"names no pool of the cluster (its GPU models: {models})")
    for index, rule in enumerate(rules.approvals):
        unknown = sorted(rule.pools - set(pools))
        if unknown:
            _fail_at(rules, "approval", index, "pools", f"no pool {unknown[0]!r} in the cluster; it has {names}")


def _fail_at(rules: Governance, kind: str, index: int, key: str, message: str) -> NoReturn:
    document = TomlDocument.read(rules.source)  # the rules keep no lines: the file is read again to point at one
    _Table(document, kind, index, document.data[kind][index]).fail(key, message)
