"""The cluster model: pools, nodes with per-GPU state, jobs and their requests, snapshots.

Everything here is a frozen value. A `ClusterSnapshot` is everything a policy may know at one
instant; `assume` and `release` return new snapshots, as kube-scheduler's "assume" does, so a
placer can try a placement and drop it again without undo logic.

A node's GPUs are `GpuState`s (`scheduler.gpu_state`, re-exported here with the request kinds
and MIG modes): free, held whole, shared or split into MIG instances. Their transitions raise
`AllocationError` on a broken rule; `scheduler.decision.validate` turns those into a list of
problems for a whole decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from scheduler.catalog import GpuModelSpec
from scheduler.gpu_state import (
    FREE_GPU,
    FULL_GPU_MILLI,
    AllocationError,
    GpuState,
    MigMode,
    MigSlot,
    RequestKind,
    Share,
    drop,
    take,
    within_replica,
)
from scheduler.mig import Layout
from scheduler.observed import MeasuredUtilisation, Served
from scheduler.persistent import K, LayeredMap, V

if TYPE_CHECKING:
    from scheduler.governance import GovernanceView
    from scheduler.rounds import RoundsView


class Capacity(StrEnum):
    """How a pool's nodes are bought."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class JobKind(StrEnum):
    """Batch jobs finish; services run until their end time."""

    BATCH = "batch"
    SERVICE = "service"


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """A homogeneous group of nodes sharing GPU model, capacity type, price and behaviour."""

    name: str
    gpu: GpuModelSpec
    gpus_per_node: int
    capacity: Capacity = Capacity.ON_DEMAND
    usd_per_node_hour: float = 0.0
    price_source: str = ""
    nodes: int = 0
    min_nodes: int = 0
    max_nodes: int = 0
    provision_delay_s: float = 0.0
    idle_release_s: float = 600.0
    interruptions_per_node_hour: float = 0.0
    notice_s: float = 0.0
    mig_mode: MigMode = MigMode.OFF
    mig_layout: Layout = ()
    sharing: bool = False
    # A device plugin that replicates each GPU (time-slicing, MPS) hands every pod one replica of
    # a GPU it picks itself: no GPU is ever held whole there, only shares fit. Under MPS each
    # replica is capped at 1/device_replicas of the GPU's compute and memory, so a larger share
    # would get less than it asked and does not fit (`replica_limits`).
    device_replicas: int = 0
    replica_limits: bool = False

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_node_hour / self.gpus_per_node

    @property
    def elastic(self) -> bool:
        return self.max_nodes > self.min_nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuRequest:
    """What one replica needs: `gpus` whole GPUs, a share of one GPU, or `gpus` MIG instances.

    A share is `milli` thousandths of a GPU's compute and `memory_mib` of its memory.
    """

    kind: RequestKind = RequestKind.WHOLE
    gpus: int = 1
    milli: int = FULL_GPU_MILLI
    memory_mib: int = 0
    mig_profile: str = ""

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ValueError(f"a request needs at least one GPU or instance, got {self.gpus}")
        if self.kind is RequestKind.SHARE and (self.gpus != 1 or not 0 < self.milli <= FULL_GPU_MILLI):
            raise ValueError(f"a share is 1..1000 milli of one GPU, got {self.gpus} x {self.milli}")
        if (self.kind is RequestKind.MIG) != bool(self.mig_profile):
            raise ValueError("a MIG request names a profile and only a MIG request does")

    def describe(self) -> str:
        """A short human form: `2 GPUs`, `300m+8192MiB`, `1 x 3g.40gb`."""
        if self.kind is RequestKind.SHARE:
            return f"{self.milli}m+{self.memory_mib}MiB"
        if self.kind is RequestKind.MIG:
            return f"{self.gpus} x {self.mig_profile}"
        return f"{self.gpus} GPU" + ("s" if self.gpus > 1 else "")


