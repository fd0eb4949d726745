"""The extender's FinOps guardrails: the governance view shown to the planner, the spend book, approvals.

With a governance file (`governance = "G.toml"`, or `fleetsched extender --governance`), every
planning pass shows the scheduler a `scheduler.governance.GovernanceView` on its snapshot: what
each budget committed in its current period (`scheduler.spend.SpendBook`), the approvals people
gave (`extender.governance_api`), and each queue's use and fair share. The profile's guardrail
plugins (`policies.governance`: BudgetGuard, QuotaLimit, ApprovalGate) read only that.

Money: when a pod binds, its estimate is reserved (its price share on the node's pool times
its declared run time, `activeDeadlineSeconds` or `fleetsched.io/runtime-limit-s`, else the
file's default); a gang's pods each reserve their share. When the pod ends (Succeeded, Failed
or deleted), the reservation is settled to the actual cost: the price share times the time
from its bind to its end. The book and the start of every reservation are kept in the API
server (`fleetsched-spend`), written by the leader when they changed, at most every
`persist_s` (30 s), and on a clean stop; read at start and on taking the lead. A crash loses at
most that much; a pod that ended while no extender ran is settled when it is next seen gone.

A pod a guardrail holds (admit WAIT) or denies (UNRESOLVABLE) gets the reason in the filter
answer, as every pending reason, and as an Event on the pod, at most once a minute per pod and
guardrail. When approvals, a settlement or a new period change what the guardrails say, the
planner plans at once and the pods it now places are asked for again (kube-scheduler would
otherwise leave them up to 90 s in its unschedulable queue).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from extender.events import EventPoster, pod_reference
from extender.governance_api import Approval, read_spend_state, spend_state
from extender.translate import HeldBy, PodJob, TeamRule
from extender.world import Clock
from scheduler import fairshare
from scheduler.decision import Code
from scheduler.errors import InputError
from scheduler.governance import (
    Governance,
    GovernanceView,
    bound_usd,
    estimated_runtime_s,
    job_usd_per_hour,
    period_bounds,
    team_period,
)
from scheduler.model import ClusterSnapshot, Job, Pool
from scheduler.spend import SpendBook

if TYPE_CHECKING:
    from extender.planner import Plan, Planner
    from extender.verbs import GpuExtender
    from extender.wire import BindingArgs

log = logging.getLogger(__name__)

GUARDRAILS = frozenset({"BudgetGuard", "QuotaLimit", "ApprovalGate", "BudgetSpotOnly"})
EVENT_EVERY_S = 60.0  # an Event per pod and guardrail at most this often
PERSIST_S = 30.0  # the spend book is written when it changed, at most this often (the issue: at least every 60 s)
TICK_S = 2.0  # approvals listed, ended pods settled, this often
SECONDS_PER_HOUR = 3600.0
Gauges = dict[str, dict[tuple[tuple[str, str], ...], float]]


class GovernanceStore(Protocol):
    """Where the guardrails' state lives (`extender.governance_api.GovernanceStore`)."""

    def read_spend(self) -> str | None: ...

    def write_spend(self, text: str) -> None: ...

    def approvals(self) -> list[Approval]: ...


