"""Preemption: which running jobs to evict so that a more important job can run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.decision import Code, Preemption, Status
from scheduler.model import Job
from scheduler.plugin import Cycle, Plugin


class PriorityPreemption(Plugin):
    """Evicts preemptible jobs of lower priority from one node that refused the job as full.

    On each such node, victims are taken lowest priority first, then the one that loses the
    least work (GPUs held x time since it started, a stand-in for the unsaved progress), until
    the node would have room for one replica; the node needing the fewest victims wins. The
    Framework accepts the victims only if the job then fits, so a gang may still be refused.
    """

    name = "PriorityPreemption"

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        snapshot = cycle.snapshot
        need = job.request.gpus if job.request.kind.value == "whole" else 1
        best: list[str] | None = None
        for name in sorted(node for node, status in rejected.items() if status.code is Code.UNSCHEDULABLE):
            node = snapshot.nodes[name]
            holders = {held for gpu in node.gpus for held in gpu.jobs()}
            candidates = []
            for held in holders:
                running = snapshot.running[held]
                other = running.placement.job
                if other.preemptible and other.priority < job.priority:
                    gpus = sum(len(r.grants) for r in running.placement.replicas if r.node == name)
                    candidates.append((other.priority, gpus * (cycle.now_s - running.start_s), held, gpus))
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
