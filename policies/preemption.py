"""Preemption: which running jobs to evict so that a more important job can run.

Both plugins weigh a victim by the work its eviction throws away (`costing.eviction_loss_gpu_s`:
GPU-worth times the progress since its last checkpoint), and neither ever names a victim of
equal or higher priority. The Framework accepts victims only if the job then fits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler import costing
from scheduler.decision import Code, Preemption, Status
from scheduler.model import ClusterSnapshot, Job, RequestKind
from scheduler.plugin import Cycle, Plugin


def _holders(snapshot: ClusterSnapshot, name: str) -> set[str]:
    return {held for gpu in snapshot.nodes[name].gpus for held in gpu.jobs()}


def _full(rejected: Mapping[str, Status]) -> list[str]:
    """The nodes that refused the job as full (evicting could help there), in name order."""
    return sorted(node for node, status in rejected.items() if status.code is Code.UNSCHEDULABLE)


class PriorityPreemption(Plugin):
    """Evicts preemptible jobs of lower priority from one node that refused the job as full.

    On each such node, victims are taken lowest priority first, then the one whose eviction
    loses the least work, until the node would have room for one replica; the node needing the
    fewest victims wins. A job that is not preemptible is never evicted (it may hold spot-free
    capacity for a reason), so a gang may still be refused.
    """

    name = "PriorityPreemption"

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        snapshot = cycle.snapshot
        need = job.request.gpus if job.request.kind is RequestKind.WHOLE else 1
        best: list[str] | None = None
        for name in _full(rejected):
            node = snapshot.nodes[name]
            pool = cycle.pool_of(node)
            candidates = []
            for held in _holders(snapshot, name):
                running = snapshot.running[held]
                other = running.placement.job
                if other.preemptible and other.priority < job.priority:
                    gpus = sum(len(r.grants) for r in running.placement.replicas if r.node == name)
                    lost = costing.eviction_loss_gpu_s(pool, running, name, cycle.now_s)
                    candidates.append((other.priority, lost, held, gpus))
            free = sum(gpu.free for gpu in node.gpus)
            victims: list[str] = []
            for _, _, held, gpus in sorted(candidates):
                if free >= need:
                    break
                victims.append(held)
                free += gpus
            if victims and free >= need and (best is None or len(victims) < len(best)):
                best = victims
        return [Preemption(victim, "priority", job.id) for victim in best or ()]


class LeastWorkLost(Plugin):
    """Evicts every lower-priority job from the one node, among those that refused the job as
    full, where that loses the least work; a node holding a job of equal or higher priority is
    never chosen. As Kubernetes preempts: any lower priority may be evicted, preemptible or not.
    """

    name = "LeastWorkLost"

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        snapshot = cycle.snapshot
        lost: dict[str, float] = {}
        for name in _full(rejected):
            holders = _holders(snapshot, name)
            if not holders or any(snapshot.running[held].placement.job.priority >= job.priority for held in holders):
                continue
            pool = cycle.pool_of(snapshot.nodes[name])
            lost[name] = sum(costing.eviction_loss_gpu_s(pool, snapshot.running[held], name, cycle.now_s)
                             for held in holders)  # fmt: skip
        if not lost:
            return []
        chosen = min(lost, key=lambda name: (lost[name], name))
        return [Preemption(held, "least work lost", job.id) for held in sorted(_holders(snapshot, chosen))]
