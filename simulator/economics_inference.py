"""The `inference` part of the economics section: cost per million tokens and per thousand requests.

The figures are the summary's own `inference` key (`simulator.inference_economics`: by service,
by GPU model, by both), whose `total` the economics section repeats here so that one place
holds every unit cost; None when the run served no tokens (no inference service replicas).
"""

from __future__ import annotations

from typing import Any

from simulator.economics_idle import History
from simulator.engine import SimResult
from simulator.inference_economics import inference_section


def section(result: SimResult, history: History) -> dict[str, Any] | None:
    """The inference services' totals (tokens, requests, cost, usd_per_million_tokens,
    usd_per_thousand_requests) and the whole cluster's cost per million tokens; None without
    services. `history` is unused: the tally kept every replica's tokens as it ended."""
    del history
    found = inference_section(result).get("inference")
    if found is None:
        return None
    return {**found["total"], "cluster_usd_per_million_tokens": found["cluster_usd_per_million_tokens"]}


__all__ = ["section"]