@dataclass(frozen=True, slots=True, kw_only=True)
class Labels:
    """Who a job's cost is attributed to."""

    team: str = ""
    project: str = ""
    model: str = ""
    experiment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A unit of work: a gang of identical replicas, each with one GpuRequest.

    `duration_s` is the work on the reference GPU; `speedups` scales it per GPU model.
    `status` is what the trace says became of it (completed, failed, killed).
    `runtime_limit_s` is the longest it may run once started, in wall-clock seconds, when its
    owner declared one (0: none); reservations read it (`scheduler.backfill`).
    `served` is the load a replica of an inference service serves (None for other jobs).
    `measured` is the GPU utilisation its trace measured (None when it has none).
    """

    id: str
    request: GpuRequest = field(default_factory=GpuRequest)
    submit_s: float = 0.0
    duration_s: float = 0.0
    replicas: int = 1
    gpu_models: frozenset[str] = frozenset()
    priority: int = 0
    preemptible: bool = False
    checkpoint_interval_s: float = 0.0
    checkpoint_overhead_s: float = 0.0
    restore_s: float = 0.0
    kind: JobKind = JobKind.BATCH
    labels: Labels = field(default_factory=Labels)
    status: str = "completed"
    speedups: tuple[tuple[str, float], ...] = ()
    runtime_limit_s: float = 0.0
    served: Served | None = None
    #: GPU utilisation measured while the job ran, when its trace has it (`simulator.measured`).
    measured: MeasuredUtilisation | None = None

    @property
    def checkpointable(self) -> bool:
        return self.checkpoint_interval_s > 0


@dataclass(frozen=True, slots=True)
class Grant:
    """One GPU (and, for MIG, the instance's start) given to one replica."""

    gpu: int
    mig_start: int | None = None


@dataclass(frozen=True, slots=True)
class ReplicaPlacement:
    """Where one replica runs: a node and the GPUs granted on it."""

    node: str
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where every replica of a job runs (a gang is placed whole)."""

    job: Job
    replicas: tuple[ReplicaPlacement, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    """A machine of a pool and the state of each of its GPUs."""

    name: str
    pool: str
    gpus: tuple[GpuState, ...]
    ready: bool = True

    def grant(self, pool: Pool, job: Job, grants: Sequence[Grant]) -> Node:
        """This node with `grants` given to one replica of `job`; AllocationError if illegal."""
        gpus = list(self.gpus)
        for grant in grants:
            if not 0 <= grant.gpu < len(gpus):
                raise AllocationError(f"node {self.name} has no GPU {grant.gpu}")
            gpus[grant.gpu] = take(gpus[grant.gpu], pool, job.id, job.request, grant.mig_start)
        return Node(name=self.name, pool=self.pool, gpus=tuple(gpus), ready=self.ready)

    def without(self, pool: Pool, job_id: str, indexes: Set[int] | None = None) -> Node:
        """This node with everything `job_id` holds (on GPUs `indexes`, if known) given back.

        Dynamic MIG instances the job held are removed.
        """
        if indexes is None:
            indexes = {index for index, gpu in enumerate(self.gpus) if job_id in gpu.jobs()}
        gpus = list(self.gpus)
        for index in indexes:
            gpus[index] = drop(gpus[index], pool, job_id)
        return Node(name=self.name, pool=self.pool, gpus=tuple(gpus), ready=self.ready)


def empty_node(pool: Pool, name: str) -> Node:
    """A new node of `pool`: free GPUs, or GPUs split into the pool's fixed MIG layout."""
    if pool.mig_mode is MigMode.FIXED:
        gpu = GpuState(mig=tuple(MigSlot(instance) for instance in pool.mig_layout))
    else:
        gpu = FREE_GPU
    return Node(name=name, pool=pool.name, gpus=(gpu,) * pool.gpus_per_node)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs, where, and since when."""

    placement: Placement
    start_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """Everything a policy may know about the cluster at one instant. Never mutated.

    `governance` is what guardrail plugins read (`scheduler.governance`): None when ungoverned.
    `rounds` is what round-based policies read (`scheduler.rounds`): None unless a world runs them.
    """

    pools: Mapping[str, Pool]
    nodes: Mapping[str, Node]
    running: Mapping[str, RunningJob] = field(default_factory=lambda: MappingProxyType({}))
    governance: GovernanceView | None = None
    rounds: RoundsView | None = None

    def pool_of(self, node: Node) -> Pool:
        return self.pools[node.pool]

    def assume(self, placement: Placement, start_s: float = 0.0) -> ClusterSnapshot:
        """The snapshot with `placement` running; AllocationError when it does not fit."""
        job = placement.job
        if job.id in self.running:
            raise AllocationError(f"job {job.id} is already running")
        changed: dict[str, Node] = {}
        for replica in placement.replicas:
            node = changed.get(replica.node) or self.nodes.get(replica.node)
            if node is None:
                raise AllocationError(f"no node {replica.node}")
            if not node.ready:
                raise AllocationError(f"node {replica.node} is not ready")
            changed[replica.node] = node.grant(self.pools[node.pool], job, replica.grants)
        return self._with(_layered(self.nodes).updated(changed),
                          _layered(self.running).updated({job.id: RunningJob(placement, start_s)}))  # fmt: skip

    def release(self, job_id: str) -> ClusterSnapshot:
        """The snapshot with `job_id` stopped and its GPUs free again."""
        if job_id not in self.running:
            raise AllocationError(f"job {job_id} is not running")
        changed: dict[str, Node] = {}
        for replica in self.running[job_id].placement.replicas:
            node = changed.get(replica.node) or self.nodes[replica.node]
            indexes = {grant.gpu for grant in replica.grants}
            changed[replica.node] = node.without(self.pools[node.pool], job_id, indexes)
        return self._with(_layered(self.nodes).updated(changed), _layered(self.running).removed(job_id))

    def with_node(self, node: Node) -> ClusterSnapshot:
        """The snapshot with `node` added or replaced (a node joining, or becoming ready)."""
        return self._with(_layered(self.nodes).updated({node.name: node}), self.running)

    def without_node(self, name: str) -> ClusterSnapshot:
        """The snapshot without an empty node (released or taken back); AllocationError if it holds jobs."""
        held = {job for gpu in self.nodes[name].gpus for job in gpu.jobs()}
        if held:
            raise AllocationError(f"node {name} still holds {', '.join(sorted(held))}")
        return self._with(_layered(self.nodes).removed(name), self.running)

    def _with(self, nodes: Mapping[str, Node], running: Mapping[str, RunningJob]) -> ClusterSnapshot:
        """This snapshot with other nodes and running jobs; the pools and the views stay."""
        return ClusterSnapshot(self.pools, nodes, running, self.governance, self.rounds)


def _layered(items: Mapping[K, V]) -> LayeredMap[K, V]:
    return items if isinstance(items, LayeredMap) else LayeredMap(items)


# The GPU state's names are part of the model: callers import them from here.
__all__ = [
    "FREE_GPU", "FULL_GPU_MILLI", "AllocationError", "Capacity", "ClusterSnapshot", "GpuRequest", "GpuState", "Grant",
    "Job", "JobKind", "Labels", "MeasuredUtilisation", "MigMode", "MigSlot", "Node", "Placement", "Pool",
    "ReplicaPlacement", "RequestKind", "RunningJob", "Served", "Share", "empty_node", "within_replica",
]  # fmt: skip
