"""Allocated and allocated-but-idle GPU-hours and dollars per team and pod, from the GPU agent's series.

Each series (`fleetsched.usage_input`) is one device while one pod held it (a series with no
`pod` label is a device nobody held: not allocated, skipped; one with a `pod` label and no
sample is empty: nothing to count, skipped and counted apart). The pod held the device from
its first sample to one sampling period after its last: that is its *allocated* time. The
idle rule (`scheduler.idleness`, applied by `simulator.measured.idle_time`, the very function
a replay uses) finds its allocated-but-idle spans; the time its samples speak for is its
*measured* time (a scrape gap longer than the rule's `max_gap_s` is not measured).

What a series is worth in GPUs: a whole GPU 1; a MIG instance (`GPU_I_PROFILE`) its compute
slices out of the GPU's, as the ledger counts it (`scheduler.costing.gpu_worth`); a device
several pods' series name (time-slicing, shares: the metrics do not say each one's part)
is split evenly among them. Prices are per GPU model (`modelName`, resolved by the catalog):
a cluster file's pools (usd per node-hour / GPUs per node) or `--price MODEL=USD` per
GPU-hour. Dollars are exact fractions until the report rounds them to cents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from fleetsched.usage_input import Series
from scheduler.catalog import Catalog, default_catalog
from scheduler.costing import gpu_worth
from scheduler.errors import InputError
from scheduler.idleness import IdleRule
from scheduler.model import GpuRequest, Pool, RequestKind
from simulator.ledger import MS_PER_HOUR, micro_usd
from simulator.measured import idle_time

NO_TEAM = "(none)"


def model_key(name: str, catalog: Catalog) -> str | None:
    """The catalog key of a GPU name as NVML writes it ("NVIDIA H100 80GB HBM3") or as the catalog does."""
    return catalog.key_of(name) or catalog.key_of("-".join(name.split()))


def cluster_prices(pools: Mapping[str, Pool]) -> tuple[dict[str, Fraction], dict[str, str]]:
    """Dollars per GPU-hour per GPU model, from a cluster's pools, and the models two pools price
    differently (the metrics do not say which pool a device was in) with why: such a model has
    no price until `--price` gives one, and only matters if the metrics name it."""
    prices: dict[str, tuple[Fraction, str]] = {}
    conflicts: dict[str, str] = {}
    for name, pool in sorted(pools.items()):
        model = pool.gpu.name
        price = Fraction(micro_usd(pool.usd_per_node_hour), pool.gpus_per_node * 10**6)
        known = prices.setdefault(model, (price, name))
        if known[0] != price and model not in conflicts:
            conflicts[model] = (f"pools {known[1]} and {name} price {model} differently (${float(known[0]):.4f} and "
                                f"${float(price):.4f} a GPU-hour); give --price {model}=USD_PER_GPU_HOUR")  # fmt: skip
    return {model: price for model, (price, _) in prices.items() if model not in conflicts}, conflicts


def parse_price(text: str, catalog: Catalog) -> tuple[str, Fraction]:
    """`MODEL=USD_PER_GPU_HOUR` as a catalog key and an exact price."""
    name, sign, value = text.partition("=")
    key = model_key(name.strip(), catalog)
    if not sign or key is None:
        raise InputError(f"must be MODEL=USD_PER_GPU_HOUR with a known GPU model, got {text!r}", field="--price")
    try:
        price = Fraction(value.strip())
    except (ValueError, ZeroDivisionError):
        raise InputError(f"not a price in dollars: {value!r}", field="--price") from None
    if price < 0:
        raise InputError(f"a price is at least 0, got {value!r}", field="--price")
    return key, price


@dataclass(slots=True)
class Totals:
    """Sums for a team, a pod or everything: exact GPU-milliseconds and dollars."""

    series: int = 0
    allocated_gpu_ms: Fraction = Fraction(0)
    measured_gpu_ms: Fraction = Fraction(0)
    idle_gpu_ms: Fraction = Fraction(0)
    allocated_usd: Fraction = Fraction(0)
    idle_usd: Fraction = Fraction(0)

    def add(self, other: Totals) -> None:
        self.series += other.series
        self.allocated_gpu_ms += other.allocated_gpu_ms
        self.measured_gpu_ms += other.measured_gpu_ms
        self.idle_gpu_ms += other.idle_gpu_ms
        self.allocated_usd += other.allocated_usd
        self.idle_usd += other.idle_usd

    def document(self) -> dict[str, Any]:
        return {
            "series": self.series,
            "gpu_hours": {"allocated": _hours(self.allocated_gpu_ms), "measured": _hours(self.measured_gpu_ms),
                          "idle": _hours(self.idle_gpu_ms)},
            "usd": {"allocated": round(float(self.allocated_usd), 2), "idle": round(float(self.idle_usd), 2)},
        }  # fmt: skip


def _hours(gpu_ms: Fraction) -> float:
    return round(float(gpu_ms / MS_PER_HOUR), 6)


@dataclass(frozen=True, slots=True)
class Report:
    """What `fleetsched usage` says: the rule, totals, per team and per pod (`namespace/pod`)."""

    rule: IdleRule
    total: Totals
    by_team: Mapping[str, Totals]
    by_pod: Mapping[str, tuple[str, Totals]]  # pod -> (team, totals)
    unallocated_series: int = 0
    prices: Mapping[str, Fraction] = field(default_factory=dict)
    empty_series: int = 0  # a pod's series without a sample: nothing to count

    def document(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "rule": {"threshold_percent": rule.threshold_percent, "window_s": rule.window_s,
                     "period_s": rule.period_s, "max_gap_s": rule.max_gap_s},
            "usd_per_gpu_hour": {model: float(price) for model, price in sorted(self.prices.items())},
            **self.total.document(),
            "unallocated_series": self.unallocated_series,
            "empty_series": self.empty_series,
            "by_team": {team: totals.document() for team, totals in sorted(self.by_team.items())},
            "by_pod": {pod: {"team": team, **totals.document()} for pod, (team, totals) in sorted(self.by_pod.items())},
        }  # fmt: skip


def _worth(series: Series, key: str, catalog: Catalog, sharers: int) -> Fraction:
    """GPUs' worth of the device a series is about, split among the pods that share it."""
    profile = series.label("GPU_I_PROFILE")
    if not profile:
        return Fraction(1, sharers)
    spec = catalog.models[key]
    if spec.mig is None or profile not in spec.mig.profiles:
        raise InputError(f"{spec.name} has no MIG profile {profile!r}", source=series.source, line=series.line,
                         field=series.field("GPU_I_PROFILE"))  # fmt: skip
    pool = Pool(name=key, gpu=spec, gpus_per_node=1)
    return gpu_worth(pool, GpuRequest(kind=RequestKind.MIG, mig_profile=profile)) / sharers


