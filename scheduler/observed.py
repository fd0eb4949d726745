"""What a trace observed of a job beyond its request: load an inference replica served, GPU use an agent measured.

Both ride on `scheduler.model.Job` (`served`, `measured`) and are read by the world's
accounting (cost per token, allocated-but-idle time), never by a scheduling decision.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Served:
    """What one replica of an inference service serves while it runs (`traces.azure_llm`):
    the service it belongs to, its requests and their input (context) and output tokens."""

    service: str
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MeasuredUtilisation:
    """GPU utilisation measured while a job held its GPUs (percent 0-100): a mean, a series, or both.

    Sample i of `samples_percent` covers `[i * period_s, (i + 1) * period_s)` of the job's
    allocation (its time holding GPUs, from its start); None is a missing sample, a hole the
    idle rule sees as it would a missed scrape (`scheduler.idleness`).
    """

    mean_percent: float | None = None
    samples_percent: tuple[float | None, ...] = ()
    period_s: float = 60.0

    def mean(self) -> float | None:
        """The mean given, else the mean of the samples present (None when there is neither)."""
        if self.mean_percent is not None:
            return self.mean_percent
        present = [sample for sample in self.samples_percent if sample is not None]
        return sum(present) / len(present) if present else None


__all__ = ["MeasuredUtilisation", "Served"]
