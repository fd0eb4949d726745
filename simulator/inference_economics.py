"""Unit economics of inference services: cost per million tokens and per thousand requests.

A replica of an inference service is a job whose `served` names its service and the
requests and tokens it serves (`traces.azure_llm`). As each such job ends, the `Tally` hands
it here with its exact cost from the ledger (`InferenceTally.add`); the summary's `inference`
key (`inference_section`) divides the cost of a service's replicas by what they served:

    usd_per_million_tokens        = cost / (input + output tokens) x 10^6
    usd_per_million_output_tokens = cost / output tokens x 10^6
    usd_per_thousand_requests     = cost / requests x 10^3

per service, per GPU model (that of the pools its replicas ran in; a replica that never
started is counted under "(not run)" and serves nothing: what it would have served is
reported as `requests_unserved`), and over all services. The cost is what the replicas held
(attributed); idle capacity is the cluster's, reported in `cost_usd.idle`. For a cluster that
serves nothing else, `cluster_usd_per_million_tokens` is its whole bill, idle included, over
every token served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from simulator.runs import JobRun

if TYPE_CHECKING:
    from simulator.engine import SimResult

NOT_RUN = "(not run)"


@dataclass(slots=True)
class ServiceTotals:
    """One service's replicas in one set of pools: how many, their cost (ledger units), what they served."""

    replicas: int = 0
    cost_units: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    requests_unserved: int = 0

    def merge(self, other: ServiceTotals) -> None:
        self.replicas += other.replicas
        self.cost_units += other.cost_units
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.requests_unserved += other.requests_unserved


@dataclass(slots=True)
class InferenceTally:
    """Totals per (service, pools its replicas ran in), kept as replicas end."""

    totals: dict[tuple[str, tuple[str, ...]], ServiceTotals] = field(default_factory=dict)

    def add(self, run: JobRun, cost_units: int) -> None:
        """A replica job that ended (or never ran) and its exact cost in ledger units."""
        served = run.job.served
        if served is None:
            return
        key = (served.service, tuple(sorted(run.pools)))
        totals = self.totals.setdefault(key, ServiceTotals())
        totals.replicas += 1
        totals.cost_units += cost_units
        if run.first_start_ms is None:
            totals.requests_unserved += served.requests
            return
        totals.requests += served.requests
        totals.input_tokens += served.input_tokens
        totals.output_tokens += served.output_tokens


def _per(usd: Fraction, count: int, scale: int) -> float | None:
    return round(float(usd * scale / count), 4) if count else None


def figures(totals: ServiceTotals, denominator: int) -> dict[str, Any]:
    """One row of the section: counts, cost, and the three unit costs (None where nothing was served)."""
    usd = Fraction(totals.cost_units, denominator)
    tokens = totals.input_tokens + totals.output_tokens
    return {
        "replicas": totals.replicas,
        "requests": totals.requests,
        "requests_unserved": totals.requests_unserved,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "cost_usd": round(float(usd), 2),
        "usd_per_million_tokens": _per(usd, tokens, 10**6),
        "usd_per_million_output_tokens": _per(usd, totals.output_tokens, 10**6),
        "usd_per_thousand_requests": _per(usd, totals.requests, 10**3),
    }


def _grouped(items: Iterable[tuple[str, ServiceTotals]]) -> dict[str, ServiceTotals]:
    groups: dict[str, ServiceTotals] = {}
    for key, totals in items:
        groups.setdefault(key, ServiceTotals()).merge(totals)
    return groups


def gpu_model_of(pools: tuple[str, ...], gpu_of_pool: Mapping[str, str]) -> str:
    """The GPU model(s) of the pools a replica ran in ("A|B" when it moved between models)."""
    return "|".join(sorted({gpu_of_pool[pool] for pool in pools})) or NOT_RUN


def section(
    tally: InferenceTally, gpu_of_pool: Mapping[str, str], denominator: int, bill_usd: Fraction
) -> dict[str, Any]:
    """The `inference` document: by service, by GPU model, by both, and in total ({} without
    services); `bill_usd` is the cluster's whole bill."""
    if not tally.totals:
        return {}
    rows = [(service, gpu_model_of(pools, gpu_of_pool), totals) for (service, pools), totals in tally.totals.items()]
    by_service = _grouped((service, totals) for service, _, totals in rows)
    by_model = _grouped((model, totals) for _, model, totals in rows)
    by_both = _grouped((f"{service} on {model}", totals) for service, model, totals in rows)
    total = _grouped(("all", totals) for _, _, totals in rows)["all"]
    return {
        "by_service": {name: figures(totals, denominator) for name, totals in sorted(by_service.items())},
        "by_gpu_model": {name: figures(totals, denominator) for name, totals in sorted(by_model.items())},
        "by_service_and_gpu_model": {name: figures(totals, denominator) for name, totals in sorted(by_both.items())},
        "total": figures(total, denominator),
        "cluster_usd_per_million_tokens": _per(bill_usd, total.input_tokens + total.output_tokens, 10**6),
    }


def inference_section(result: SimResult) -> dict[str, Any]:
    """The summary's `inference` key for a replay that ran inference services; nothing otherwise."""
    world = result.world
    gpu_of_pool = {name: pool.gpu.name for name, pool in world.snapshot.pools.items()}
    ledger = world.ledger
    bill_usd = sum((ledger.usd(pool, part_ms) for pool, part_ms in ledger.bill.items()), Fraction(0))
    document = section(world.tally.inference, gpu_of_pool, ledger.denominator, bill_usd)
    return {"inference": document} if document else {}


__all__ = ["InferenceTally", "ServiceTotals", "figures", "inference_section", "section"]
