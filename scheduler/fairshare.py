"""Fair share by weighted water-filling, queue usage, and the governance view a world shows.

Per flavour, the ready capacity is divided first over the organisations, then within each
organisation over its team queues, the same way at both levels: every queue gets its
guarantee (capped by what it wants: GPUs used plus GPUs its waiting jobs ask), then what is
left is poured by weight into the queues that want more, none past its limit or its want.
Guarantees that add up to more than the capacity are scaled down together. What a queue does
not want goes to the others: fair share is work-conserving, as Kueue's and KAI's are.

A waiting job wants every flavour its GPU models allow (a job that may run anywhere counts in
each), so with several flavours the wants are upper bounds. A job the last cycle held by its
budget (it waits for the next period) or for an approval not yet given wants nothing
(`claims_share`): both worlds tell `make_view` which jobs the guardrails held.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from scheduler.governance import (
    INFINITE,
    Governance,
    GovernanceView,
    OverBudget,
    job_gpus,
    over_budget,
    usable_pools,
)
from scheduler.model import ClusterSnapshot, Job, Pool

EPSILON = 1e-9
Key = tuple[str, str]  # (queue, flavour)


@dataclass(frozen=True, slots=True)
class Claim:
    """One queue's claim in one water-filling: its guarantee, weight and cap (limit and want)."""

    guaranteed: float
    weight: float
    cap: float


def water_fill(capacity: float, claims: Mapping[str, Claim]) -> dict[str, float]:
    """`capacity` divided over `claims`: guarantees first (scaled down together when they add
    up to more than the capacity), then by weight, none past its cap.

    >>> water_fill(8, {"a": Claim(0, 1, 10), "b": Claim(0, 1, 10)})
    {'a': 4.0, 'b': 4.0}
    >>> water_fill(8, {"a": Claim(6, 1, 10), "b": Claim(0, 1, 1)})
    {'a': 7.0, 'b': 1.0}
    """
    shares = {name: min(claim.guaranteed, claim.cap) for name, claim in claims.items()}
    promised = sum(shares.values())
    if promised > capacity:
        scale = capacity / promised if promised > 0 else 0.0
        return {name: share * scale for name, share in shares.items()}
    left = capacity - promised
    while left > EPSILON:
        active = {name: c for name, c in claims.items() if c.weight > 0 and shares[name] < c.cap - EPSILON}
        if not active:
            break
        weights = sum(claim.weight for claim in active.values())
        level = min((claim.cap - shares[name]) / claim.weight for name, claim in active.items())
        if level * weights >= left:
            for name, claim in active.items():
                shares[name] += left * claim.weight / weights
            break
        for name, claim in active.items():
            shares[name] += level * claim.weight
        left -= level * weights
    return shares


def usage(rules: Governance, snapshot: ClusterSnapshot) -> dict[Key, float]:
    """GPUs' worth held per (team queue, flavour) by the running jobs."""
    used: dict[Key, float] = {}
    for running in snapshot.running.values():
        placement = running.placement
        queue = rules.queue_name(rules.team_of(placement.job))
        for replica in placement.replicas:
            pool = snapshot.pools[snapshot.nodes[replica.node].pool]
            key = (queue, rules.flavor_of(pool))
            used[key] = used.get(key, 0.0) + job_gpus(placement.job, pool) / placement.job.replicas
    return used


def waiting_gpus(rules: Governance, pools: Mapping[str, Pool], waiting: Sequence[Job]) -> dict[Key, float]:
    """GPUs the waiting jobs ask, per (team queue, flavour), each job in every flavour it may use."""
    wanted: dict[Key, float] = {}
    flavors_of: dict[frozenset[str], set[str]] = {}
    for job in waiting:
        flavors = flavors_of.get(job.gpu_models)
        if flavors is None:
            flavors = flavors_of[job.gpu_models] = {rules.flavor_of(pool) for pool in usable_pools(job, pools)}
        queue = rules.queue_name(rules.team_of(job))
        gpus = job_gpus(job)
        for flavor in flavors:
            wanted[(queue, flavor)] = wanted.get((queue, flavor), 0.0) + gpus
    return wanted


