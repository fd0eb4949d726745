"""Round-based scheduling's shared values: what a world shows of each job's rounds, and the shares.

Gavel (Narayanan et al., "Heterogeneity-Aware Cluster Scheduling Policies for Deep Learning
Workloads", OSDI'20) splits scheduling in two: a policy gives each job a share of time on each
GPU model (its allocation X[job][model]); a round mechanism turns shares into placements,
round after round, by running first the jobs furthest behind what they were given
(priority = share / fraction of time received there).

A world that runs rounds keeps, per active job, the time it ran on each GPU model since it
arrived and shows it as a `RoundsView` on the snapshot (`ClusterSnapshot.rounds`); the
policies in `policies.rounds` compute shares and priorities from the view alone. This module
holds the view and the pure computations: shares by linear program (scipy's HiGHS), by queue
order, and the priorities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scheduler.model import ClusterSnapshot, Job

Shares = Mapping[str, Mapping[str, float]]  # job id -> GPU model -> share of time (0..1)
_SLACK = 1e-7  # the second stage keeps every job within this of the max-min value


@dataclass(frozen=True, slots=True)
class JobRounds:
    """One active job as rounds see it: the job, its wall seconds on each GPU model since it
    arrived (`received_s`), seconds since it arrived, and reference-GPU seconds of work left."""

    job: Job
    received_s: tuple[tuple[str, float], ...] = ()
    active_s: float = 0.0
    remaining_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RoundsView:
    """What a round-running world shows: its round number and every active job, waiting or running."""

    round_id: int
    jobs: Mapping[str, JobRounds]

    @property
    def verdict_key(self) -> Hashable:
        """What of the view filters and scores read: round plugins answer from each round's
        priorities, so the Framework forgets its verdicts every round."""
        return self.round_id


def gpus_by_model(snapshot: ClusterSnapshot) -> dict[str, int]:
    """Whole GPUs of ready nodes per GPU model, models in name order."""
    counts: dict[str, int] = {}
    for node in snapshot.nodes.values():
        if node.ready:
            model = snapshot.pools[node.pool].gpu.name
            counts[model] = counts.get(model, 0) + len(node.gpus)
    return dict(sorted(counts.items()))


def throughput(job: Job, model: str) -> float:
    """The job's speed on `model` relative to the reference GPU (1.0 when the trace gives none);
    0 where the job names GPU models and `model` is not one of them."""
    if job.gpu_models and model not in job.gpu_models:
        return 0.0
    return dict(job.speedups).get(model, 1.0)


def job_gpus(job: Job) -> int:
    """GPUs the job holds while it runs (Gavel's scale factor)."""
    return job.request.gpus * job.replicas


def max_min_shares(jobs: Sequence[Job], gpus: Mapping[str, int], *, aware: bool) -> dict[str, dict[str, float]]:
    """Gavel's max-min fairness (LAS) allocation, by linear program.

    Maximise t subject to: for every job j, t <= sum_m X[j][m] * tput[j][m] * gpus_j / norm_j;
    sum_m X[j][m] <= 1; sum_j X[j][m] * gpus_j <= GPUs of m; X >= 0. Heterogeneity-agnostic:
    tput = 1 and norm = 1 (Gavel's MaxMinFairnessPolicy). Aware: tput from the job's speedups
    and norm_j = the job's throughput under the agnostic answer below (Gavel normalises by its
    "isolated" allocation so that jobs of unlike speeds are comparable).

    The max-min LP has many optimal answers; Gavel takes whatever ECOS returns. Here the agnostic
    answer is the one that spreads each job's time over the models in proportion to their GPUs
    (every job then has the optimum t, and an interior-point solver converges to it by symmetry),
    and the aware answer is made unique-ish by a second LP: keep every job at >= t* and
    maximise the sum of normalised throughputs (water-filling in one step, not Gavel's loop).
    """
    models = [model for model, count in gpus.items() if count > 0]
    if not jobs or not models:
        return {job.id: {} for job in jobs}
    total = sum(gpus[model] for model in models)
    # The agnostic LP's value: every job gets the same GPU-time t (Gavel weighs time by scale
    # factor), t = total GPUs / jobs, at most the smallest job's size (a share is at most 1).
    best = min(total / len(jobs), *(job_gpus(job) for job in jobs))
    agnostic = {job.id: {m: min(1.0, best / job_gpus(job)) * gpus[m] / total for m in models} for job in jobs}
    if not aware:
        _check_agnostic(jobs, models, gpus, best)
        return agnostic
    rates = np.array([[throughput(job, model) for model in models] for job in jobs])
    spread = np.array([[agnostic[job.id][m] for m in models] for job in jobs])
    norm = (rates * spread).sum(axis=1)  # each job's throughput under the agnostic answer
    runnable = norm > 0  # a job no model here can run would hold the max-min value at 0 for all
    if not runnable.all():
        kept = [job for job, ok in zip(jobs, runnable, strict=True) if ok]
        shares = max_min_shares(kept, gpus, aware=True) if kept else {}
        return {job.id: shares.get(job.id, dict.fromkeys(models, 0.0)) for job in jobs}
    sizes = np.array([job_gpus(job) for job in jobs], dtype=float)
    gain = rates * (sizes / norm)[:, None]  # normalised throughput per unit of share
    x = _aware_lp(gain, sizes, np.array([gpus[m] for m in models], dtype=float))
    return {job.id: {m: float(x[i, k]) for k, m in enumerate(models)} for i, job in enumerate(jobs)}


def _aware_lp(gain: np.ndarray, sizes: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """The two-stage LP over X (jobs x models, flattened row by row) and t."""
    from scipy.optimize import linprog  # type: ignore[import-untyped]  # no stubs; loaded only when asked (40 MiB)

    jobs, models = gain.shape
    cells = jobs * models
    rows, bounds = _base_rows(jobs, models, sizes, capacity)
    # t - sum_m gain[j][m] X[j][m] <= 0 for every job j
    fair = np.zeros((jobs, cells + 1))
    for j in range(jobs):
        fair[j, j * models:(j + 1) * models] = -gain[j]
        fair[j, cells] = 1.0
    upper = np.vstack([rows[0], fair])
    limits = np.concatenate([rows[1], np.zeros(jobs)])
    objective = np.zeros(cells + 1)
    objective[cells] = -1.0
    first = linprog(objective, A_ub=upper, b_ub=limits, bounds=bounds, method="highs")
    if first.status != 0:
        raise ArithmeticError(f"the max-min LP did not solve: {first.message}")
    best = float(first.x[cells])
    # second stage: every job keeps >= best (less a hair), the sum of normalised throughputs grows
    floor = fair[:, :cells]
    upper = np.vstack([rows[0][:, :cells], floor])
    limits = np.concatenate([rows[1], np.full(jobs, -best * (1 - _SLACK))])
    second = linprog(-gain.reshape(-1), A_ub=upper, b_ub=limits, bounds=bounds[:cells], method="highs")
    chosen = second.x if second.status == 0 else first.x[:cells]
    clipped: np.ndarray = np.clip(np.asarray(chosen, dtype=float).reshape(jobs, models), 0.0, 1.0)
    return clipped


Rows = tuple[np.ndarray, np.ndarray]  # A_ub and b_ub of a linprog
Bounds = list[tuple[float, float | None]]


def _base_rows(jobs: int, models: int, sizes: np.ndarray, capacity: np.ndarray) -> tuple[Rows, Bounds]:
    """sum_m X[j][m] <= 1 per job, sum_j gpus_j X[j][m] <= GPUs of m per model; X in [0, 1], t free."""
    cells = jobs * models
    upper = np.zeros((jobs + models, cells + 1))
    for j in range(jobs):
        upper[j, j * models:(j + 1) * models] = 1.0
        for m in range(models):
            upper[jobs + m, j * models + m] = sizes[j]
    limits = np.concatenate([np.ones(jobs), capacity])
    bounds: list[tuple[float, float | None]] = [(0.0, 1.0)] * cells + [(0.0, None)]
    return (upper, limits), bounds


def _check_agnostic(jobs: Sequence[Job], models: Sequence[str], gpus: Mapping[str, int], best: float) -> None:
    """Solves the agnostic LP and checks that the spread answer reaches its optimum (a guard on
    the closed form above: it is cheap at round sizes)."""
    from scipy.optimize import linprog  # loaded only when asked (as above)

    sizes = np.array([job_gpus(job) for job in jobs], dtype=float)
    gain = np.repeat(sizes[:, None], len(models), axis=1)
    (upper, limits), bounds = _base_rows(len(jobs), len(models), sizes, np.array([gpus[m] for m in models], float))
    cells = len(jobs) * len(models)
    fair = np.zeros((len(jobs), cells + 1))
    for j in range(len(jobs)):
        fair[j, j * len(models):(j + 1) * len(models)] = -gain[j]
        fair[j, cells] = 1.0
    objective = np.zeros(cells + 1)
    objective[cells] = -1.0
    solved = linprog(objective, A_ub=np.vstack([upper, fair]), b_ub=np.concatenate([limits, np.zeros(len(jobs))]),
                     bounds=bounds, method="highs")  # fmt: skip
    if solved.status != 0 or not math.isclose(float(solved.x[cells]), best, rel_tol=1e-6, abs_tol=1e-9):
        raise ArithmeticError("the agnostic max-min LP disagrees with its closed form")


def ordered_shares(
    jobs: Sequence[Job], gpus: Mapping[str, int], order: Callable[[Job], tuple[float, ...]]
) -> dict[str, dict[str, float]]:
    """Shares of a queue-order policy (Gavel's fifo_perf, and SJF/SRTF by the same rule): jobs in
    `order` each take all of their time on the fastest GPU model with room left for them;
    jobs that find none get no share (they run only on GPUs no share claims)."""
    room = dict(gpus)
    shares: dict[str, dict[str, float]] = {}
    for job in sorted(jobs, key=lambda job: (*order(job), job.id)):
        size = job_gpus(job)
        fits = [m for m, left in room.items() if left >= size and throughput(job, m) > 0]
        if fits:
            model = max(fits, key=lambda m: (throughput(job, m), m))
            room[model] -= size
            shares[job.id] = {model: 1.0}
        else:
            shares[job.id] = {}
    return shares


def priorities(view: RoundsView, shares: Shares) -> dict[str, dict[str, float]]:
    """Gavel's round priorities: share on a model over the fraction of its time the job has
    received there (received_s / active_s); infinite for a share with nothing received yet, 0
    without a share."""
    result: dict[str, dict[str, float]] = {}
    for job_id, entry in view.jobs.items():
        received = dict(entry.received_s)
        row: dict[str, float] = {}
        for model, share in shares.get(job_id, {}).items():
            if share <= 1e-9:
                row[model] = 0.0
                continue
            fraction = received.get(model, 0.0) / entry.active_s if entry.active_s > 0 else 0.0
            row[model] = share / fraction if fraction > 0 else math.inf
        result[job_id] = row
    return result
