"""Round-based policies after Gavel: shares of time per GPU model, turned into placements by priority.

Gavel (Narayanan, Santhanam, Kazhamiaka, Phanishayee, Zaharia, "Heterogeneity-Aware Cluster
Scheduling Policies for Deep Learning Workloads", OSDI'20; code stanford-futuredata/gavel)
computes, every round, each job's share of time on each GPU model, then runs first the jobs
whose priority (share over the fraction of time received there) is highest, preempting the
rest. Here the three steps are three plugins that read the world's round view
(`ClusterSnapshot.rounds`, kept by the world, `simulator.rounds`):

- a sort plugin per policy computes the shares (`scheduler.rounds`) and the priorities once per
  cycle (left in `cycle.memo` for the two plugins below) and orders waiting jobs by their
  highest priority on any model;
- `RoundsShareFit` (filter) keeps a job off GPU models where its share is 0;
- `RoundsModel` (score) sends a job to the GPU model where its priority is highest;
- `RoundsPreemption` (postfilter) evicts, from a node that refused the job as full, running jobs
  of lower priority on that node's model (they save first: Gavel's leases end at a checkpoint).

Where this departs from Gavel's mechanism (`Scheduler._schedule_jobs_on_workers_helper`): Gavel
re-decides every placement each round (jobs not picked are preempted, models taken fastest
first, job by job in priority order per model); here a running job keeps its GPU until a
waiting job of higher priority on that model needs it, so placements change only as
priorities cross. The sort plugin must come first in a cycle (it does: the queue is ordered
before any node is asked), since the score and postfilter read what it left in the memo.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from scheduler.decision import OK, Code, Preemption, Status
from scheduler.model import Job, Node, RequestKind
from scheduler.plugin import Cycle, Plugin
from scheduler.rounds import RoundsView, Shares, gpus_by_model, max_min_shares, ordered_shares, priorities

PRIORITIES = "rounds.priorities"  # the cycle.memo key the sort plugin fills
_CAP = 1e9  # an infinite priority (a share with nothing received yet), as a finite score


def round_priorities(cycle: Cycle) -> Mapping[str, Mapping[str, float]]:
    """This cycle's priorities per job and GPU model, as the profile's round sort plugin left them
    (empty when the world shows no round view or no sort plugin computed them)."""
    found: Mapping[str, Mapping[str, float]] = cycle.memo(PRIORITIES, dict)
    return found


class _RoundsOrder(Plugin):
    """Orders waiting jobs by their highest round priority on any GPU model, then submit time."""

    static = False
    reads_rounds: ClassVar[bool] = True

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        raise NotImplementedError

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        view = cycle.snapshot.rounds
        if view is None:
            return (0.0, job.submit_s, job.id)
        table = cycle.memo(PRIORITIES, lambda: priorities(view, self.shares(view, gpus_by_model(cycle.snapshot))))
        best = max(table.get(job.id, {}).values(), default=0.0)
        return (-best, job.submit_s, job.id)


class RoundsLasAgnostic(_RoundsOrder):
    """Max-min fairness (least attained service), heterogeneity-agnostic: Gavel's `max_min_fairness`
    (Narayanan et al., OSDI'20, the baseline of section 4.1).

    Every job gets the same GPU-time, whatever model it runs on (throughputs all taken as 1):
    the LP of `scheduler.rounds.max_min_shares(aware=False)`. Departs from Gavel's code in the
    answer picked among the LP's many optimal ones: each job's time spread over the models in
    proportion to their GPUs (Gavel takes ECOS's), and no priority weights.
    """

    name = "RoundsLasAgnostic"

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        return max_min_shares([entry.job for entry in view.jobs.values()], gpus, aware=False)


class RoundsLas(_RoundsOrder):
    """Max-min fairness, heterogeneity-aware: Gavel's `max_min_fairness_perf` (Narayanan et al., OSDI'20, section 4.1).

    Maximises the smallest normalised effective throughput, sum over models of share x speedup,
    normalised by the throughput the agnostic answer would give the job (Gavel's "isolated"
    allocation). Departs from Gavel's code: a second LP picks, among max-min optimal answers,
    the one with the largest total normalised throughput (Gavel takes ECOS's answer); HiGHS,
    not ECOS; no priority weights; no space sharing.
    """

    name = "RoundsLas"

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        return max_min_shares([entry.job for entry in view.jobs.values()], gpus, aware=True)


class RoundsFifo(_RoundsOrder):
    """FIFO, heterogeneity-aware, after Gavel's `fifo_perf` (Narayanan et al., OSDI'20). In arrival
    order, each job takes all its time on the fastest model with room left
    (`scheduler.rounds.ordered_shares`). Departs from Gavel's code: the rule is written here as
    shares, not ported from Gavel's FIFO policy line by line, and the round mechanism follows them."""

    name = "RoundsFifo"

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        return ordered_shares([entry.job for entry in view.jobs.values()], gpus, lambda job: (job.submit_s,))


class RoundsSjf(_RoundsOrder):
    """Shortest job first (by reference duration, the trace's `duration_s`) in Gavel's rounds
    (Narayanan et al., OSDI'20), shares as RoundsFifo's: an oracle on job length, as Gavel's
    simulator has one (total steps). Gavel registers no SJF policy; this is the classic baseline."""

    name = "RoundsSjf"

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        return ordered_shares([entry.job for entry in view.jobs.values()], gpus, lambda job: (job.duration_s,))


class RoundsSrtf(_RoundsOrder):
    """Shortest remaining time first in Gavel's rounds (Narayanan et al., OSDI'20): by
    reference-GPU work left (the round view's `remaining_s`), preemptive at round boundaries;
    as RoundsSjf, an oracle on job length (SRTF is a baseline in Tiresias, Gu et al., NSDI'19).
    Gavel registers no SRTF policy; this departs from no code of theirs."""

    name = "RoundsSrtf"

    def shares(self, view: RoundsView, gpus: Mapping[str, int]) -> Shares:
        left: dict[str, float] = {job_id: entry.remaining_s for job_id, entry in view.jobs.items()}
        jobs = [entry.job for entry in view.jobs.values()]
        return ordered_shares(jobs, gpus, lambda job: (left[job.id],))


class RoundsModel(Plugin):
    """Prefers the GPU model where the job's round priority is highest (Gavel's per-model lists)."""

    name = "RoundsModel"
    job_fields = frozenset({"id"})
    higher_is_better = True
    score_range = None
    reads_rounds: ClassVar[bool] = True

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        model = cycle.pool_of(node).gpu.name
        return min(round_priorities(cycle).get(job.id, {}).get(model, 0.0), _CAP)


class RoundsShareFit(Plugin):
    """A job with a share of some GPU model runs only on models where its share is positive
    (Gavel's mechanism places a job only on worker types its allocation gives it time on). A job
    with no share anywhere (a queue-order policy's jobs past the cluster's size, a gang larger
    than the GPUs ready now) may take what is free; its priority is 0, so any job with a share
    evicts it. UNSCHEDULABLE, not UNRESOLVABLE: the next round's shares may differ (the
    Framework forgets its verdicts each round)."""

    name = "RoundsShareFit"
    job_fields = frozenset({"id"})  # shares are per job: each job is its own shape
    reads_rounds: ClassVar[bool] = True

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        table = round_priorities(cycle)
        if job.id not in table:  # no round view, or the job is not in it: nothing to say
            return OK
        model = cycle.pool_of(node).gpu.name
        row = table[job.id]
        if row.get(model, 0.0) > 0 or not any(value > 0 for value in row.values()):
            return OK
        return Status(Code.UNSCHEDULABLE, (f"no share of {model} this round",))


class RoundsPreemption(Plugin):
    """Evicts running jobs of lower round priority on a full node's GPU model, lowest first.

    On each node that refused the job as full, victims are the jobs whose priority on the node's
    model is below the job's there, lowest first, until a replica fits; the node whose highest
    victim priority is lowest wins (then fewer victims, then the node's name). A job never
    evicts one of equal or higher priority, so two jobs do not swap back and forth in a round.
    """

    name = "RoundsPreemption"
    evicts_equal_priority = True
    reads_rounds: ClassVar[bool] = True

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        table = round_priorities(cycle)
        snapshot = cycle.snapshot
        need = job.request.gpus if job.request.kind is RequestKind.WHOLE else 1
        best: tuple[float, int, str, list[str]] | None = None
        for name in sorted(node for node, status in rejected.items() if status.code is Code.UNSCHEDULABLE):
            node = snapshot.nodes[name]
            model = cycle.pool_of(node).gpu.name
            mine = table.get(job.id, {}).get(model, 0.0)
            if mine <= 0:
                continue
            candidates = []
            for held in sorted({j for gpu in node.gpus for j in gpu.jobs()}):
                row = table.get(held)  # a job the view does not show is never a victim
                theirs = math.inf if row is None else row.get(model, 0.0)
                if theirs < mine:
                    gpus = sum(len(r.grants) for r in snapshot.running[held].placement.replicas if r.node == name)
                    candidates.append((theirs, held, gpus))
            free = sum(gpu.free for gpu in node.gpus)
            victims: list[str] = []
            highest = 0.0
            for theirs, held, gpus in sorted(candidates):
                if free >= need:
                    break
                victims.append(held)
                free, highest = free + gpus, theirs
            if victims and free >= need and (best is None or (highest, len(victims), name) < best[:3]):
                best = (highest, len(victims), name, victims)
        return [Preemption(victim, "round", job.id) for victim in (best[3] if best else [])]


__all__ = ["RoundsFifo", "RoundsLas", "RoundsLasAgnostic", "RoundsModel", "RoundsPreemption",
           "RoundsShareFit", "RoundsSjf", "RoundsSrtf", "round_priorities"]
