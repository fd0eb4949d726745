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
from fractions import Fraction
from itertools import pairwise
from typing import Any, ClassVar

from policies.rounds import PRIORITIES
from scheduler.errors import InputError
from scheduler.model import FULL_GPU_MILLI, ClusterSnapshot, Job, Node, Pool, RequestKind
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
    """Gavel's cost-aware policy, `ThroughputNormalizedByCostSum_Perf` (Narayanan et al., OSDI'20;
    stanford-futuredata/gavel `scheduler/policies/max_sum_throughput.py`).

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
    """Tiresias' Discretized 2D-LAS (Gu et al., "Tiresias: A GPU Cluster Manager for Distributed Deep
    Learning", NSDI'19; SymbioticLab/Tiresias `simulator/run_sim.py` `dlas_sim_jobs`).

    Jobs sit in K priority queues by attained service, GPUs x seconds run (the round view's
    `received_s`): queue k holds jobs between thresholds k - 1 and k (`[args.Tiresias]
    thresholds_gpu_s`; default 3,250 and 7,200 GPU-seconds, three queues: the `queue_limit` and
    `num_queue` of the authors' simulator, `jobs.py`). Lower queues first, FIFO by arrival inside
    a queue; heterogeneity-agnostic (the same priority on every model; the profile's
    `RoundsShuffle` orders the models afresh each round, as Gavel's mechanism does for agnostic
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


class RoundsShuffle(Plugin):
    """A heterogeneity-agnostic choice of GPU model: the models in an order drawn afresh each round.

    Gavel's mechanism shuffles the worker types every round for the policies that do not weigh
    throughputs (`Scheduler._schedule_jobs_on_workers`, "Perf" not in the policy's name), so an
    agnostic policy lands jobs on no model by design. The score is a hash of the round number and
    the model's name into [0, 1): the same for every job and node of the model in a round and in
    every replay, and no generator's (a plugin's only generator, `cycle.rng`, would give each node
    class its own draw); without a round view every model scores alike.
    """

    name = "RoundsShuffle"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)
    reads_rounds: ClassVar[bool] = True

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        view = cycle.snapshot.rounds
        if view is None:
            return 0.0
        return _unit_hash(f"{view.round_id}:{cycle.pool_of(node).gpu.name}")


def _unit_hash(text: str) -> float:
    """`text` hashed to [0, 1): 64-bit FNV-1a, then a MurmurHash3 finaliser so that neighbouring
    round numbers land far apart (Python's `hash` of a str changes from process to process)."""
    mask = (1 << 64) - 1
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & mask
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & mask
    value ^= value >> 33
    return value / (1 << 64)


Usage = tuple[Fraction, Fraction]  # GPU compute in milli-GPU, GPU memory in MiB


def gpu_capacity(snapshot: ClusterSnapshot) -> Usage:
    """The cluster's GPU compute (milli-GPU) and GPU memory (MiB) over ready nodes."""
    gpus = memory = 0
    for node in snapshot.nodes.values():
        if node.ready:
            gpus += len(node.gpus)
            memory += len(node.gpus) * snapshot.pools[node.pool].gpu.memory_mib
    return Fraction(gpus * FULL_GPU_MILLI), Fraction(memory)


def replica_usage(
    job: Job, grants: int, pool: Pool | None, pools: Mapping[str, Pool], memory_per_gpu_mib: Fraction
) -> Usage:
    """What one replica of `job` holds with `grants` GPUs or MIG instances: on `pool` when it runs.
    When it waits (`pool` None), a whole GPU holds `memory_per_gpu_mib` (the cluster's mean) and a
    MIG instance is sized on the first pool by name that offers its profile (a whole GPU if none)."""
    request = job.request
    if request.kind is RequestKind.SHARE:
        return Fraction(request.milli), Fraction(request.memory_mib)
    if request.kind is RequestKind.MIG:
        offering = (p for _, p in sorted(pools.items()) if p.gpu.mig and request.mig_profile in p.gpu.mig.profiles)
        sized = pool if pool is not None else next(offering, None)
        geometry = sized.gpu.mig if sized is not None else None
        if sized is not None and geometry is not None and request.mig_profile in geometry.profiles:
            spec = geometry.profiles[request.mig_profile]
            compute = Fraction(FULL_GPU_MILLI * spec.compute_slices, geometry.compute_slices)
            memory = Fraction(sized.gpu.memory_mib * spec.memory_slices, geometry.memory_slices)
            return grants * compute, grants * memory
    memory = Fraction(pool.gpu.memory_mib) if pool is not None else memory_per_gpu_mib
    return Fraction(grants * FULL_GPU_MILLI), grants * memory


def team_usage(snapshot: ClusterSnapshot) -> dict[str, Usage]:
    """GPU compute and memory each team's running jobs hold (team: the job's `labels.team`)."""
    held: dict[str, Usage] = {}
    for running in snapshot.running.values():
        job = running.placement.job
        for replica in running.placement.replicas:
            pool = snapshot.pools[snapshot.nodes[replica.node].pool]
            milli, memory = replica_usage(job, len(replica.grants), pool, snapshot.pools, Fraction(0))
            before = held.get(job.labels.team, (Fraction(0), Fraction(0)))
            held[job.labels.team] = (before[0] + milli, before[1] + memory)
    return held


def dominant_share(usage: Usage, capacity: Usage) -> Fraction:
    """The largest of usage over capacity, resource by resource (0 for a resource the cluster lacks)."""
    return max((used / total for used, total in zip(usage, capacity, strict=True) if total > 0), default=Fraction(0))


class _Filling:
    """One cycle's progressive filling: each team's usage, its running jobs' plus the demands of
    the jobs already asked about, and each asked job's key."""

    __slots__ = ("capacity", "keys", "memory_per_gpu_mib", "pools", "usage")

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        self.pools = snapshot.pools
        self.capacity = gpu_capacity(snapshot)
        milli, memory = self.capacity
        self.memory_per_gpu_mib = memory * FULL_GPU_MILLI / milli if milli else Fraction(0)
        self.usage = team_usage(snapshot)
        self.keys: dict[str, Fraction] = {}

    def key(self, job: Job) -> Fraction:
        if job.id in self.keys:
            return self.keys[job.id]
        team = job.labels.team
        before = self.usage.get(team, (Fraction(0), Fraction(0)))
        self.keys[job.id] = dominant_share(before, self.capacity)
        milli, memory = replica_usage(job, job.request.gpus, None, self.pools, self.memory_per_gpu_mib)
        self.usage[team] = (before[0] + job.replicas * milli, before[1] + job.replicas * memory)
        return self.keys[job.id]


class DrfOrder(Plugin):
    """Dominant resource fairness across teams (Ghodsi et al., "Dominant Resource Fairness: Fair
    Allocation of Multiple Resource Types", NSDI'11, progressive filling; Volcano's `drf` plugin,
    `pkg/scheduler/plugins/drf/drf.go`, orders jobs by their own dominant share and namespaces by
    theirs).

    A waiting job's key is its team's dominant share, the largest over GPU compute and GPU
    memory of what the team holds over the cluster's ready capacity, after adding the demands
    of the team's jobs asked about before it in this cycle: progressive filling, so that the
    team furthest below its share gets the next job and one cycle does not hand one team every
    GPU. Lowest key first; submit time, then id, break ties. The Framework asks each job's key
    once per cycle in the order the queue shows them (for a non-static sort, the order jobs
    entered the waiting queue: arrival, or return after a preemption), so "before it" is that
    order; the plugin keeps the running sums in `cycle.memo`.

    Departs from the paper and Volcano: resources are the GPU compute and GPU memory jobs ask
    for (jobs here declare no CPU or host memory); a waiting whole-GPU job counts the cluster's
    mean memory per GPU (the model it lands on is not known yet); no weights; the order alone
    (no DRF preemption, Volcano's optional `preempt` action); team = `labels.team`, jobs with
    none forming one team.
    """

    name = "DrfOrder"
    static = False

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return (cycle.memo("DrfOrder.filling", lambda: _Filling(cycle.snapshot)).key(job),)


__all__ = ["DrfOrder", "RoundsCost", "RoundsShuffle", "Tiresias", "TiresiasArgs", "dominant_share", "gpu_capacity",
           "replica_usage", "team_usage", "tiresias_priorities", "tiresias_queue"]
