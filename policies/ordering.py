"""Queue order plugins: who goes first."""

from __future__ import annotations

from typing import Any

from scheduler.model import Job
from scheduler.plugin import Cycle, Plugin


class PriorityThenAge(Plugin):
    """Higher priority first; among equals, the job submitted earliest."""

    name = "PriorityThenAge"
    static = True  # the key never changes while a job waits

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return (-job.priority, job.submit_s)


class Fifo(Plugin):
    """Strictly by submit time, whatever the priority."""

    name = "Fifo"
    static = True

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return (job.submit_s,)
