"""Gavel's cost-aware shares: the most throughput per dollar, by linear program (scipy's HiGHS).

Gavel (Narayanan et al., OSDI'20, its cost-minimising policy; `ThroughputNormalizedByCostSum_Perf`
in stanford-futuredata/gavel `scheduler/policies/max_sum_throughput.py`) gives each job a share
of time on each GPU model that maximises the sum over jobs and models of throughput over the
model's price, under its base constraints: sum_m X[j][m] <= 1 per job, sum_j scale_j X[j][m]
<= GPUs of m per model, X >= 0. The round mechanism (`scheduler.rounds.priorities`) then turns
these shares into placements as for every other round policy.

Prices per GPU model come from the snapshot's pools: the GPU-weighted mean of each ready node's
pool price per GPU-hour (`usd_per_gpu_hour_by_model`), so a model sold by an on-demand and a
spot pool costs what its GPUs here cost on average. Gavel reads one price per worker type.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from scheduler.model import ClusterSnapshot, Job
from scheduler.rounds import job_gpus, throughput

_SLACK = 1e-9  # the tie-break LP keeps the objective within this (relative) of its optimum
# Shares below this are 0: the tie-break LP may trade a hair of objective (its slack, HiGHS's
# feasibility tolerance) for weight, and a share of 1e-7 on a model the job never ran on would
# have an infinite round priority there.
_CRUMB = 1e-6


def usd_per_gpu_hour_by_model(snapshot: ClusterSnapshot) -> dict[str, float]:
    """Per GPU model, the GPU-weighted mean price per GPU-hour over ready nodes, models in name order."""
    gpus: dict[str, int] = {}
    usd: dict[str, float] = {}
    for node in snapshot.nodes.values():
        if node.ready:
            pool = snapshot.pools[node.pool]
            model = pool.gpu.name
            gpus[model] = gpus.get(model, 0) + len(node.gpus)
            usd[model] = usd.get(model, 0.0) + len(node.gpus) * pool.usd_per_gpu_hour
    return {model: usd[model] / count for model, count in sorted(gpus.items()) if count > 0}


def cost_shares(
    jobs: Sequence[Job], gpus: Mapping[str, int], usd_per_gpu_hour: Mapping[str, float]
) -> dict[str, dict[str, float]]:
    """Gavel's cost-aware allocation: maximise sum_j sum_m throughput[j][m] / price[m] * X[j][m].

    Throughputs are the job's speed on each model relative to the reference GPU
    (`scheduler.rounds.throughput`); Gavel uses absolute steps per second, which weighs a job by
    how many steps its model happens to take per second; relative to the reference, every job
    counts alike. As in Gavel's code, the price is per GPU, not multiplied by the job's GPUs.

    Prices: when some model here has no positive price, prices cannot rank models, and every
    model costs 1 (the objective is then Gavel's `ThroughputSumWithPerf`, its policy without
    instance costs). Gavel's optional SLOs (a floor on a job's throughput) are not modelled.

    The LP has many optimal answers when jobs tie (two jobs alike competing for one model; one
    job as good on two models). Gavel takes whatever ECOS returns; here a second LP keeps the
    objective at its optimum (less a hair) and maximises sum_j sum_m w[j][m] X[j][m] with
    w[j][m] = (jobs - rank of j by arrival) * (1 + throughput[j][m] / (1 + the largest
    throughput)): time goes rather to earlier jobs (submit time, then id), and an earlier job
    rather to its faster models. Ties it leaves are HiGHS's, which answers the same for the same
    input (jobs in id order, models in name order).
    """
    models = [model for model, count in gpus.items() if count > 0]
    ordered = sorted(jobs, key=lambda job: job.id)
    if not ordered or not models:
        return {job.id: {} for job in jobs}
    priced = all(usd_per_gpu_hour.get(model, 0.0) > 0 for model in models)
    price = np.array([usd_per_gpu_hour[model] if priced else 1.0 for model in models])
    rates = np.array([[throughput(job, model) for model in models] for job in ordered])
    gain = rates / price[None, :]
    arrival = {job.id: rank for rank, job in enumerate(sorted(ordered, key=lambda job: (job.submit_s, job.id)))}
    ranks = np.array([arrival[job.id] for job in ordered], dtype=float)
    weight = (len(ordered) - ranks)[:, None] * (1.0 + rates / (1.0 + float(rates.max())))
    sizes = np.array([job_gpus(job) for job in ordered], dtype=float)
    x = _solve(gain, weight, sizes, np.array([gpus[m] for m in models], dtype=float))
    return {job.id: {m: float(x[i, k]) for k, m in enumerate(models)} for i, job in enumerate(ordered)}


def _solve(gain: np.ndarray, weight: np.ndarray, sizes: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """The two LPs over X (jobs x models, flattened row by row): the optimum of gain, then the
    answer of largest weight among the optimal ones."""
    from scipy.optimize import linprog  # type: ignore[import-untyped]  # no stubs; loaded only when asked (40 MiB)

    jobs, models = gain.shape
    cells = jobs * models
    upper = np.zeros((jobs + models, cells))
    for j in range(jobs):
        upper[j, j * models:(j + 1) * models] = 1.0  # sum_m X[j][m] <= 1
        for m in range(models):
            upper[jobs + m, j * models + m] = sizes[j]  # sum_j scale_j X[j][m] <= GPUs of m
    limits = np.concatenate([np.ones(jobs), capacity])
    # a job gets no time where it cannot run (the tie-break's weight would otherwise give it some)
    bounds = [(0.0, 1.0 if rate > 0 else 0.0) for rate in gain.reshape(-1)]
    first = linprog(-gain.reshape(-1), A_ub=upper, b_ub=limits, bounds=bounds, method="highs")
    if first.status != 0:
        raise ArithmeticError(f"the cost LP did not solve: {first.message}")
    best = float(-first.fun)
    floor = np.vstack([upper, -gain.reshape(1, -1)])
    second = linprog(-weight.reshape(-1), A_ub=floor, b_ub=np.concatenate([limits, [-best * (1 - _SLACK)]]),
                     bounds=bounds, method="highs")  # fmt: skip
    chosen = second.x if second.status == 0 else first.x
    clipped: np.ndarray = np.clip(np.asarray(chosen, dtype=float).reshape(jobs, models), 0.0, 1.0)
    clipped[clipped < _CRUMB] = 0.0
    return clipped
