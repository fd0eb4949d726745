"""Guardrails: budgets, quota limits and approvals at admission; fair-share order and reclaim.

Each reads only `cycle.governance` (the snapshot's `scheduler.governance.GovernanceView`, None
when the world runs ungoverned: then every guardrail lets everything through), the job and
the cluster. Admission answers OK, WAIT (held: the reason says until when or by what) or
UNRESOLVABLE (denied: a world drops the job with the reason). Admissions in one cycle add up
(`Admitted`, in `cycle.memo`), in queue order, so jobs admitted together cannot pass a budget
or a limit that each alone would not; a job the placer could not place is taken back.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from scheduler import costing
from scheduler.decision import OK, Code, Preemption, Status
from scheduler.fairshare import EPSILON, usage
from scheduler.governance import (
    INFINITE,
    Budget,
    GovernanceView,
    OverBudget,
    bound_usd,
    is_spot,
    job_gpus,
    usable_pools,
    utc_text,
)
from scheduler.model import Job, Node, RequestKind
from scheduler.plugin import Cycle, Plugin


class Admitted:
    """What one cycle admitted, per key (a budget, a queue and flavour), less the last job when
    the placer could not place it: the greedy placer marks it in `cycle.unplaced` before the
    next job is asked, so the totals are what the cycle placed (what it admitted, under a batch
    placer, which places after every job is asked)."""

    __slots__ = ("last", "totals")

    def __init__(self) -> None:
        self.totals: dict[Hashable, float] = {}
        self.last: tuple[str, tuple[tuple[Hashable, float], ...]] | None = None

    def now(self, cycle: Cycle) -> Mapping[Hashable, float]:
        if self.last is not None:
            job_id, added = self.last
            if job_id in cycle.unplaced:
                for key, amount in added:
                    self.totals[key] -= amount
            self.last = None
        return self.totals

    def add(self, job_id: str, added: Sequence[tuple[Hashable, float]]) -> None:
        for key, amount in added:
            self.totals[key] = self.totals.get(key, 0.0) + amount
        self.last = (job_id, tuple(added))


def _flavors(cycle: Cycle, view: GovernanceView, job: Job) -> list[str]:
    """The flavours `job` may use on this cluster, in name order."""
    return cycle.memo(("governance.flavors", job.gpu_models), lambda: sorted(
        {view.rules.flavor_of(pool) for pool in usable_pools(job, cycle.pools)}))  # fmt: skip


class BudgetGuard(Plugin):
    """Holds, confines to spot or denies a job whose estimate would take its team past a budget.

    Admission checks the estimate on the dearest pool the job may use (`bound_usd`) against
    what the budget has committed this period (spent plus reserved) and what this cycle has
    admitted before it. At 100 %: `hold` keeps the job until the period ends, `deny` rejects
    it (unless it ran before and was stopped: then it is held), `spot-only` admits only
    preemptible jobs (`BudgetSpotOnly` keeps them on spot). A job whose estimate alone is more
    than a whole period's budget is denied: it could never start.
    """

    name = "BudgetGuard"

    def admit(self, cycle: Cycle, job: Job) -> Status:
        view = cycle.governance
        if view is None:
            return OK
        budgets = view.rules.budgets_of(view.rules.team_of(job))
        if not budgets:
            return OK
        estimate = bound_usd(job, cycle.pools, view.rules.default_runtime_s)
        tally = cycle.memo("BudgetGuard.admitted", Admitted)
        admitted = tally.now(cycle)
        for budget in budgets:
            status = self._check(view, job, budget, view.committed_usd.get(budget.name, 0.0)
                                 + admitted.get(budget.name, 0.0), estimate)  # fmt: skip
            if not status.ok:
                return status
        tally.add(job.id, [(budget.name, estimate) for budget in budgets])
        return OK

    @staticmethod
    def _check(view: GovernanceView, job: Job, budget: Budget, committed: float, estimate: float) -> Status:
        """One budget's answer for a job estimated at `estimate` when `committed` is taken."""
        if estimate > budget.usd:
            return Status.unresolvable(f"budget {budget.name}: this job's estimate ${estimate:,.2f} is more than "
                                       f"the whole budget of ${budget.usd:,.2f} a {budget.period}")  # fmt: skip
        if committed + estimate <= budget.usd or (budget.action is OverBudget.SPOT_ONLY and job.preemptible):
            return OK
        _, end_s, label = view.period(budget)
        spent = (f"budget {budget.name}: ${committed:,.2f} of ${budget.usd:,.2f} committed in {label}, "
                 f"this job's estimate ${estimate:,.2f} would pass it")  # fmt: skip
        if budget.action is OverBudget.DENY and job.id not in view.started:
            return Status.unresolvable(f"{spent}: denied")
        if budget.action is OverBudget.DENY:  # it ran before: denying it would throw away what the budget paid for
            return Status.wait(f"{spent}: held until {utc_text(end_s)}; it ran before, so it is not denied")
        if budget.action is OverBudget.SPOT_ONLY:
            return Status.wait(f"{spent}: only preemptible jobs run, on spot capacity, until {utc_text(end_s)}")
        return Status.wait(f"{spent}: held until {utc_text(end_s)}")


