"""The simulated world's guardrail state: the spend book, approvals, holds, fair-share history.

`SimWorld` owns one `Guardrails` when the run is governed and tells it what happens: jobs
arriving (those an approval rule names ask for approval: the approver answers after a delay
drawn per job from the run's seed, rejecting a drawn share), runs starting (their estimate
reserved) and stopping (settled to what the ledger charged them), and each decision (which
jobs a guardrail holds, and from when). It builds the `GovernanceView` each cycle shows, and
the summary's `governance` section (`document`).

Time: simulated second `t` is Unix time `rules.epoch_s + t`; periods are the rules' UTC
calendar periods (a team's own spend and holds: the month). Spend is charged to the period its
run started in.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from scheduler.decision import Code, Decision
from scheduler.fairshare import make_view
from scheduler.governance import Governance, estimate_usd, job_gpus, period_bounds, team_period
from scheduler.model import ClusterSnapshot, Job, Pool
from scheduler.spend import SpendBook
from simulator.runs import MS, ms

#: The admit plugins whose answers hold or deny jobs (`policies.governance`).
GUARDS = ("ApprovalGate", "QuotaLimit", "BudgetGuard")


@dataclass(frozen=True, slots=True)
class Hold:
    """A job of `team` held by one guardrail since `since_ms`, counted in `period`."""

    guard: str
    team: str
    since_ms: int
    period: str


@dataclass(slots=True)
class TeamRecord:
    """What the summary says of one team."""

    jobs_held: dict[tuple[str, str], int] = field(default_factory=dict)  # (period, guard) -> jobs
    held_ms: dict[tuple[str, str], int] = field(default_factory=dict)  # (period, guard) -> ms
    denied: dict[str, int] = field(default_factory=dict)  # period -> jobs
    requested: int = 0
    approved: int = 0
    rejected: int = 0
    waits_ms: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Guardrails:
    """Spend, approvals and holds of one governed replay."""

    rules: Governance
    seed: int
    timer: Callable[[int, Callable[[], None]], None]  # after delay_ms, call back (and wake the scheduler)
    job_of: Callable[[str], Job]  # a waiting or running job by id
    book: SpendBook = field(default_factory=SpendBook)
    enforced: bool = True  # whether the profile has a guardrail plugin; else the rules are only reported
    approved: set[str] = field(default_factory=set)
    rejected: set[str] = field(default_factory=set)
    asked_ms: dict[str, int] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why each held job is held, as last told
    teams: dict[str, TeamRecord] = field(default_factory=dict)
    periods_seen: set[tuple[str, str]] = field(default_factory=set)  # (budget, period)
    wakes: set[int] = field(default_factory=set)  # period ends a held job waits for
    pending_timers: int = 0
    shares_ms: dict[tuple[str, str], float] = field(default_factory=dict)  # GPU-ms of fair share
    used_ms: dict[tuple[str, str], float] = field(default_factory=dict)
    _last: tuple[int, Mapping[tuple[str, str], float]] | None = None
    _start_units: dict[str, int] = field(default_factory=dict)
    _holding: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)  # per running job
    _used: dict[tuple[str, str], float] = field(default_factory=dict)
    _used_since_ms: int = 0

    def unix_s(self, now_ms: int) -> float:
        return self.rules.epoch_s + now_ms / MS

    def team_period(self, now_ms: int) -> str:
        return team_period(self.unix_s(now_ms))

    def record(self, team: str) -> TeamRecord:
        return self.teams.setdefault(team or "(none)", TeamRecord())

    # What happens ---------------------------------------------------------------------------

    def arrived(self, job: Job, pools: Mapping[str, Pool], now_ms: int) -> None:
        """A job an approval rule names asks for approval now; the answer comes after the delay."""
        rules = self.rules.approval_rules(job, pools)
        if not rules or job.id in self.asked_ms:
            return
        rng = random.Random(f"{self.seed}:approval:{job.id}")
        delay_s = max(rule.delay_s + (rng.expovariate(1 / rule.delay_mean_s) if rule.delay_mean_s else 0.0)
                      for rule in rules)  # fmt: skip
        rejected = any(rng.random() < rule.reject_fraction for rule in rules)
        self.asked_ms[job.id] = now_ms
        self.record(self.rules.team_of(job)).requested += 1
        self.pending_timers += 1
        self.timer(ms(delay_s), lambda: self._answered(job, rejected, now_ms + ms(delay_s)))

    def _answered(self, job: Job, rejected: bool, now_ms: int) -> None:
        self.pending_timers -= 1
        record = self.record(self.rules.team_of(job))
        record.waits_ms.append(now_ms - self.asked_ms[job.id])
        if rejected:
            self.rejected.add(job.id)
            record.rejected += 1
        else:
            self.approved.add(job.id)
            record.approved += 1

    def started(self, job: Job, pools: Sequence[Pool], now_ms: int, units: int) -> None:
        """A run starts, a replica on each of `pools`: its estimate is reserved (on the first
        replica's pool); `units` is what the job cost before (`Ledger.units`)."""
        team = self.rules.team_of(job)
        pool = pools[0]
        queue = self.rules.queue_name(team)
        held: dict[tuple[str, str], float] = {}
        for replica_pool in pools:
            key = (queue, self.rules.flavor_of(replica_pool))
            held[key] = held.get(key, 0.0) + job_gpus(job, replica_pool) / job.replicas
        self._holding[job.id] = held
        self._use(now_ms, held, 1.0)
        unix_s = self.unix_s(now_ms)
        budgets = [(budget.name, period_bounds(budget.period, unix_s)[2]) for budget in self.rules.budgets_of(team)]
        self.periods_seen.update(budgets)
        usd = estimate_usd(job, pool, self.rules.default_runtime_s)
        self.book.reserve(job.id, team or "(none)", self.team_period(now_ms), budgets, usd)
        self._start_units[job.id] = units

    def stopped(self, job: Job, now_ms: int, units: int, denominator: int) -> None:
        """A run stops (ended, evicted, taken back): its reservation is settled to what it cost."""
        self._use(now_ms, self._holding.pop(job.id, {}), -1.0)
        before = self._start_units.pop(job.id, None)
        if before is not None:
            self.book.settle(job.id, (units - before) / denominator)

    def decided(self, decision: Decision, now_ms: int) -> list[tuple[str, str]]:
        """Notes which jobs a guardrail holds; returns the (job, reason) of those it denied."""
        placed = {placement.job.id for placement in decision.placements}
        denied: list[tuple[str, str]] = []
        for job_id in placed:
            self._release_hold(job_id, now_ms)
        for job_id, pending in decision.pending.items():
            status = pending.status
            if status.plugin not in GUARDS or status.code not in (Code.WAIT, Code.UNRESOLVABLE):
                self._release_hold(job_id, now_ms)
                continue
            if status.code is Code.UNRESOLVABLE:
                self._release_hold(job_id, now_ms)
                denied.append((job_id, str(status)))
                continue
            hold = self.holds.get(job_id)
            if hold is None or hold.guard != status.plugin:
                self._release_hold(job_id, now_ms)
                self._hold(job_id, status.plugin, now_ms)
            self.reasons[job_id] = str(status)
            if status.plugin == "BudgetGuard":
                self._wake_at_period_end(now_ms)
        return denied

    def _hold(self, job_id: str, guard: str, now_ms: int) -> None:
        team = self.rules.team_of(self.job_of(job_id))
        hold = self.holds[job_id] = Hold(guard, team, now_ms, self.team_period(now_ms))
        record = self.record(team)
        key = (hold.period, guard)
        record.jobs_held[key] = record.jobs_held.get(key, 0) + 1

    def denied(self, job: Job, now_ms: int) -> None:
        """A job a guardrail denied: counted in its team's period."""
        team = self.rules.team_of(job)
        period = self.team_period(now_ms)
        record = self.record(team)
        record.denied[period] = record.denied.get(period, 0) + 1

    def _release_hold(self, job_id: str, now_ms: int) -> None:
        self.reasons.pop(job_id, None)
        hold = self.holds.pop(job_id, None)
        if hold is None:
            return
        record = self.record(hold.team)
        key = (hold.period, hold.guard)
        record.held_ms[key] = record.held_ms.get(key, 0) + now_ms - hold.since_ms

    def _wake_at_period_end(self, now_ms: int) -> None:
        """A cycle at the end of the current period of every budget: held jobs may start then."""
        for budget in self.rules.budgets:
            end_ms = ms(period_bounds(budget.period, self.unix_s(now_ms))[1] - self.rules.epoch_s)
            if end_ms > now_ms and end_ms not in self.wakes:
                self.wakes.add(end_ms)
                self.pending_timers += 1
                self.timer(end_ms - now_ms, functools.partial(self._woke, end_ms))

    def _woke(self, end_ms: int) -> None:
        self.wakes.discard(end_ms)
        self.pending_timers -= 1

    # What a cycle sees ----------------------------------------------------------------------

    def view_on(
        self, snapshot: ClusterSnapshot, waiting: Iterable[Job], now_ms: int, started: frozenset[str] = frozenset()
    ) -> ClusterSnapshot:
        """`snapshot` with the governance view of now (`started`: the waiting jobs that ran before)."""
        unix_s = self.unix_s(now_ms)
        committed = {budget.name: self.book.committed(budget.name, period_bounds(budget.period, unix_s)[2])
                     for budget in self.rules.budgets}  # fmt: skip
        held = {job_id: hold.guard for job_id, hold in self.holds.items()}
        view = make_view(self.rules, snapshot, unix_s, committed, list(waiting),
                         frozenset(self.approved), frozenset(self.rejected), held)  # fmt: skip
        view = replace(view, started=started)
        self._share_until(now_ms, view.fair_share_gpus)
        return replace(snapshot, governance=view)

    def _share_until(self, now_ms: int, shares: Mapping[tuple[str, str], float]) -> None:
        """Adds the fair shares the last cycle saw up to `now_ms`, and keeps `shares` from now:
        a fair share is what the scheduler saw, from one cycle to the next."""
        if self._last is not None:
            then, last_shares = self._last
            for key, value in last_shares.items():
                self.shares_ms[key] = self.shares_ms.get(key, 0.0) + value * (now_ms - then)
        self._last = (now_ms, shares)

    def _use(self, now_ms: int, held: Mapping[tuple[str, str], float], sign: float) -> None:
        """GPUs used per (queue, flavour), integrated exactly: up to `now_ms`, then changed by `held`."""
        elapsed = now_ms - self._used_since_ms
        if elapsed:
            for key, value in self._used.items():
                self.used_ms[key] = self.used_ms.get(key, 0.0) + value * elapsed
            self._used_since_ms = now_ms
        for key, value in held.items():
            self._used[key] = self._used.get(key, 0.0) + sign * value

    def close(self, end_ms: int) -> dict[str, str]:
        """The replay ended: holds still open are counted up to `end_ms`, and shares and use.
        Returns why each job still held is held: the reason it ends unfinished with."""
        held = dict(self.reasons)
        for job_id in list(self.holds):
            self._release_hold(job_id, end_ms)
        self._share_until(end_ms, {})
        self._use(end_ms, {}, 0.0)
        return held

    # The summary ----------------------------------------------------------------------------

    def document(self, end_ms: int) -> dict[str, Any]:
        """The summary's `governance` section (see the README)."""
        from simulator.guardrail_report import governance_document

        return governance_document(self, end_ms)
