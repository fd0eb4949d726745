"""Guardrails: who may spend what. Teams, queues with quotas, budgets, approval rules, and the view.

A governance file (`scheduler.governance_file`) gives the rules; a world keeps the state they
read (what each budget has spent and reserved this period, which approvals came back, what
each queue waits for) and shows it on the snapshot as a `GovernanceView`, computed by
`scheduler.fairshare.make_view` the same way in both worlds. The plugins in `policies.governance` read only that
view, the job and the snapshot, so the same rules hold in the simulator and on Kubernetes.

Money: a job's *estimate* is its price share (`job_usd_per_hour`) times its estimated run time
(`estimated_runtime_s`: the declared limit, else the trace's duration, else the file's default).
Before a job is placed its pool is not known, so admission estimates on the dearest pool the
job may use (`bound_usd`); at its start a world reserves the estimate on the pool it got, and at
its end settles the actual cost (`scheduler.spend`). A team's spend is the cost attributed to
its jobs, charged to the period in which each run started; the cluster's idle capacity is
charged to no team.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from scheduler import costing
from scheduler.model import FULL_GPU_MILLI, Capacity, Job, Pool, RequestKind

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86400.0
INFINITE = float("inf")


class Period(StrEnum):
    """A budget's calendar period, in UTC (weeks start on Monday, as ISO weeks do)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class OverBudget(StrEnum):
    """What happens to a team's new jobs once its budget is spent."""

    HOLD = "hold"  # they wait for the next period
    SPOT_ONLY = "spot-only"  # only preemptible jobs, and only on spot capacity
    DENY = "deny"  # they are rejected with the reason


@dataclass(frozen=True, slots=True)
class Flavor:
    """A kind of GPU capacity quotas are counted in: GPU models, or named pools."""

    name: str
    gpu_models: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Quota:
    """A queue's claim on one flavour: GPUs guaranteed, its weight beyond, and a hard limit."""

    guaranteed_gpus: float = 0.0
    weight: float = 1.0
    limit_gpus: float = INFINITE


DEFAULT_QUOTA = Quota()


@dataclass(frozen=True, slots=True)
class Queue:
    """An organisation (no parent) or a team queue under one, and the teams whose jobs it holds."""

    name: str
    parent: str = ""
    teams: frozenset[str] = frozenset()
    quotas: Mapping[str, Quota] = field(default_factory=lambda: MappingProxyType({}))

    def quota(self, flavor: str) -> Quota:
        return self.quotas.get(flavor, DEFAULT_QUOTA)


@dataclass(frozen=True, slots=True)
class Budget:
    """Dollars a set of teams may spend per calendar period, a warning level, and what happens at 100 %."""

    name: str
    teams: frozenset[str]
    period: Period
    usd: float
    warn_at: float = 0.8
    action: OverBudget = OverBudget.HOLD

    @property
    def warn_usd(self) -> float:
        return self.usd * self.warn_at


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """Jobs that wait for a person's approval: estimated above `above_usd`, more than `above_gpus`
    GPUs (0: no such condition), or able to run only on `pools`. In simulation an approval
    takes `delay_s` (or an exponential delay of mean `delay_mean_s`) and a `reject_fraction` of
    them are rejected, drawn per job from the run's seed."""

    name: str
    above_usd: float = INFINITE
    above_gpus: int = 0
    pools: frozenset[str] = frozenset()
    delay_s: float = 0.0
    delay_mean_s: float = 0.0
    reject_fraction: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Governance:
    """The rules of one governance file."""

    source: str = ""
    epoch_s: float = 0.0
    default_runtime_s: float = 4 * SECONDS_PER_HOUR
    team_from: str = "namespace"
    team_label: str = "fleetsched.io/team"
    flavors: tuple[Flavor, ...] = ()
    queues: tuple[Queue, ...] = ()
    budgets: tuple[Budget, ...] = ()
    approvals: tuple[ApprovalRule, ...] = ()

    def team_of(self, job: Job) -> str:
        return job.labels.team

    def queue_of(self, team: str) -> Queue | None:
        """The queue that holds `team`'s jobs (the one that lists it); None for a team none lists."""
        return next((queue for queue in self.queues if team in queue.teams), None)

    def queue_name(self, team: str) -> str:
        """The queue a team's usage counts against: its queue, or the team itself when none names it."""
        queue = self.queue_of(team)
        return queue.name if queue is not None else team

    def queue(self, name: str) -> Queue | None:
        return next((queue for queue in self.queues if queue.name == name), None)

    def budgets_of(self, team: str) -> tuple[Budget, ...]:
        return tuple(budget for budget in self.budgets if team in budget.teams)

    def teams(self) -> tuple[str, ...]:
        return tuple(sorted({team for queue in self.queues for team in queue.teams}))

    def flavor_of(self, pool: Pool) -> str:
        """The flavour `pool`'s GPUs count in: the first that names the pool or its GPU model, else the model."""
        for flavor in self.flavors:
            if pool.name in flavor.pools or pool.gpu.name in flavor.gpu_models:
                return flavor.name
        return pool.gpu.name

    def approval_rules(self, job: Job, pools: Mapping[str, Pool]) -> tuple[ApprovalRule, ...]:
        """The approval rules `job` falls under on a cluster of `pools`."""
        if not self.approvals:
            return ()
        usable = usable_pools(job, pools)
        gpus = job_gpus(job)
        bound = bound_usd(job, pools, self.default_runtime_s)
        return tuple(
            rule
            for rule in self.approvals
            if bound > rule.above_usd
            or (rule.above_gpus and gpus > rule.above_gpus)
            or (rule.pools and usable and all(pool.name in rule.pools for pool in usable))
        )


