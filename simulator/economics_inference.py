"""The `inference` part of the economics section: cost per million tokens and per thousand requests.

The place where inference services' unit costs go (issue 17): the "inference" work reads
request traces into services whose replicas serve tokens at a stated per-GPU-model rate, and
fills this function in (or replaces this module's body with a call to its own). Until then a
run knows no tokens or requests, and the section is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simulator.engine import SimResult


def section(result: SimResult, jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Per service (or per GPU model): usd_per_million_tokens, usd_per_thousand_requests and the
    throughput assumption behind them; None when the run has no token counts (today: always).

    `result` is the finished replay (its ledger prices every service's part-ms exactly);
    `jobs` are its jobs.csv rows (text values, as written), services having kind `service`."""
    del result, jobs  # nothing to compute until services carry tokens
    return None


__all__ = ["section"]