def _device(series: Series) -> tuple[str, ...]:
    """What tells devices apart: the host, the GPU and the MIG instance."""
    return tuple(series.label(name) for name in ("Hostname", "UUID", "gpu", "GPU_I_ID"))


def usage(
    series: Sequence[Series],
    prices: Mapping[str, Fraction],
    rule: IdleRule,
    catalog: Catalog | None = None,
    unpriced: Mapping[str, str] | None = None,
) -> Report:
    """The report of `series`, priced per GPU model by `prices` (catalog keys), judged by `rule`;
    `unpriced` says why a model has no price (pools that disagree), for the first series of it."""
    catalog = catalog or default_catalog()
    held = [each for each in series if each.label("pod") and each.samples]
    empty = sum(1 for each in series if each.label("pod") and not each.samples)
    pods_on: dict[tuple[str, ...], set[str]] = {}
    for each in held:
        pods_on.setdefault(_device(each), set()).add(_pod(each))
    total = Totals()
    by_team: dict[str, Totals] = {}
    by_pod: dict[str, tuple[str, Totals]] = {}
    for each in held:
        key = model_key(each.label("modelName"), catalog)
        if key is not None and key not in prices and unpriced and key in unpriced:
            raise InputError(f"{unpriced[key]} (the metrics name it: {each.source}:{each.line})"
                             if each.line else f"{unpriced[key]} (the metrics name it)", field="--cluster")  # fmt: skip
        if key is None or key not in prices:
            raise InputError(_unpriced(each, key), source=each.source, line=each.line, field=each.field("modelName"))
        totals = _totals(each, _worth(each, key, catalog, len(pods_on[_device(each)])), prices[key], rule)
        team = each.label("team") or NO_TEAM
        total.add(totals)
        by_team.setdefault(team, Totals()).add(totals)
        by_pod.setdefault(_pod(each), (each.label("team"), Totals()))[1].add(totals)
    return Report(rule, total, by_team, by_pod, len(series) - len(held) - empty, dict(prices), empty)


def _unpriced(series: Series, key: str | None) -> str:
    name = series.label("modelName")
    if not name:
        return "no modelName label: the series' GPU model, and so its price, is unknown"
    what = "unknown GPU model" if key is None else f"no price for {key}"
    return f"{what} {name!r}: give --price MODEL=USD or a --cluster with a pool of it"


def _pod(series: Series) -> str:
    namespace = series.label("namespace")
    return f"{namespace}/{series.label('pod')}" if namespace else series.label("pod")


def _totals(series: Series, gpus: Fraction, usd_per_gpu_hour: Fraction, rule: IdleRule) -> Totals:
    """One series: allocated from its first sample to a period after its last, judged from its start."""
    first_s = series.samples[0][0]
    relative = [(t_s - first_s, percent) for t_s, percent in series.samples]
    time = idle_time(relative, rule, relative[-1][0] + rule.period_s)
    usd_per_gpu_ms = usd_per_gpu_hour / MS_PER_HOUR
    return Totals(
        series=1,
        allocated_gpu_ms=gpus * time.allocated_ms,
        measured_gpu_ms=gpus * time.measured_ms,
        idle_gpu_ms=gpus * time.idle_ms,
        allocated_usd=usd_per_gpu_ms * gpus * time.allocated_ms,
        idle_usd=usd_per_gpu_ms * gpus * time.idle_ms,
    )


__all__ = ["Report", "Totals", "cluster_prices", "model_key", "parse_price", "usage"]