def usable_pools(job: Job, pools: Mapping[str, Pool]) -> list[Pool]:
    """The pools whose GPU model `job` accepts (its `gpu_models`; any when it names none)."""
    return [pool for pool in pools.values() if not job.gpu_models or pool.gpu.name in job.gpu_models]


def job_gpus(job: Job, pool: Pool | None = None) -> float:
    """GPUs' worth the whole job holds (every replica), on `pool` when given (a MIG slice's
    worth depends on the GPU), else counting a share or slice as what it asks of one GPU."""
    if pool is not None:
        return costing.gpu_fraction(pool, job.request) * job.replicas
    request = job.request
    per_replica = request.milli / FULL_GPU_MILLI if request.kind is RequestKind.SHARE else float(request.gpus)
    return per_replica * job.replicas


def estimated_runtime_s(job: Job, default_runtime_s: float) -> float:
    """How long the job is expected to hold its GPUs: the limit its owner declared, else the
    trace's duration (simulation), else `default_runtime_s`."""
    if job.runtime_limit_s > 0:
        return job.runtime_limit_s
    if job.duration_s > 0:
        return job.duration_s
    return default_runtime_s


def job_usd_per_hour(job: Job, pool: Pool) -> float:
    """What the whole job costs per hour on `pool`: its price share of each replica."""
    return costing.replica_usd_per_hour(pool, job.request) * job.replicas


def estimate_usd(job: Job, pool: Pool, default_runtime_s: float) -> float:
    """The job's estimated cost on `pool`: what a world reserves when it starts there."""
    return job_usd_per_hour(job, pool) * estimated_runtime_s(job, default_runtime_s) / SECONDS_PER_HOUR


def bound_usd(job: Job, pools: Mapping[str, Pool], default_runtime_s: float) -> float:
    """The job's estimated cost on the dearest pool it may use: what admission checks, before
    the pool is known, so that a start never reserves more than was admitted."""
    usable = usable_pools(job, pools)
    return max((estimate_usd(job, pool, default_runtime_s) for pool in usable), default=0.0)