class Guardrails:
    """The guardrails' state in one extender (thread-safe): the book, running reservations, approvals."""

    def __init__(self, rules: Governance, clock: Clock, store: GovernanceStore | None = None,
                 poster: EventPoster | None = None, *, persist_s: float = PERSIST_S) -> None:  # fmt: skip
        self.rules = rules
        self.clock = clock
        self.store = store
        self.poster = poster
        self.persist_s = persist_s
        self.book = SpendBook()
        self._lock = threading.Lock()
        self._started: dict[str, tuple[float, float]] = {}  # reservation (HeldBy text) -> bind time, usd per hour
        self.approved: frozenset[str] = frozenset()
        self.rejected: frozenset[str] = frozenset()
        self.held: dict[str, str] = {}  # job id -> the guardrail that held it in the last plan
        self._dirty = False
        self._written_at = -math.inf  # monotonic seconds of the last write
        self._posted: dict[tuple[str, str], float] = {}  # (pod UID, guardrail) -> monotonic seconds of its Event
        self._periods: tuple[str, ...] = ()  # the budgets' period labels at the last tick
        # Whether the stored state has been read (or there is no store): until then nothing is
        # written, so that an API server unreachable at start cannot have its book overwritten.
        self.loaded = store is None

    # -- what the planner is shown -------------------------------------------------------------

    def view(self, snapshot: ClusterSnapshot, pending: Sequence[Job], planned: Sequence[Job] = ()) -> GovernanceView:
        """The view of this instant. `planned`: jobs a plan placed that have not bound yet (no
        reservation): their estimates count as committed, as the pass that admitted them counted them."""
        now_s = self.clock.now_s()
        with self._lock:
            committed = {budget.name: self.book.committed(budget.name, period_bounds(budget.period, now_s)[2])
                         for budget in self.rules.budgets}  # fmt: skip
            approved, rejected, held = self.approved, self.rejected, self.held
        for job in planned:
            estimate = bound_usd(job, snapshot.pools, self.rules.default_runtime_s)
            for budget in self.rules.budgets_of(self.rules.team_of(job)):
                committed[budget.name] += estimate
        return fairshare.make_view(self.rules, snapshot, now_s, committed, pending, approved, rejected, held)

    def govern(self, snapshot: ClusterSnapshot, pending: Sequence[Job], planned: Sequence[Job] = ()) -> ClusterSnapshot:
        """`snapshot` with the governance view of this instant on it."""
        return replace(snapshot, governance=self.view(snapshot, pending, planned))

    # -- the spend book ------------------------------------------------------------------------

    def started(self, pod: PodJob, pool: Pool) -> None:
        """A pod bound to a node of `pool`: its estimate is reserved against its team's budgets."""
        key = str(HeldBy(pod.job.id, pod.uid))
        now_s = self.clock.now_s()
        job = replace(pod.job, replicas=1)
        usd_per_hour = job_usd_per_hour(job, pool)
        estimate = usd_per_hour * estimated_runtime_s(job, self.rules.default_runtime_s) / SECONDS_PER_HOUR
        team = self.rules.team_of(job)
        budgets = [(b.name, period_bounds(b.period, now_s)[2]) for b in self.rules.budgets_of(team)]
        with self._lock:
            if key in self._started:
                return  # asked to bind again: reserved already
            self._started[key] = (now_s, usd_per_hour)
            self.book.reserve(key, team, team_period(now_s), budgets, estimate)
            self._dirty = True
        log.info("pod %s/%s bound: %.2f USD reserved (%.4f USD/h)", pod.namespace, pod.name, estimate, usd_per_hour)

    def settle_ended(self, ended_s: Callable[[str], float | None]) -> int:
        """Settles every reservation whose pod has ended (`ended_s(uid)`: its end, None while it
        runs) to its actual cost; returns how many."""
        with self._lock:
            running = dict(self._started)
        settled = 0
        for key, (bound_s, usd_per_hour) in sorted(running.items()):
            end_s = ended_s(HeldBy.parse(key).uid)
            if end_s is None:
                continue
            actual = usd_per_hour * max(0.0, end_s - bound_s) / SECONDS_PER_HOUR
            with self._lock:
                if self._started.pop(key, None) is None:
                    continue
                self.book.settle(key, actual)
                self._dirty = True
            settled += 1
            log.info("%s ended: %.2f USD settled", key, actual)
        return settled

    def load(self) -> None:
        """The stored state replaces this replica's (on start, and on taking the lead)."""
        if self.store is None:
            return
        text = self.store.read_spend()
        if text is None:
            self.loaded = True
            return
        try:
            book_json, started = read_spend_state(text)
            book = SpendBook.from_json(book_json)
        except (ValueError, InputError) as error:  # a hand-edited ConfigMap: keep what we have, say so, overwrite it
            log.error("the stored spend book cannot be read (%s); starting from this replica's", error)
            self._dirty = self.loaded = True
            return
        with self._lock:
            self.book, self._started, self._dirty = book, dict(started), False
        self.loaded = True
        log.info("spend book read back: %d running reservations", len(started))

    def save(self, *, force: bool = False) -> bool:
        """Writes the state if it changed and `persist_s` passed since the last write (`force`: if
        it changed at all); True when written."""
        if self.store is None or not self.loaded:
            return False
        now = self.clock.monotonic_s()
        with self._lock:
            if not self._dirty or (not force and now - self._written_at < self.persist_s):
                return False
            text = spend_state(self.book.to_json(), self._started)
            self._dirty = False
        try:
            self.store.write_spend(text)
        except Exception:
            with self._lock:
                self._dirty = True
            raise
        self._written_at = now
        return True

    # -- approvals -----------------------------------------------------------------------------

    def refresh_approvals(self) -> bool:
        """Lists the approvals again; True when what they say changed."""
        if self.store is None:
            return False
        found = self.store.approvals()
        approved = frozenset(a.job_id for a in found if a.approved)
        rejected = frozenset(a.job_id for a in found if not a.approved) - approved
        with self._lock:
            changed = (approved, rejected) != (self.approved, self.rejected)
            self.approved, self.rejected = approved, rejected
        return changed

    # -- the loop ------------------------------------------------------------------------------

    def tick(self, planner: Planner, requeue: Callable[[Sequence[tuple[str, str]]], None] | None) -> None:
        """One round of the leader's upkeep: approvals, ended pods, a new period; the book written.
        When the guardrails' answer may have changed, plans at once and asks for the pods it now places."""
        if not self.loaded:
            self.load()
        changed = self.refresh_approvals()
        if planner.cluster.age_s() < math.inf:  # both kinds listed: a pod missing from the view is gone
            changed = self.settle_ended(planner.cluster.ended_s) > 0 or changed
        periods = tuple(period_bounds(b.period, self.clock.now_s())[2] for b in self.rules.budgets)
        changed = changed or periods != self._periods
        self._periods = periods
        self.save()
        before = planner.current()
        if not changed or before is None:
            return
        held = held_jobs(before)
        after = planner.plan()
        freed = [(pod.namespace, pod.name) for job_id in held for pod in before.view.pods_of.get(job_id, ())
                 if pod.uid in after.nodes]  # fmt: skip
        if freed and requeue is not None:
            log.info("guardrails changed: asking again for %d pods", len(freed))
            requeue(sorted(freed))

    def run(self, planner: Planner, leading: Callable[[], bool], stop: threading.Event,
            requeue: Callable[[Sequence[tuple[str, str]]], None] | None = None) -> None:  # fmt: skip
        """`tick` every TICK_S while this replica leads, until `stop`; a failure is logged and the loop goes on."""
        while not stop.wait(TICK_S):
            if not leading():
                continue
            try:
                self.tick(planner, requeue)
            except Exception as error:
                log.warning("guardrails: %s; again in %.0f s", error, TICK_S)

    # -- what a held pod is told, and what /metrics shows --------------------------------------

    def report(self, plan: Plan) -> int:
        """An Event on every pod a guardrail holds or denies in `plan` (once a minute per pod and
        guardrail); returns how many were posted. Notes which jobs the guardrails held."""
        held = {job_id: pending.status.plugin for job_id, pending in plan.decision.pending.items()
                if pending.status.plugin in GUARDRAILS}  # fmt: skip
        with self._lock:
            self.held = held  # what the next view's fair shares leave out (`fairshare.claims_share`)
        if self.poster is None:
            return 0
        now = self.clock.monotonic_s()
        posted = 0
        for job_id, pending in sorted(plan.decision.pending.items()):
            status = pending.status
            if status.plugin not in GUARDRAILS or status.code not in (Code.WAIT, Code.UNRESOLVABLE):
                continue
            reason = status.plugin + ("Denied" if status.code is Code.UNRESOLVABLE else "")
            for pod in plan.view.pods_of.get(job_id, ()):
                with self._lock:
                    if now - self._posted.get((pod.uid, reason), -math.inf) < EVENT_EVERY_S:
                        continue
                    self._posted[(pod.uid, reason)] = now
                text = f"fleetsched {'denies' if status.code is Code.UNRESOLVABLE else 'holds'} the pod: {status}"
                self.poster.post(pod.namespace, pod_reference(pod.namespace, pod.name, pod.uid), reason, text)
                posted += 1
        with self._lock:  # forget what can no longer repeat
            for key in [k for k, at in self._posted.items() if now - at >= EVENT_EVERY_S]:
                del self._posted[key]
        return posted

    def gauges(self, plan: Plan) -> Gauges:
        """Per budget its dollars and what it committed this period; per team the jobs held and
        denied by guardrail; per queue and flavour its fair share and the GPUs it uses."""
        view = plan.view.snapshot.governance
        if view is None:
            return {}
        found: Gauges = {name: {} for name in ("fleetsched_budget_usd", "fleetsched_budget_committed_usd",
                                               "fleetsched_team_spend_usd",
                                               "fleetsched_held_jobs", "fleetsched_denied_jobs",
                                               "fleetsched_fair_share_gpus", "fleetsched_used_gpus")}  # fmt: skip
        for budget in self.rules.budgets:
            teams = ",".join(sorted(budget.teams))
            labels = (("budget", budget.name), ("period", view.period(budget)[2]), ("team", teams))
            found["fleetsched_budget_usd"][labels] = round(budget.usd, 6)
            found["fleetsched_budget_committed_usd"][labels] = round(view.committed_usd.get(budget.name, 0.0), 6)
        month = team_period(view.now_unix_s)
        with self._lock:
            book = self.book
            spend = {team: book.team_spent.get((team, month), 0.0) + book.team_reserved.get((team, month), 0.0)
                     for team in self.rules.teams()}  # fmt: skip
        for team in self.rules.teams():
            found["fleetsched_team_spend_usd"][(("period", month), ("team", team))] = round(spend[team], 6)
            for plugin in sorted(GUARDRAILS):
                for name in ("fleetsched_held_jobs", "fleetsched_denied_jobs"):
                    found[name][(("reason", plugin), ("team", team))] = 0.0
        for job_id, pending in plan.decision.pending.items():
            job = plan.jobs.get(job_id)
            if job is None or pending.status.plugin not in GUARDRAILS:
                continue
            name = "fleetsched_denied_jobs" if pending.status.code is Code.UNRESOLVABLE else "fleetsched_held_jobs"
            key = (("reason", pending.status.plugin), ("team", self.rules.team_of(job)))
            found[name][key] = found[name].get(key, 0.0) + 1.0
        shares = (("fleetsched_fair_share_gpus", view.fair_share_gpus), ("fleetsched_used_gpus", view.used_gpus))
        for gauge, values in shares:
            for (queue, flavor), gpus in values.items():
                found[gauge][(("flavor", flavor), ("queue", queue))] = round(gpus, 6)
        return found


def held_jobs(plan: Plan) -> list[str]:
    """The jobs a guardrail holds in `plan`."""
    return sorted(job_id for job_id, pending in plan.decision.pending.items() if pending.status.plugin in GUARDRAILS)


def attach(extender: GpuExtender, guardrails: Guardrails) -> None:
    """Puts `guardrails` in the extender's way (before serving): pods read with the file's
    team rule, passes shown the governance view, held pods told why, binds reserved, gauges added."""
    planner = extender.planner
    planner.cluster.use_teams(TeamRule(guardrails.rules.team_from, guardrails.rules.team_label))
    planner.govern = guardrails.govern
    planner.on_plan = guardrails.report

    def bound(args: BindingArgs) -> None:
        pod = planner.cluster.pod(args.pod_uid)
        info = planner.cluster.node_info(args.node)
        if pod is not None and info is not None:
            guardrails.started(pod, info.pool)

    extender.on_bound = bound
    extender.more_gauges = guardrails.gauges