def capacity_gpus(rules: Governance, snapshot: ClusterSnapshot) -> dict[str, float]:
    """Ready GPUs per flavour."""
    capacity: dict[str, float] = {}
    for node in snapshot.nodes.values():
        if node.ready:
            flavor = rules.flavor_of(snapshot.pools[node.pool])
            capacity[flavor] = capacity.get(flavor, 0.0) + len(node.gpus)
    return capacity


def tree(rules: Governance, queues: Sequence[str]) -> dict[str, list[str]]:
    """Per top-level queue, the team queues under it (a top-level queue that holds teams itself,
    or a team no queue lists, is its own only member)."""
    children: dict[str, list[str]] = {}
    for queue in sorted(queues):
        declared = rules.queue(queue)
        parent = declared.parent if declared is not None and declared.parent else queue
        children.setdefault(parent, []).append(queue)
    return children


def fair_shares(
    rules: Governance, snapshot: ClusterSnapshot, used: Mapping[Key, float], wanted: Mapping[Key, float]
) -> dict[Key, float]:
    """Fair share per (queue, flavour), for team queues and organisations alike."""
    leaves = sorted({q for q, _ in (*used, *wanted)} | {q.name for q in rules.queues if q.teams})
    groups = tree(rules, leaves)
    shares: dict[Key, float] = {}
    for flavor, capacity in sorted(capacity_gpus(rules, snapshot).items()):
        want = {leaf: used.get((leaf, flavor), 0.0) + wanted.get((leaf, flavor), 0.0) for leaf in leaves}
        top = water_fill(capacity, {org: _claim(rules, org, flavor, sum(want[m] for m in members))
                                    for org, members in groups.items()})  # fmt: skip
        for org, members in groups.items():
            shares[(org, flavor)] = top[org]
            if members != [org]:
                inner = water_fill(top[org], {m: _claim(rules, m, flavor, want[m]) for m in members})
                shares.update({(m, flavor): share for m, share in inner.items()})
    return shares


def _claim(rules: Governance, queue: str, flavor: str, want: float) -> Claim:
    declared = rules.queue(queue)
    if declared is None:
        return Claim(0.0, 1.0, want)
    quota = declared.quota(flavor)
    guaranteed = quota.guaranteed_gpus
    if not declared.parent and flavor not in declared.quotas:  # an organisation guarantees what its teams do
        guaranteed = sum(q.quota(flavor).guaranteed_gpus for q in rules.queues if q.parent == queue)
    return Claim(guaranteed, quota.weight, min(quota.limit_gpus, want) if quota.limit_gpus < INFINITE else want)


def claims_share(job_id: str, held_by: str | None, approved: frozenset[str]) -> bool:
    """Whether a waiting job counts in its queue's want: not while its budget holds it until the
    next period, nor while it waits for an approval not yet given (`held_by`: the guardrail that
    held it at the last cycle, if one did)."""
    return not (held_by == "BudgetGuard" or (held_by == "ApprovalGate" and job_id not in approved))


def make_view(
    rules: Governance,
    snapshot: ClusterSnapshot,
    now_unix_s: float,
    committed_usd: Mapping[str, float],
    waiting: Sequence[Job],
    approved: frozenset[str] = frozenset(),
    rejected: frozenset[str] = frozenset(),
    held: Mapping[str, str] | None = None,
) -> GovernanceView:
    """The view both worlds show the guardrail plugins (`GovernanceView`); `held` maps the jobs
    the last cycle's guardrails held to the guardrail that held each."""
    if held:
        waiting = [job for job in waiting if claims_share(job.id, held.get(job.id), approved)]
    used = usage(rules, snapshot)
    shares = fair_shares(rules, snapshot, used, waiting_gpus(rules, snapshot.pools, waiting))
    teams = {*rules.teams(), *(team for budget in rules.budgets for team in budget.teams)}
    spot_only = frozenset(team for team in teams if over_budget(rules, committed_usd, team, OverBudget.SPOT_ONLY))
    return GovernanceView(
        rules=rules,
        now_unix_s=now_unix_s,
        committed_usd=MappingProxyType(dict(committed_usd)),
        approved=approved,
        rejected=rejected,
        used_gpus=MappingProxyType(used),
        fair_share_gpus=MappingProxyType(shares),
        spot_only=spot_only,
    )