class BudgetSpotOnly(Plugin):
    """Keeps the jobs of a team whose spot-only budget is spent on spot capacity.

    Its answer reads the view's `spot_only` teams; the Framework forgets remembered verdicts
    whenever that set changes.
    """

    name = "BudgetSpotOnly"
    job_fields = frozenset({"labels"})

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        view = cycle.governance
        if view is None or view.rules.team_of(job) not in view.spot_only or is_spot(cycle.pool_of(node)):
            return OK
        return Status.unresolvable(f"team {view.rules.team_of(job)} has spent its budget: spot capacity only")


class QuotaLimit(Plugin):
    """Holds a job that would take its queue (or its organisation) past its GPU limit in every
    flavour the job may use; denies one larger than the limit itself."""

    name = "QuotaLimit"

    def admit(self, cycle: Cycle, job: Job) -> Status:
        view = cycle.governance
        if view is None:
            return OK
        rules = view.rules
        queue = rules.queue_of(rules.team_of(job))
        if queue is None:
            return OK
        chain = [queue, *([parent] if (parent := rules.queue(queue.parent)) is not None else [])]
        tally = cycle.memo("QuotaLimit.admitted", Admitted)
        admitted = tally.now(cycle)
        gpus = job_gpus(job)
        reasons: list[str] = []
        too_big = True
        for flavor in _flavors(cycle, view, job):
            blocked = False
            for level in chain:
                limit = level.quota(flavor).limit_gpus
                if limit >= INFINITE:
                    continue
                members = {level.name} if level is queue else {q.name for q in rules.queues if q.parent == level.name}
                used = sum(view.used_gpus.get((m, flavor), 0.0) + admitted.get((m, flavor), 0.0) for m in members)
                too_big = too_big and gpus > limit
                if used + gpus > limit + EPSILON:
                    blocked = True
                    reasons.append(f"queue {level.name} uses {used:g} of its {limit:g} {flavor} GPUs")
                    break
            if not blocked:
                tally.add(job.id, [((queue.name, flavor), gpus)])
                return OK
        if too_big and reasons:
            return Status.unresolvable(f"the job asks {gpus:g} GPUs, more than its queue's limit", *reasons)
        return Status.wait(*reasons) if reasons else OK


class ApprovalGate(Plugin):
    """Holds a job an approval rule names until someone approves it; denies it when rejected."""

    name = "ApprovalGate"

    def admit(self, cycle: Cycle, job: Job) -> Status:
        view = cycle.governance
        if view is None or job.id in view.approved:
            return OK
        rules = view.rules.approval_rules(job, cycle.pools)
        if not rules:
            return OK
        names = ", ".join(rule.name for rule in rules)
        if job.id in view.rejected:
            return Status.unresolvable(f"approval rejected ({names})")
        return Status.wait(f"waiting for approval ({names})")


