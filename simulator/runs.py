"""One job's life in a replay (`JobRun`), the phases it goes through, and the engine's time unit.

Time is integer milliseconds (`ms`); progress is counted in milliseconds of work on the
reference GPU, so a job on a GPU twice as fast makes two of them per millisecond.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from scheduler.model import Job, Placement
from simulator.ledger import PARTS

MS = 1000


def ms(seconds: float) -> int:
    """Seconds as the engine's integer milliseconds."""
    return round(seconds * MS)


class Phase(StrEnum):
    """Where a job run stands. A run waits, then (restoring first when it saved progress
    before) computes and checkpoints in turn until it is done; a stop (eviction, take-back
    notice) ends the attempt, and the run waits again."""

    WAITING = "waiting"
    RESTORE = "restore"
    COMPUTE = "compute"
    CHECKPOINT = "checkpoint"
    STOPPING = "stopping"
    DONE = "done"


@dataclass(slots=True)
class JobRun:
    """One job's life in the replay: progress (reference-GPU milliseconds), attempts, outcome."""

    job: Job
    total_ms: int
    saved_ms: int = 0
    progress_ms: int = 0
    phase: Phase = Phase.WAITING
    phase_start_ms: int = 0
    safe_since_ms: int = 0
    speed: float = 1.0
    placement: Placement | None = None
    epoch: int = 0
    first_start_ms: int | None = None
    end_ms: int | None = None
    outcome: str = ""
    preemptions: int = 0
    interruptions: int = 0
    lost_gpu_ms: int = 0
    pools: set[str] = field(default_factory=set)
    held_parts: dict[str, int] = field(default_factory=dict)

    def progress_at(self, now_ms: int) -> int:
        if self.phase is not Phase.COMPUTE:
            return self.progress_ms
        return min(self.total_ms, self.progress_ms + math.floor((now_ms - self.phase_start_ms) * self.speed))

    def gpus(self) -> float:
        """GPU-equivalents held now (shares and MIG instances by their fraction)."""
        return sum(self.held_parts.values()) / PARTS
