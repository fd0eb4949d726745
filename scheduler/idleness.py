"""Allocated-but-idle detection: a GPU whose measured utilisation stays under a threshold for a window.

One rule for every path that measures: the GPU agent's live detector, `fleetsched usage` over
scraped series, and a replay of a trace that carries measured utilisation. Each feeds samples
`(t_s, utilisation_percent)` to an `IdleDetector` (or calls `idle_spans`) and gets the same
spans, so the three paths agree to the second.

A sample covers the time from its own instant to the next sample's; when the next sample comes
more than `max_gap_s` later, or never, it covers `period_s` (the sampling period) and the rest
is a gap: no data, which ends a quiet run, since nothing says what the GPU did then. A quiet
run (every sample under the threshold) that lasts at least `window_s` is idle *in full*, from
its first sample on: the window is how long quiet must last before it counts, not a grace
period given away (a notebook holding a GPU for a weekend is idle from Friday evening, not
from Friday evening plus half an hour).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IdleRule:
    """When a device counts as allocated but idle."""

    #: Utilisation (percent of time a kernel ran, NVML's / DCGM's GPU_UTIL) under this is quiet.
    threshold_percent: float = 5.0
    #: A quiet run at least this long is idle.
    window_s: float = 1800.0
    #: The sampling period: how long one sample speaks for when no later sample comes sooner.
    period_s: float = 60.0
    #: A silence longer than this between two samples is a gap: no data, and the end of a quiet run.
    max_gap_s: float = 180.0

    def __post_init__(self) -> None:
        for name in ("threshold_percent", "window_s", "period_s", "max_gap_s"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of at least 0, got {value}")
        if self.period_s <= 0 or self.max_gap_s < self.period_s:
            raise ValueError("period_s must be positive and max_gap_s at least period_s")

    def quiet(self, utilisation_percent: float) -> bool:
        """Whether one sample is quiet (NaN, an unreadable sample, is not)."""
        return utilisation_percent < self.threshold_percent


@dataclass(frozen=True, slots=True)
class IdleSpan:
    """A stretch of time `[start_s, end_s)` in which a device was allocated and idle."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(slots=True)
class IdleDetector:
    """The rule applied to one device's samples as they come (in time order).

    `observe` answers whether the device is idle *now* (its quiet run, this sample included,
    has lasted the window); `spans` are the idle spans closed so far and `finish` closes the
    last one. Samples out of order are refused: a scrape that goes back in time is a bug.
    """

    rule: IdleRule
    spans: list[IdleSpan] = field(default_factory=list)
    _run_start_s: float | None = None
    _last_s: float | None = None
    _last_quiet: bool = False

    def observe(self, t_s: float, utilisation_percent: float) -> bool:
        """Takes one sample; whether the device is idle now."""
        if self._last_s is not None:
            if t_s <= self._last_s:
                raise ValueError(f"sample at {t_s} s is not after the previous one at {self._last_s} s")
            if t_s - self._last_s > self.rule.max_gap_s:
                self._close(self._last_s + self.rule.period_s)
        quiet = self.rule.quiet(utilisation_percent)
        if quiet and self._run_start_s is None:
            self._run_start_s = t_s
        elif not quiet:
            self._close(t_s)
        self._last_s, self._last_quiet = t_s, quiet
        return quiet and self._run_length_s(t_s + self.rule.period_s) >= self.rule.window_s

    def finish(self, end_s: float | None = None) -> list[IdleSpan]:
        """Closes the series at `end_s` (by default where its last sample stops speaking); the spans."""
        if self._last_s is not None and self._last_quiet:
            stop = self._last_s + self.rule.period_s
            self._close(stop if end_s is None else min(stop, max(end_s, self._last_s)))
        return self.spans

    @property
    def idle_s(self) -> float:
        """Seconds of the spans closed so far."""
        return sum(span.duration_s for span in self.spans)

    def _run_length_s(self, end_s: float) -> float:
        return 0.0 if self._run_start_s is None else end_s - self._run_start_s

    def _close(self, end_s: float) -> None:
        """Ends the quiet run at `end_s`, keeping it as a span when it lasted the window."""
        if self._run_start_s is not None and self._run_length_s(end_s) >= self.rule.window_s:
            self.spans.append(IdleSpan(self._run_start_s, end_s))
        self._run_start_s = None


def idle_spans(
    samples: Iterable[tuple[float, float]], rule: IdleRule, end_s: float | None = None
) -> list[IdleSpan]:
    """The idle spans of one device's series `(t_s, utilisation_percent)`, in time order;
    `end_s` cuts the last sample short (the allocation ended)."""
    detector = IdleDetector(rule)
    for t_s, utilisation_percent in samples:
        detector.observe(t_s, utilisation_percent)
    return detector.finish(end_s)


__all__ = ["IdleDetector", "IdleRule", "IdleSpan", "idle_spans"]
