"""Baselines of the literature as plugins: Gavel's cost-aware shares, Tiresias' discretised LAS, DRF across teams.

The two round policies are queue-sort plugins that leave, once per cycle, each active job's
priority per GPU model in `cycle.memo` under `policies.rounds.PRIORITIES`, as Gavel's round
sorts do: the round profiles' `RoundsShareFit`, `RoundsModel` and `RoundsPreemption` then turn
them into placements and evictions at round boundaries (`policies.rounds`). DRF orders the
queue of an ordinary (not round) profile.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

from policies.rounds import PRIORITIES
from scheduler.errors import InputError
from scheduler.model import ClusterSnapshot, Job
from scheduler.plugin import Cycle, Plugin
from scheduler.rounds import JobRounds, RoundsView, gpus_by_model, job_gpus, priorities, throughput
from scheduler.rounds_cost import cost_shares, usd_per_gpu_hour_by_model

Table = Mapping[str, Mapping[str, float]]  # job id -> GPU model -> round priority


def _round_key(cycle: Cycle, job: Job, table: Callable[[RoundsView, ClusterSnapshot], Table]) -> tuple[Any, ...]:
    """The job's highest round priority on any model (first), from `table` computed once per cycle."""
    view = cycle.snapshot.rounds
    if view is None:
        return (0.0, job.submit_s, job.id)
    snapshot = cycle.snapshot
    found: Table = cycle.memo(PRIORITIES, lambda: table(view, snapshot))
    return (-max(found.get(job.id, {}).values(), default=0.0), job.submit_s, job.id)


class RoundsCost(Plugin):
    """Gavel's cost-aware policy, `ThroughputNormalizedByCostSum_Perf` (Narayanan et al., OSDI'20,
    section 4.2; stanford-futuredata/gavel `scheduler/policies/max_sum_throughput.py`).

    Shares maximise the sum over jobs and GPU models of throughput over price per GPU-hour
    (`scheduler.rounds_cost.cost_shares`); priorities are Gavel's share over time received.
    Departs from Gavel's code: throughputs relative to the reference GPU, not steps per second;
    prices from the cluster's pools (GPU-weighted mean per model over ready nodes; every model at 1
    when one has no price), not spot prices read each round; among optimal answers the one that
    gives time to earlier jobs, then faster models (Gavel takes ECOS's); HiGHS, not ECOS; no SLOs.
    """

    name = "RoundsCost"
    static = False
    reads_rounds: ClassVar[bool] = True

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return _round_key(cycle, job, _cost_priorities)


def _cost_priorities(view: RoundsView, snapshot: ClusterSnapshot) -> Table:
    jobs = [entry.job for entry in view.jobs.values()]
    return priorities(view, cost_shares(jobs, gpus_by_model(snapshot), usd_per_gpu_hour_by_model(snapshot)))


@dataclass(frozen=True, slots=True)
class TiresiasArgs:
    """Tiresias' queue thresholds in GPU-seconds of attained service, ascending (K - 1 of them
    for K queues), and its starvation knob (0: off)."""

    thresholds_gpu_s: list[float] = field(default_factory=lambda: [3250.0, 7200.0])
    starve_limit: float = 0.0

    def __post_init__(self) -> None:
        values, where = self.thresholds_gpu_s, "args.Tiresias.thresholds_gpu_s"
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in values):
            raise InputError(f"must be positive numbers of GPU-seconds, got {values!r}", field=where)
        if any(b <= a for a, b in pairwise(values)):
            raise InputError(f"must ascend strictly, got {values!r}", field=where)
        if self.starve_limit < 0:
            raise InputError(f"must be 0 (off) or more, got {self.starve_limit!r}", field="args.Tiresias.starve_limit")


def tiresias_queue(entry: JobRounds, args: TiresiasArgs) -> int:
    """The job's queue (0 first): how many thresholds its attained service (GPUs x seconds run)
    has reached; 0 while starved (its wait at least `starve_limit` times its run, once it has run)."""
    ran_s = sum(seconds for _, seconds in entry.received_s)
    waited_s = entry.active_s - ran_s
    if args.starve_limit > 0 and ran_s > 0 and waited_s >= args.starve_limit * ran_s:
        return 0
    return bisect_right(args.thresholds_gpu_s, job_gpus(entry.job) * ran_s)


def tiresias_priorities(view: RoundsView, models: Sequence[str], args: TiresiasArgs) -> dict[str, dict[str, float]]:
    """Every active job's round priority, the same on every model it can run on: jobs ranked by
    (queue, submit time, id), the first highest (n for n jobs, down to 1)."""
    ranked = sorted(view.jobs.values(), key=lambda e: (tiresias_queue(e, args), e.job.submit_s, e.job.id))
    return {
        entry.job.id: {model: float(len(ranked) - n) if throughput(entry.job, model) > 0 else 0.0 for model in models}
        for n, entry in enumerate(ranked)
    }


class Tiresias(Plugin):
    """Tiresias' discretised two-dimensional LAS (Gu et al., "Tiresias: A GPU Cluster Manager for
    Distributed Deep Learning", NSDI'19, section 4; SymbioticLab/Tiresias `simulator/run_sim.py`
    `dlas_sim_jobs`).

    Jobs sit in K priority queues by attained service, GPUs x seconds run (the round view's
    `received_s`): queue k holds jobs between thresholds k - 1 and k (`[args.Tiresias]
    thresholds_gpu_s`; default 3,250 and 7,200 GPU-seconds, three queues: the `queue_limit` and
    `num_queue` of the authors' simulator, `jobs.py`). Lower queues first, FIFO by arrival inside
    a queue; heterogeneity-agnostic (the same priority on every model; the profile draws the
    model at random, as Gavel's mechanism shuffles worker types each round for agnostic
    policies); preemptive at round boundaries through `RoundsPreemption`.

    Starvation: with `starve_limit` = S > 0, a job that has run and has waited at least S times
    as long as it ran is put in queue 0 (the authors' `solve_starvation`, off in their default
    `dlas-gpu`, as here). Departs from the authors' code: they reset a promoted job's counters,
    state the round view does not keep; here the promotion lasts while the wait is at least S
    times the run (measured since arrival, theirs since the first start), and the job returns
    to its queue by total attained service after. Their queues also keep running jobs ahead of
    waiting ones of the same queue; here arrival alone orders a queue. Placement is by free GPUs
    (no consolidation profile), and demotion happens at round boundaries, not the instant a
    threshold is crossed.
    """

    name = "Tiresias"
    Args = TiresiasArgs
    static = False
    reads_rounds: ClassVar[bool] = True

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return _round_key(cycle, job, self._priorities)

    def _priorities(self, view: RoundsView, snapshot: ClusterSnapshot) -> Table:
        args = self.args if isinstance(self.args, TiresiasArgs) else TiresiasArgs()
        return tiresias_priorities(view, list(gpus_by_model(snapshot)), args)


__all__ = ["RoundsCost", "Tiresias", "TiresiasArgs", "tiresias_priorities", "tiresias_queue"]
