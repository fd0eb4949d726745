"""Allocated-but-idle GPU time per team from the GPU agents' metrics in Prometheus, priced at the extender's pools.

Each node's `fleetsched agent` counts, per device and pod, the seconds of closed idle spans
(`fleetsched_gpu_allocated_idle_seconds_total`, `scheduler.idleness`). With `usage_prometheus`
set, the extender asks Prometheus every `usage_refresh_s` for their increase over the last
`usage_window_s`, by team, node and MIG profile, prices each GPU-hour at the pool its node is in
(a MIG instance at its compute slices' part of the GPU, `scheduler.costing.gpu_worth`), and
serves the result on its own `/metrics`:

- `fleetsched_team_allocated_idle_gpu_hours{team,window}` and
  `fleetsched_team_allocated_idle_usd{team,window}`;
- `fleetsched_usage_unpriced_gpu_hours{window}`: idle time on nodes the extender does not know;
- `fleetsched_usage_source_up` 1/0 and `fleetsched_usage_age_seconds` since the last good answer.

A Prometheus that does not answer, or answers nonsense, costs one log line per change and the
source_up gauge; the last good figures are kept (their age says how old they are).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from scheduler.costing import gpu_worth
from scheduler.model import ClusterSnapshot, GpuRequest, RequestKind

log = logging.getLogger(__name__)

METRIC = "fleetsched_gpu_allocated_idle_seconds_total"
Gauges = Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]
Fetch = Callable[[str, float], bytes]  # (url, timeout_s) -> the response body
Samples = list[tuple[Mapping[str, str], float]]  # a Prometheus vector: labels and value


def http_get(url: str, timeout_s: float) -> bytes:
    """The body of a GET of `url` (urllib; raises OSError or ValueError on failure)."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


@dataclass(frozen=True, slots=True)
class UsageSettings:
    """Where the agents' metrics are and how far back to sum them."""

    prometheus_url: str
    window_s: float = 86_400.0
    refresh_s: float = 300.0
    timeout_s: float = 10.0

    def query_url(self) -> str:
        query = f"sum by (team, Hostname, GPU_I_PROFILE) (increase({METRIC}[{int(self.window_s)}s]))"
        return f"{self.prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"


@dataclass(frozen=True, slots=True)
class TeamIdle:
    """One team's allocated-but-idle GPU-hours over the window and their price."""

    gpu_hours: float
    usd: float


def vector(body: bytes) -> Samples:
    """The samples of a Prometheus instant-query answer; ValueError naming what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ValueError("not a Prometheus answer")
    if document.get("status") != "success":
        raise ValueError(f"status is {document.get('status')!r}: {document.get('error', '')}")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise ValueError("data.result is not a vector")
    samples: Samples = []
    for index, item in enumerate(data["result"]):
        try:
            labels, value = item["metric"], float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise ValueError(f"data.result[{index}] is not a sample") from None
        if not isinstance(labels, dict) or not math.isfinite(value) or value < 0:
            raise ValueError(f"data.result[{index}] is not a sample")
        samples.append(({str(key): str(text) for key, text in labels.items()}, value))
    return samples


def price(samples: Samples, snapshot: ClusterSnapshot) -> tuple[dict[str, TeamIdle], float]:
    """Idle seconds per (team, node, MIG profile) as GPU-hours and dollars per team at the node's
    pool; and the GPU-hours on nodes the snapshot does not hold (unpriced)."""
    hours: dict[str, Fraction] = {}
    usd: dict[str, Fraction] = {}
    unpriced = Fraction(0)
    for labels, seconds in samples:
        team = labels.get("team") or "(none)"
        node = snapshot.nodes.get(labels.get("Hostname", ""))
        if node is None:
            unpriced += Fraction(seconds) / 3600
            continue
        pool = snapshot.pools[node.pool]
        profile = labels.get("GPU_I_PROFILE", "")
        worth = gpu_worth(pool, GpuRequest(kind=RequestKind.MIG, mig_profile=profile)) if profile else Fraction(1)
        gpu_hours = Fraction(seconds) / 3600 * worth
        hours[team] = hours.get(team, Fraction(0)) + gpu_hours
        usd[team] = usd.get(team, Fraction(0)) + gpu_hours * Fraction(pool.usd_per_gpu_hour)
    teams = {team: TeamIdle(round(float(hours[team]), 6), round(float(usd[team]), 4)) for team in sorted(hours)}
    return teams, round(float(unpriced), 6)


@dataclass
class IdleCost:
    """The figures the extender serves, refreshed from Prometheus (`refresh`), read by `gauges`."""

    settings: UsageSettings
    fetch: Fetch = http_get
    clock: Callable[[], float] = time.monotonic
    teams: dict[str, TeamIdle] = field(default_factory=dict)
    unpriced_gpu_hours: float = 0.0
    up: bool = False
    refreshed_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _problem: str | None = None  # the last problem logged (None: answering, or not asked yet)

    def refresh(self, snapshot: ClusterSnapshot) -> bool:
        """Asks Prometheus once and prices the answer on `snapshot`; whether it answered."""
        try:
            teams, unpriced = price(vector(self.fetch(self.settings.query_url(), self.settings.timeout_s)), snapshot)
        except (OSError, ValueError) as error:
            self._report(f"{type(error).__name__}: {error}")
            with self._lock:
                self.up = False
            return False
        self._report(None)
        with self._lock:
            self.teams, self.unpriced_gpu_hours, self.up, self.refreshed_at = teams, unpriced, True, self.clock()
        return True

    def _report(self, problem: str | None) -> None:
        """One log line when the source goes away or comes back, not one per refresh."""
        if problem == self._problem:
            return
        if problem is None:
            log.info("Prometheus answers the idle-time query again (%s)", self.settings.prometheus_url)
        else:
            log.warning("Prometheus did not answer the idle-time query (%s): %s", self.settings.prometheus_url, problem)
        self._problem = problem

    def gauges(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        window = (("window", f"{int(self.settings.window_s)}s"),)
        with self._lock:
            teams = self.teams.items()
            found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
                "fleetsched_team_allocated_idle_gpu_hours": {(("team", team), *window): idle.gpu_hours
                                                             for team, idle in teams},
                "fleetsched_team_allocated_idle_usd": {(("team", team), *window): idle.usd for team, idle in teams},
                "fleetsched_usage_unpriced_gpu_hours": {window: self.unpriced_gpu_hours},
                "fleetsched_usage_source_up": {(): 1.0 if self.up else 0.0},
            }  # fmt: skip
            if self.refreshed_at is not None:
                found["fleetsched_usage_age_seconds"] = {(): round(self.clock() - self.refreshed_at, 3)}
        return found

    def run(self, snapshot_of: Callable[[], ClusterSnapshot | None], stop: threading.Event) -> None:
        """Refreshes every `refresh_s` until `stop` is set (a thread's body)."""
        while not stop.is_set():
            snapshot = snapshot_of()
            if snapshot is not None:
                self.refresh(snapshot)
            stop.wait(self.settings.refresh_s)


def with_usage(more: Callable[[Any], Gauges] | None, usage: IdleCost) -> Callable[[Any], Gauges]:
    """The extender's extra gauges (the guardrails', if any) and the idle cost's together."""

    def gauges(plan: Any) -> Gauges:
        return {**(more(plan) if more is not None else {}), **usage.gauges()}

    return gauges


__all__ = ["METRIC", "IdleCost", "TeamIdle", "UsageSettings", "http_get", "price", "vector", "with_usage"]
