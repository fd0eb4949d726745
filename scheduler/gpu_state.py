"""GPU state: what a device plugin hands out of one GPU, and the transitions that give and take it back.

A GPU is free, held whole by one job, shared by several jobs by milli-GPU and memory (as
Alibaba's traces and HAMi express it), or split into MIG instances (each free or held by one
job). `take` and `drop` are the only ways a state changes; breaking the rules is a bug in the
caller, so they raise `AllocationError`. `scheduler.model` builds nodes and snapshots on them.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from scheduler import mig
from scheduler.mig import Layout, MigInstance

if TYPE_CHECKING:  # a pool and a request are read here, made in scheduler.model
    from scheduler.model import GpuRequest, Pool

FULL_GPU_MILLI = 1000


class MigMode(StrEnum):
    """Whether a pool's GPUs are split: not at all, on demand, or into a fixed layout."""

    OFF = "off"
    DYNAMIC = "dynamic"
    FIXED = "fixed"


class RequestKind(StrEnum):
    """The three ways a replica asks for GPU."""

    WHOLE = "whole"
    SHARE = "share"
    MIG = "mig"


class AllocationError(ValueError):
    """A GPU state change that breaks capacity or MIG geometry (a bug in the caller)."""


@dataclass(frozen=True, slots=True)
class Share:
    """One job's share of a GPU."""

    job: str
    milli: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class MigSlot:
    """A MIG instance on a GPU and the job holding it (None when free)."""

    instance: MigInstance
    job: str | None = None


_FREE: tuple[Hashable, ...] = (0,)
_OWNED: tuple[Hashable, ...] = (1,)


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU: free, held whole (`owner`), shared (`shares`) or split (`mig`).

    `free` (nothing on it, not split), `busy` (some job holds part of it), `used_milli` and
    `used_memory_mib` are derived once at construction: the scheduler reads them for every
    node class of every cycle.
    """

    owner: str | None = None
    shares: tuple[Share, ...] = ()
    mig: tuple[MigSlot, ...] = ()
    free: bool = field(init=False, compare=False, repr=False)
    busy: bool = field(init=False, compare=False, repr=False)
    used_milli: int = field(init=False, compare=False, repr=False)
    used_memory_mib: int = field(init=False, compare=False, repr=False)
    #: What node classes tell GPUs apart by (`scheduler.capacity.signature`): free, held whole,
    #: shared (by use) or split (by layout and which instances are free).
    signature: tuple[Hashable, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        shares, mig = self.shares, self.mig
        setter = object.__setattr__
        if shares:
            used_milli, used_memory_mib = sum(share.milli for share in shares), sum(s.memory_mib for s in shares)
            setter(self, "free", False)
            setter(self, "busy", True)
            setter(self, "used_milli", used_milli)
            setter(self, "used_memory_mib", used_memory_mib)
            setter(self, "signature", (2, used_milli, used_memory_mib))
            return
        owned = self.owner is not None
        setter(self, "free", not owned and not mig)
        setter(self, "busy", owned or any(slot.job is not None for slot in mig))
        setter(self, "used_milli", 0)
        setter(self, "used_memory_mib", 0)
        if owned:
            setter(self, "signature", _OWNED)
        elif mig:
            setter(self, "signature", (3, tuple((s.instance.start, s.instance.profile, s.job is None) for s in mig)))
        else:
            setter(self, "signature", _FREE)

    @property
    def layout(self) -> Layout:
        return tuple(slot.instance for slot in self.mig)

    def jobs(self) -> set[str]:
        held = {share.job for share in self.shares} | {s.job for s in self.mig if s.job is not None}
        return held | ({self.owner} if self.owner is not None else set())


FREE_GPU = GpuState()  # immutable, so every free GPU can be this one


def take(gpu: GpuState, pool: Pool, job: str, request: GpuRequest, mig_start: int | None) -> GpuState:
    """`gpu` with `job` holding what one GPU of `request` asks (a MIG instance at `mig_start`)."""
    if request.kind is RequestKind.MIG:
        return _take_mig(gpu, pool, job, MigInstance(-1 if mig_start is None else mig_start, request.mig_profile))
    if pool.mig_mode is not MigMode.OFF:
        raise AllocationError(f"pool {pool.name} runs its GPUs in MIG mode; only MIG requests fit")
    if request.kind is RequestKind.WHOLE:
        if pool.device_replicas:
            raise AllocationError(f"pool {pool.name} shares every GPU {pool.device_replicas} ways; none is held whole")
        if not gpu.free:
            raise AllocationError(f"GPU already in use by {', '.join(sorted(gpu.jobs()))}")
        return GpuState(owner=job)
    if not pool.sharing:
        raise AllocationError(f"pool {pool.name} does not share GPUs")
    if not within_replica(pool, request):
        raise AllocationError(f"a share of {request.describe()} exceeds one of {pool.device_replicas} MPS replicas")
    if gpu.owner is not None:
        raise AllocationError(f"GPU held whole by {gpu.owner}")
    if gpu.used_milli + request.milli > FULL_GPU_MILLI:
        raise AllocationError(f"GPU compute over-allocated: {gpu.used_milli}+{request.milli} > {FULL_GPU_MILLI} milli")
    if gpu.used_memory_mib + request.memory_mib > pool.gpu.memory_mib:
        raise AllocationError(
            f"GPU memory over-allocated: {gpu.used_memory_mib}+{request.memory_mib} > {pool.gpu.memory_mib} MiB"
        )
    return GpuState(shares=(*gpu.shares, Share(job, request.milli, request.memory_mib)))


def within_replica(pool: Pool, request: GpuRequest) -> bool:
    """Whether a share fits one device-plugin replica where replicas are capped (MPS)."""
    if not pool.replica_limits or not pool.device_replicas:
        return True
    replicas = pool.device_replicas
    return request.milli <= FULL_GPU_MILLI // replicas and request.memory_mib <= pool.gpu.memory_mib // replicas


def _take_mig(gpu: GpuState, pool: Pool, job: str, instance: MigInstance) -> GpuState:
    geometry = pool.gpu.mig
    if pool.mig_mode is MigMode.OFF or geometry is None:
        raise AllocationError(f"pool {pool.name} does not run MIG")
    slots = list(gpu.mig)
    for position, slot in enumerate(slots):
        if slot.instance == instance:
            if slot.job is not None:
                raise AllocationError(f"MIG instance {instance} already held by {slot.job}")
            slots[position] = MigSlot(instance, job)
            return GpuState(mig=tuple(slots))
    if pool.mig_mode is MigMode.FIXED:
        raise AllocationError(f"no free {instance} in the fixed layout {mig.format_layout(gpu.layout)}")
    try:
        layout = mig.create(geometry, gpu.layout, instance.profile, instance.start)
    except mig.MigLayoutError as error:
        raise AllocationError(str(error)) from None
    held = {slot.instance: slot.job for slot in gpu.mig}
    held[instance] = job
    return GpuState(mig=tuple(MigSlot(each, held.get(each)) for each in layout))


def drop(gpu: GpuState, pool: Pool, job: str) -> GpuState:
    """`gpu` with whatever `job` holds on it given back (a dynamic MIG instance it held removed)."""
    if gpu.owner == job:
        return FREE_GPU
    if gpu.shares:
        return GpuState(shares=tuple(share for share in gpu.shares if share.job != job))
    if pool.mig_mode is MigMode.DYNAMIC:
        return GpuState(mig=tuple(slot for slot in gpu.mig if slot.job not in (None, job)))
    return GpuState(mig=tuple(MigSlot(s.instance) if s.job == job else s for s in gpu.mig))
