"""Baselines of the literature as plugins: Gavel's cost-aware shares, Tiresias' discretised LAS, DRF across teams.

The two round policies are queue-sort plugins that leave, once per cycle, each active job's
priority per GPU model in `cycle.memo` under `policies.rounds.PRIORITIES`, as Gavel's round
sorts do: the round profiles' `RoundsShareFit`, `RoundsModel` and `RoundsPreemption` then turn
them into placements and evictions at round boundaries (`policies.rounds`). DRF orders the
queue of an ordinary (not round) profile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from policies.rounds import PRIORITIES
from scheduler.model import ClusterSnapshot, Job
from scheduler.plugin import Cycle, Plugin
from scheduler.rounds import RoundsView, gpus_by_model, priorities
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


__all__ = ["RoundsCost"]
