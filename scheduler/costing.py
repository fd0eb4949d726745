"""The one home of each money formula: GPU-worth, price shares, opened nodes, spot risk, lost work.

The batch placer's objective and the benchmarks' "dollars per hour committed" both come from
here, so a comparison of placers measures them with the same ruler:

- A replica on a node that already runs work commits its share of the node's price: its GPUs'
  worth (`gpu_fraction`: whole GPUs, a share's milli-GPU, a MIG instance's compute slices out
  of the GPU's) times the pool's price per GPU-hour.
- A replica on an empty node of a pool without MIG opens the node: the whole node's price is
  committed, since the node could otherwise be released (or never be bought), and what the
  replicas leave free on it is paid for idle. MIG pools are charged by share only: their GPUs
  are partitioned for the slices, and the fragmentation term keeps new GPUs from being split.
- A replica on spot capacity carries the expected cost of the work a take-back destroys
  (`spot_risk_usd_per_hour`).
- An eviction throws away the work since a job's last checkpoint (`work_lost_s`,
  `eviction_loss_gpu_s`): what preemption plugins weigh, in both worlds.

The ledger (`simulator.ledger`) counts the same GPU-worth in exact integer parts.

Worked example: an 8-GPU H100 node at $98.32/h ($12.29 per GPU-hour) running one job receives
a 2-GPU replica: $24.58/h committed. The same replica on an empty node commits $98.32/h.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from scheduler.model import (
    FULL_GPU_MILLI,
    Capacity,
    GpuRequest,
    Job,
    MigMode,
    Node,
    Placement,
    Pool,
    RequestKind,
    RunningJob,
)

SECONDS_PER_HOUR = 3600.0
#: The batch objective's tie-break, per GPU left free on a node or GPU work lands on ($/h).
TIE_USD = 0.01


def gpu_worth(pool: Pool, request: GpuRequest) -> Fraction:
    """GPUs' worth one replica of `request` holds on `pool`, exactly: its whole GPUs, a share's
    milli-GPU out of 1,000, a MIG instance's compute slices out of the GPU's.

    A MIG profile the pool's GPU does not offer can never be placed there; it is counted as the
    whole GPUs it names, the most an instance could be.

    >>> from scheduler.catalog import default_catalog
    >>> a100 = Pool(name="a100", gpu=default_catalog().resolve("A100-40GB"), gpus_per_node=8)
    >>> gpu_worth(a100, GpuRequest(kind=RequestKind.MIG, mig_profile="3g.20gb"))
    Fraction(3, 7)
    >>> gpu_worth(a100, GpuRequest(kind=RequestKind.SHARE, milli=300)), gpu_worth(a100, GpuRequest(gpus=2))
    (Fraction(3, 10), Fraction(2, 1))
    """
    return Fraction(*_worth(pool, request))


def gpu_fraction(pool: Pool, request: GpuRequest) -> float:
    """`gpu_worth` as a float, for scores and prices (the same number, rounded once)."""
    numerator, denominator = _worth(pool, request)
    return numerator / denominator


def _worth(pool: Pool, request: GpuRequest) -> tuple[int, int]:
    """`gpu_worth` as a numerator and a denominator: scores ask for it per node class and
    cycle, where building a Fraction would cost more than the rest of the score."""
    if request.kind is RequestKind.WHOLE:
        return request.gpus, 1
    if request.kind is RequestKind.SHARE:
        return request.milli, FULL_GPU_MILLI
    geometry = pool.gpu.mig
    spec = geometry.profiles.get(request.mig_profile) if geometry is not None else None
    if geometry is None or spec is None:
        return request.gpus, 1
    return request.gpus * spec.compute_slices, geometry.compute_slices


def replica_usd_per_hour(pool: Pool, request: GpuRequest) -> float:
    """The price share of one replica on a node that already runs work."""
    return gpu_fraction(pool, request) * pool.usd_per_gpu_hour


def opens(pool: Pool, node: Node) -> bool:
    """Whether work placed on `node` opens it: an empty node of a pool without MIG."""
    return pool.mig_mode is MigMode.OFF and not any(gpu.busy for gpu in node.gpus)


def work_lost_s(job: Job, ran_s: float) -> float:
    """Seconds of one replica's progress an eviction throws away when `job` has run `ran_s` since
    it last started: half a checkpoint interval on average once it has run a whole interval
    (it has saved since), else everything it ran.

    >>> work_lost_s(Job(id="saves", checkpoint_interval_s=600), 3600), work_lost_s(Job(id="never"), 3600)
    (300.0, 3600)
    """
    if job.checkpointable and ran_s >= job.checkpoint_interval_s:
        return job.checkpoint_interval_s / 2
    return ran_s


def eviction_loss_gpu_s(pool: Pool, running: RunningJob, node: str, now_s: float) -> float:
    """GPU-seconds of work lost if `running` gives up its replicas on `node` now."""
    job = running.placement.job
    here = sum(1 for replica in running.placement.replicas if replica.node == node)
    return here * gpu_fraction(pool, job.request) * work_lost_s(job, max(0.0, now_s - running.start_s))


def spot_loss_s(pool: Pool, job: Job) -> float:
    """Seconds of one replica's progress a spot take-back is expected to destroy, over its run.

    A take-back comes with notice: a job that checkpoints within it loses only its restore
    time; one that checkpoints less often loses half an interval on average, and the restore;
    one that never checkpoints loses half its run (the take-back is as likely at any moment).
    """
    if job.checkpointable:
        if job.checkpoint_overhead_s <= pool.notice_s:
            return job.restore_s
        return job.checkpoint_interval_s / 2 + job.restore_s
    return job.duration_s / 2


def spot_risk_usd_per_hour(pool: Pool, job: Job) -> float:
    """Expected dollars of lost work per hour one replica of `job` runs on `pool`.

    Take-backs per node-hour times the GPU-hours one take-back destroys times their price.
    Zero off spot.
    """
    if pool.capacity is not Capacity.SPOT or pool.interruptions_per_node_hour <= 0:
        return 0.0
    lost_h = spot_loss_s(pool, job) / SECONDS_PER_HOUR
    return pool.interruptions_per_node_hour * lost_h * replica_usd_per_hour(pool, job.request)


def committed_usd_per_hour(
    pools: Mapping[str, Pool], nodes: Mapping[str, Node], placements: Iterable[Placement]
) -> float:
    """Dollars per hour that `placements` commit on the cluster `nodes` describes before them.

    Every node opened counts once at its full price, whatever lands on it.
    """
    total = 0.0
    opened: set[str] = set()
    for placement in placements:
        for replica in placement.replicas:
            node = nodes[replica.node]
            pool = pools[node.pool]
            if opens(pool, node):
                if replica.node not in opened:
                    opened.add(replica.node)
                    total += pool.usd_per_node_hour
            else:
                total += replica_usd_per_hour(pool, placement.job.request)
    return total


def spot_risk_total(pools: Mapping[str, Pool], nodes: Mapping[str, Node], placements: Iterable[Placement]) -> float:
    """Expected dollars per hour of work lost to spot take-backs, over every replica placed."""
    return sum(
        spot_risk_usd_per_hour(pools[nodes[replica.node].pool], placement.job)
        for placement in placements
        for replica in placement.replicas
    )