class FairShareOrder(Plugin):
    """Priority first, then jobs of the queues furthest below their fair share (GPUs used over
    fair share, in the flavour where the queue stands lowest)."""

    name = "FairShareOrder"
    static = False

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[float, ...]:
        view = cycle.governance
        if view is None:
            return (-job.priority, 0.0)
        queue = view.rules.queue_name(view.rules.team_of(job))
        ratio = min((view.share_ratio(queue, flavor) for flavor in _flavors(cycle, view, job)), default=0.0)
        return (-job.priority, ratio)


class FairShareReclaim(Plugin):
    """Evicts jobs of queues above their fair share so that a queue below its own may start a job.

    Asked for a job that fits no node: on each node that refused it as full, victims come from
    other queues above their fair share in the node's flavour, the queue furthest above first,
    then the job whose eviction loses the least work. A victim is taken only while the job's
    queue stays within its fair share, the victim's queue keeps its guarantee, and the job's
    queue ends with a smaller share of its fair share than the victim's (Kueue's
    LessThanOrEqualToFinalShare): so a reclaim never triggers a reclaim back. The node needing
    the fewest victims (then losing the least work) wins. Victims may be of any priority no
    higher than the job's.
    """

    name = "FairShareReclaim"
    evicts_equal_priority = True

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        view = cycle.governance
        if view is None:
            return []
        used = usage(view.rules, cycle.snapshot)  # this cycle's placements included
        best: tuple[int, float, str, list[str]] | None = None
        for name in sorted(node for node, status in rejected.items() if status.code is Code.UNSCHEDULABLE):
            chosen = self._victims(cycle, view, job, name, dict(used))
            if chosen is not None and (best is None or chosen[:3] < best[:3]):
                best = chosen
        return [Preemption(victim, "fair share", job.id) for victim in (best[3] if best else [])]

    @staticmethod
    def _victims(
        cycle: Cycle, view: GovernanceView, job: Job, name: str, used: dict[tuple[str, str], float]
    ) -> tuple[int, float, str, list[str]] | None:
        snapshot, rules = cycle.snapshot, view.rules
        node = snapshot.nodes[name]
        pool = cycle.pool_of(node)
        flavor = rules.flavor_of(pool)
        queue = rules.queue_name(rules.team_of(job))
        gpus = job_gpus(job, pool)
        share = view.fair_share_gpus.get((queue, flavor), 0.0)
        if used.get((queue, flavor), 0.0) + gpus > share + EPSILON:
            return None  # reclaiming past its fair share would only invite a reclaim back
        final_ratio = (used.get((queue, flavor), 0.0) + gpus) / share
        candidates = []
        for held in sorted({j for gpu in node.gpus for j in gpu.jobs()}):
            running = snapshot.running[held]
            other = running.placement.job
            victim_queue = rules.queue_name(rules.team_of(other))
            if victim_queue == queue or other.priority > job.priority:
                continue
            lost = costing.eviction_loss_gpu_s(pool, running, name, cycle.now_s)
            ratio = view.share_ratio(victim_queue, flavor)
            candidates.append((-ratio, lost, held, victim_queue, job_gpus(other, pool)))
        need = job.request.gpus if job.request.kind is RequestKind.WHOLE else 1
        free = sum(gpu.free for gpu in node.gpus)
        victims: list[str] = []
        total_lost = 0.0
        for _, lost, held, victim_queue, victim_gpus in sorted(candidates):
            if free >= need:
                break
            key = (victim_queue, flavor)
            victim_share = view.fair_share_gpus.get(key, 0.0)
            declared = rules.queue(victim_queue)
            guaranteed = declared.quota(flavor).guaranteed_gpus if declared is not None else 0.0
            after = used.get(key, 0.0) - victim_gpus
            if used.get(key, 0.0) <= victim_share + EPSILON or after < guaranteed - EPSILON:
                continue
            if victim_share > 0 and final_ratio > after / victim_share + EPSILON:
                continue
            used[key] = after
            victims.append(held)
            total_lost += lost
            taken = set(victims)
            free = sum(1 for gpu in node.gpus if gpu.free or (gpu.busy and set(gpu.jobs()) <= taken))
        if not victims or free < need:
            return None
        return (len(victims), total_lost, name, victims)
