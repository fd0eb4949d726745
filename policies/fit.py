"""Fit filters: can one replica of the job run on the node at all, and if not, why.

Each filter speaks only for its own request kind (or rule) and passes the others, so a profile
lists them side by side. A mismatch no eviction can fix (GPU model, MIG mode, a request larger
than the node) is UNRESOLVABLE; a node that is merely full is UNSCHEDULABLE.
"""

from __future__ import annotations

from scheduler import capacity, mig
from scheduler.decision import OK, Status
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, MigMode, Node, Pool, RequestKind, within_replica
from scheduler.plugin import Cycle, Plugin


class GpuModelFit(Plugin):
    """Rejects nodes whose GPU model the job does not accept (no models named: any fits)."""

    name = "GpuModelFit"
    job_fields = frozenset[str]()

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        model = cycle.pool_of(node).gpu.name
        if job.gpu_models and model not in job.gpu_models:
            return Status.unresolvable(f"node has {model}; job accepts {', '.join(sorted(job.gpu_models))}")
        return OK


class WholeGpuFit(Plugin):
    """Whole-GPU replicas need that many free GPUs on one node outside MIG mode."""

    name = "WholeGpuFit"
    job_fields = frozenset[str]()

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        request = job.request
        if request.kind is not RequestKind.WHOLE:
            return OK
        pool = cycle.pool_of(node)
        if pool.mig_mode is not MigMode.OFF:
            return Status.unresolvable("GPUs are in MIG mode; whole GPUs are not offered")
        if pool.device_replicas:
            return Status.unresolvable(f"every GPU is shared {pool.device_replicas} ways; whole GPUs are not offered")
        if request.gpus > len(node.gpus):
            return Status.unresolvable(f"replica needs {request.gpus} GPUs; node has {len(node.gpus)}")
        free = sum(gpu.free for gpu in node.gpus)
        if free < request.gpus:
            return Status.unschedulable(f"{free} of {request.gpus} GPUs free")
        return OK


class GpuShareFit(Plugin):
    """A share needs one GPU of a sharing pool with enough compute (milli) and memory left."""

    name = "GpuShareFit"
    job_fields = frozenset[str]()

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        request = job.request
        if request.kind is not RequestKind.SHARE:
            return OK
        pool = cycle.pool_of(node)
        if pool.mig_mode is not MigMode.OFF:
            return Status.unresolvable("GPUs are in MIG mode; shares are not offered")
        if not pool.sharing:
            return Status.unresolvable(f"pool {pool.name} does not share GPUs")
        too_large = _share_too_large(pool, request)
        if too_large:
            return Status.unresolvable(too_large)
        if capacity.find_grants(pool, node, request) is None:
            open_gpus = [g for g in node.gpus if g.owner is None]
            room = max(
                ((FULL_GPU_MILLI - g.used_milli, pool.gpu.memory_mib - g.used_memory_mib) for g in open_gpus),
                default=(0, 0),
            )
            return Status.unschedulable(
                f"no GPU has {request.milli}m and {request.memory_mib} MiB free (best: {room[0]}m, {room[1]} MiB)"
            )
        return OK


def _share_too_large(pool: Pool, request: GpuRequest) -> str:
    """Why a share can never fit a GPU of `pool` ('' when it can)."""
    if request.memory_mib > pool.gpu.memory_mib:
        return f"share needs {request.memory_mib} MiB; a GPU has {pool.gpu.memory_mib} MiB"
    if not within_replica(pool, request):
        replicas = pool.device_replicas
        return f"share exceeds an MPS replica ({FULL_GPU_MILLI // replicas}m, {pool.gpu.memory_mib // replicas} MiB)"
    return ""


class MigFit(Plugin):
    """A MIG request needs the profile on this GPU model and free instances (or legal free starts)."""

    name = "MigFit"
    job_fields = frozenset[str]()

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        request = job.request
        if request.kind is not RequestKind.MIG:
            return OK
        pool = cycle.pool_of(node)
        geometry = pool.gpu.mig
        if pool.mig_mode is MigMode.OFF or geometry is None:
            return Status.unresolvable(f"GPUs are not in MIG mode; {request.mig_profile} is not offered")
        if request.mig_profile not in geometry.profiles:
            return Status.unresolvable(f"{pool.gpu.name} has no MIG profile {request.mig_profile}")
        fixed = pool.mig_mode is MigMode.FIXED
        if fixed:
            per_gpu = sum(instance.profile == request.mig_profile for instance in pool.mig_layout)
        else:
            per_gpu = geometry.profiles[request.mig_profile].max_count
        limit = len(node.gpus) * per_gpu
        if request.gpus > limit:
            where = f"layout {mig.format_layout(pool.mig_layout)}" if fixed else "node"
            return Status.unresolvable(
                f"needs {request.gpus} x {request.mig_profile}; the {where} offers at most {limit}"
            )
        if capacity.find_grants(pool, node, request) is None:
            return Status.unschedulable(f"no free {request.mig_profile} instance or legal free start")
        return OK