def days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (the calendar arithmetic of
    H. Hinnant's "chrono-compatible low-level date algorithms": the core reads no clock)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def civil_from_days(days: int) -> tuple[int, int, int]:
    """The (year, month, day) `days` after 1970-01-01."""
    days += 719468
    era = (days if days >= 0 else days - 146096) // 146097
    day_of_era = days - era * 146097
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36524 - day_of_era // 146096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    shifted_month = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * shifted_month + 2) // 5 + 1
    month = shifted_month + (3 if shifted_month < 10 else -9)
    return year_of_era + era * 400 + (month <= 2), month, day


def period_bounds(period: Period, unix_s: float) -> tuple[float, float, str]:
    """The calendar period (UTC) holding `unix_s`: its start and end (Unix seconds) and label
    ("2026-11-03", "2026-W45", "2026-11").

    >>> period_bounds(Period.MONTH, 1_793_491_200.0)[2], period_bounds(Period.WEEK, 1_793_491_200.0)[2]
    ('2026-11', '2026-W44')
    """
    today = int(unix_s // SECONDS_PER_DAY)
    year, month, day = civil_from_days(today)
    if period is Period.DAY:
        start, end, label = today, today + 1, f"{year:04d}-{month:02d}-{day:02d}"
    elif period is Period.WEEK:
        start = today - (today + 3) % 7  # 1970-01-01 was a Thursday; weeks begin on Monday
        thursday = civil_from_days(start + 3)  # an ISO week belongs to the year of its Thursday
        week = (start + 3 - days_from_civil(thursday[0], 1, 1)) // 7 + 1
        end, label = start + 7, f"{thursday[0]:04d}-W{week:02d}"
    else:
        start = days_from_civil(year, month, 1)
        end = days_from_civil(year + (month == 12), month % 12 + 1, 1)
        label = f"{year:04d}-{month:02d}"
    return start * SECONDS_PER_DAY, end * SECONDS_PER_DAY, label


def team_period(unix_s: float) -> str:
    """The period a team's own spend and holds are counted in, in both worlds: the calendar
    month (UTC). Its budgets count in theirs."""
    return period_bounds(Period.MONTH, unix_s)[2]


def utc_text(unix_s: float) -> str:
    """A moment as people read it in a reason: "2026-12-01 00:00 UTC"."""
    days, seconds = divmod(math.floor(unix_s), int(SECONDS_PER_DAY))
    year, month, day = civil_from_days(days)
    return f"{year:04d}-{month:02d}-{day:02d} {seconds // 3600:02d}:{seconds % 3600 // 60:02d} UTC"


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernanceView:
    """What the guardrail plugins may know at one instant, on `ClusterSnapshot.governance`.

    `committed_usd` is, per budget, what its teams spent plus what running jobs have reserved in
    the current period. `used_gpus` and `fair_share_gpus` are per (queue, flavour); `spot_only`
    the teams whose spent spot-only budget leaves them spot capacity alone; `started` the
    waiting jobs that ran before.
    """

    rules: Governance
    now_unix_s: float
    committed_usd: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    approved: frozenset[str] = frozenset()
    rejected: frozenset[str] = frozenset()
    used_gpus: Mapping[tuple[str, str], float] = field(default_factory=lambda: MappingProxyType({}))
    fair_share_gpus: Mapping[tuple[str, str], float] = field(default_factory=lambda: MappingProxyType({}))
    spot_only: frozenset[str] = frozenset()
    #: Waiting jobs that ran before (preempted, or their spot node taken back): a budget that
    #: denies holds them instead, not to throw away work it already paid for.
    started: frozenset[str] = frozenset()

    @property
    def verdict_key(self) -> Hashable:
        """What of the view a filter reads (`policies.governance.BudgetSpotOnly`): the Framework
        forgets its verdicts when it changes, only when a budget is spent or a period begins."""
        return self.spot_only

    def period(self, budget: Budget) -> tuple[float, float, str]:
        """The budget's current period: start, end (Unix seconds) and label."""
        return period_bounds(budget.period, self.now_unix_s)

    def share_ratio(self, queue: str, flavor: str) -> float:
        """GPUs used over fair share: below 1 the queue may reclaim; 0 when it uses none."""
        used = self.used_gpus.get((queue, flavor), 0.0)
        if used <= 0:
            return 0.0
        share = self.fair_share_gpus.get((queue, flavor), 0.0)
        return used / share if share > 0 else INFINITE


def over_budget(rules: Governance, committed: Mapping[str, float], team: str, action: OverBudget) -> bool:
    """Whether a budget of `team` with `action` has been spent (committed reaching its dollars)."""
    return any(budget.action is action and committed.get(budget.name, 0.0) >= budget.usd
               for budget in rules.budgets_of(team))  # fmt: skip


def is_spot(pool: Pool) -> bool:
    return pool.capacity is Capacity.SPOT
