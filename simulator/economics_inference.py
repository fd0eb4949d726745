"""The `inference` part of the economics section: cost per million tokens and per thousand requests.

The place where inference services' unit costs go (issue 17): the "inference" work reads
request traces into services whose replicas serve tokens at a stated per-GPU-model rate, and
fills this function in (or replaces this module's body with a call to its own). Until then a
run knows no tokens or requests, and the section is None.
"""

from __future__ import annotations

from typing import Any

from simulator.economics_idle import History
from simulator.engine import SimResult


def section(result: SimResult, history: History) -> dict[str, Any] | None:
    """Per service (or per GPU model): usd_per_million_tokens, usd_per_thousand_requests and the
    throughput assumption behind them; None when the run has no token counts (today: always).

    `result` is the finished replay (its ledger prices every service's part-ms exactly);
    `history.jobs()` gives its jobs.csv rows (text values, as written; services have kind
    `service`), `history.events()` and `history.timeline()` the rest, each read afresh."""
    del result, history  # nothing to compute until services carry tokens
    return None


__all__ = ["section"]
