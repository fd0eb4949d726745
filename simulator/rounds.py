"""The simulated world's round ledger: time each active job received on each GPU model.

Gavel's mechanism needs, per job, the time it ran on each GPU model since it arrived; that is
state, so the world keeps it here and shows it on every observed snapshot as a
`scheduler.rounds.RoundsView` (round policies only read it). Time is added when the world is
observed: every job running then has run on its model since the last observation (jobs start
and stop only in cycles, or end, and an ended job leaves the ledger).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from scheduler.model import ClusterSnapshot, Job
from scheduler.rounds import JobRounds, RoundsView
from simulator.runs import MS


@dataclass(slots=True)
class RoundsLedger:
    """Per active job: when it arrived and wall milliseconds on each GPU model."""

    arrived_ms: dict[str, int] = field(default_factory=dict)
    received_ms: dict[str, dict[str, int]] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)
    last_ms: int = 0
    round_id: int = 0

    def arrived(self, job: Job, now_ms: int) -> None:
        self.arrived_ms[job.id] = now_ms
        self.received_ms[job.id] = {}
        self.jobs[job.id] = job

    def ended(self, job_id: str) -> None:
        self.arrived_ms.pop(job_id, None)
        self.received_ms.pop(job_id, None)
        self.jobs.pop(job_id, None)

    def observe(self, snapshot: ClusterSnapshot, now_ms: int, remaining_ms: Callable[[str], int]) -> ClusterSnapshot:
        """`snapshot` with this round's view, after adding the time since the last observation
        to every running job's model; `remaining_ms` gives a job's reference work left."""
        elapsed = now_ms - self.last_ms
        if elapsed > 0:
            for job_id, running in snapshot.running.items():
                if job_id not in self.received_ms:
                    continue
                node = snapshot.nodes[running.placement.replicas[0].node]
                model = snapshot.pools[node.pool].gpu.name
                held = self.received_ms[job_id]
                held[model] = held.get(model, 0) + elapsed
        self.last_ms = now_ms
        self.round_id += 1
        view = RoundsView(self.round_id, MappingProxyType({
            job_id: JobRounds(
                job,
                tuple((model, spent / MS) for model, spent in sorted(self.received_ms[job_id].items())),
                (now_ms - self.arrived_ms[job_id]) / MS,
                remaining_ms(job_id) / MS,
            )
            for job_id, job in self.jobs.items()
        }))  # fmt: skip
        return replace(snapshot, rounds=view)
