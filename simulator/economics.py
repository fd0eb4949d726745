"""Unit economics and showback of a finished replay: the `economics` section of summary.json.

What a run's money bought and where the rest went, from the ledger (`simulator.ledger`: exact
part-milliseconds per pool, attributed + idle = bill) and the run's history
(`simulator.economics_idle.History`):

- `unit`: dollars per completed job, per GPU-hour billed and per GPU-hour delivered (held by
  jobs, less the work thrown away);
- `kinds`: training (batch jobs) against inference (services): jobs and their cost;
- `training_by_model`: batch jobs per `model` label, their cost and cost per completed job;
- `showback`: per team, project and model label (jobs, completed, exact cost) and per day of
  the simulated clock (day 0 starts at t = 0): the bill, attributed and idle, exactly from the
  timeline. `kinds` and `training_by_model` sum the jobs.csv costs (each rounded to the cent);
- `spot`: the same placements at on-demand prices (`on_demand_price`), the saving, and the
  saving net of the work spot pools threw away (priced on-demand: it would not have been
  redone there);
- `idle_by_cause_usd`: the idle bill split by cause (`simulator.economics_idle`), rounded so the
  causes add up to the summary's idle cents exactly;
- `inference`: cost per million tokens and per thousand requests of inference services,
  supplied by `simulator.economics_inference.section` (None until it knows tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from scheduler.catalog import default_catalog
from scheduler.model import Capacity, Pool
from simulator import economics_inference
from simulator.economics_idle import CAUSES, history_of, idle_part_ms
from simulator.engine import SimResult
from simulator.ledger import MS_PER_HOUR, PARTS, Ledger, micro_usd
from simulator.recording import TimelineRow
from simulator.tally import cents

DAY_MS = 86_400_000


def section(result: SimResult) -> dict[str, Any]:
    """The `economics` section of summary.json (see the module's docstring)."""
    world = result.world
    ledger, pools = world.ledger, world.snapshot.pools
    history = history_of(world.sink)
    total = _sum(ledger, ledger.bill)
    completed = world.tally.outcomes.get("completed", 0)
    part_hours = PARTS * MS_PER_HOUR
    billed_h = sum(ledger.bill.values()) / part_hours
    delivered_h = (sum(ledger.attributed().values()) - sum(ledger.lost_by_pool.values())) / part_hours
    document: dict[str, Any] = {
        "unit": {
            "usd_per_completed_job": cents(total / completed) if completed else None,
            "usd_per_gpu_hour_billed": round(float(total) / billed_h, 4) if billed_h > 0 else None,
            "usd_per_gpu_hour_delivered": round(float(total) / delivered_h, 4) if delivered_h > 0 else None,
            "gpu_hours_delivered": round(delivered_h, 3),
        },
        "spot": spot_counterfactual(ledger, pools),
    }
    if history is None:  # a sink that kept nothing this module can read
        return {**document, "idle_by_cause_usd": None, "inference": None}
    groups = _groups(history.jobs())
    document["kinds"] = {kind: _figures(groups["kind"].get(name, _EMPTY))
                         for kind, name in (("training", "batch"), ("inference", "service"))}  # fmt: skip
    document["training_by_model"] = _table(groups["training_model"])
    showback = {label: _table(groups[label]) for label in ("team", "project", "model")}
    for label, table in showback.items():  # the tally's exact totals, rather than sums of rounded cents
        exact = world.tally.by_label[label]
        for key, group in table.items():
            usd = Fraction(exact.get(key, 0), ledger.denominator)
            group["usd"] = cents(usd)
            group["usd_per_completed_job"] = cents(usd / group["completed"]) if group["completed"] else None
    document["showback"] = {**showback, "day": by_day(history.timeline(), ledger, pools, result.end_ms)}
    causes = idle_part_ms(history, pools, result.end_ms, ledger.idle)
    document["idle_by_cause_usd"] = idle_by_cause(causes, ledger)
    document["idle_by_cause_gpu_hours"] = {
        cause: round(sum(by_cause[cause] for by_cause in causes.values()) / part_hours, 3) for cause in CAUSES
    }
    document["inference"] = economics_inference.section(result, history)
    return document


def _sum(ledger: Ledger, accounts: Mapping[str, int]) -> Fraction:
    return sum((ledger.usd(pool, part_ms) for pool, part_ms in accounts.items()), Fraction(0))


_EMPTY = (0, 0, 0)  # jobs, completed, cents


def _groups(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, tuple[int, int, int]]]:
    """In one pass over jobs.csv's rows: jobs, completed jobs and their cost in whole cents (as
    written, summed exactly) per kind, per team, project and model label (an empty label is
    `(none)`), and per model label of batch jobs (`training_model`)."""
    groups: dict[str, dict[str, tuple[int, int, int]]] = {name: {} for name in ("kind", "team", "project", "model",
                                                                             "training_model")}  # fmt: skip
    for row in rows:
        done, cents_of_job = int(row["outcome"] == "completed"), round(float(row["cost_usd"]) * 100)
        keys = [("kind", row["kind"]), *((label, row[label] or "(none)") for label in ("team", "project", "model"))]
        if row["kind"] == "batch":
            keys.append(("training_model", row["model"] or "(none)"))
        for name, key in keys:
            jobs, completed, total = groups[name].get(key, _EMPTY)
            groups[name][key] = (jobs + 1, completed + done, total + cents_of_job)
    return groups


def _figures(group: tuple[int, int, int]) -> dict[str, Any]:
    jobs, completed, total_cents = group
    usd = Fraction(total_cents, 100)
    return {"jobs": jobs, "completed": completed, "usd": cents(usd),
            "usd_per_completed_job": cents(usd / completed) if completed else None}  # fmt: skip


def _table(groups: Mapping[str, tuple[int, int, int]]) -> dict[str, dict[str, Any]]:
    return {key: _figures(groups[key]) for key in sorted(groups)}


def by_day(timeline: Iterable[TimelineRow], ledger: Ledger, pools: Mapping[str, Pool], end_ms: int) -> dict[str, Any]:
    """Per day of the simulated clock: the bill, what jobs held and what stood idle, in dollars,
    integrated exactly from the timeline (nodes and busy parts per pool between changes)."""
    bill: dict[int, dict[str, int]] = {}
    busy: dict[int, dict[str, int]] = {}
    state: dict[str, tuple[int, int]] = {}
    since = 0

    def accrue(until: int) -> None:
        start = since
        while start < until:
            day = start // DAY_MS
            stop = min(until, (day + 1) * DAY_MS)
            for pool, (nodes, parts) in state.items():
                capacity = pools[pool].gpus_per_node * PARTS
                day_bill, day_busy = bill.setdefault(day, {}), busy.setdefault(day, {})
                day_bill[pool] = day_bill.get(pool, 0) + nodes * capacity * (stop - start)
                day_busy[pool] = day_busy.get(pool, 0) + parts * (stop - start)
            start = stop

    for t_ms, pool, nodes, parts, _ in timeline:
        if t_ms > since:
            accrue(t_ms)
            since = t_ms
        state[pool] = (nodes, parts)
    accrue(end_ms)
    days = {}
    for day in sorted(bill):
        total, held = _sum(ledger, bill[day]), _sum(ledger, busy[day])
        days[f"day-{day}"] = {"total": cents(total), "attributed": cents(held), "idle": cents(total - held)}
    return days


def idle_by_cause(causes: Mapping[str, Mapping[str, int]], ledger: Ledger) -> dict[str, float]:
    """The idle dollars per cause, in cents that add up to the idle total's cents exactly
    (largest remainders get the odd cents)."""
    exact = {cause: sum((ledger.usd(pool, by_cause[cause]) for pool, by_cause in causes.items()), Fraction(0))
             for cause in CAUSES}  # fmt: skip
    total_cents = round(sum(exact.values(), Fraction(0)) * 100)
    floors = {cause: int(value * 100) for cause, value in exact.items()}  # values are never negative
    short = total_cents - sum(floors.values())
    by_remainder = sorted(CAUSES, key=lambda cause: (-(exact[cause] * 100 - floors[cause]), CAUSES.index(cause)))
    for cause in by_remainder[:short]:
        floors[cause] += 1
    return {cause: floors[cause] / 100 for cause in CAUSES}


def on_demand_price(pool: Pool, pools: Mapping[str, Pool]) -> tuple[Fraction, str] | None:
    """The on-demand price per GPU-hour a spot pool's placements are repriced at, and where it
    comes from: the cheapest on-demand pool of the same GPU model in the cluster; else the
    catalog's on-demand price of the instance whose spot price the pool pays; else the catalog's
    cheapest on-demand price for the GPU model; None when there is none."""
    same = [other for other in pools.values()
            if other.capacity is Capacity.ON_DEMAND and other.gpu.name == pool.gpu.name]  # fmt: skip
    if same:
        cheapest = min(same, key=lambda other: (Fraction(micro_usd(other.usd_per_node_hour), other.gpus_per_node),
                                                other.name))  # fmt: skip
        return Fraction(micro_usd(cheapest.usd_per_node_hour), cheapest.gpus_per_node * 10**6), f"pool {cheapest.name}"
    quotes = default_catalog().prices
    for quote in quotes.values():  # the instance this pool's spot price is quoted for
        if (quote.capacity == "spot" and quote.gpu_model == pool.gpu.name and quote.gpus == pool.gpus_per_node
                and micro_usd(quote.usd_per_hour) == micro_usd(pool.usd_per_node_hour)):  # fmt: skip
            twin = quotes.get(f"{quote.cloud}:{quote.instance}:on-demand".lower())
            if twin is not None:
                return _quote_price(twin.usd_per_hour, twin.gpus), f"catalog {twin.key} ({twin.source}, {twin.as_of})"
    listed = [quote for quote in quotes.values() if quote.capacity == "on-demand" and quote.gpu_model == pool.gpu.name]
    if not listed:
        return None
    best = min(listed, key=lambda quote: (_quote_price(quote.usd_per_hour, quote.gpus), quote.key))
    return _quote_price(best.usd_per_hour, best.gpus), f"catalog {best.key} ({best.source}, {best.as_of}), cheapest"


def _quote_price(usd_per_hour: float, gpus: int) -> Fraction:
    return Fraction(micro_usd(usd_per_hour), gpus * 10**6)


def spot_counterfactual(ledger: Ledger, pools: Mapping[str, Pool]) -> dict[str, Any]:
    """Per spot pool and in all: what its node-hours cost, what they would have cost on-demand,
    the saving, the work it threw away (priced on-demand) and the saving net of it. A pool whose
    GPU model has no on-demand price has no saving: the totals leave it out and say so (`left_out`)."""
    per_pool: dict[str, Any] = {}
    totals = dict.fromkeys(("spot_usd", "on_demand_usd", "lost_work_usd"), Fraction(0))
    for name in sorted(pools):
        pool = pools[name]
        if pool.capacity is not Capacity.SPOT:
            continue
        billed, lost = ledger.bill.get(name, 0), ledger.lost_by_pool.get(name, 0)
        spot = ledger.usd(name, billed)
        price = on_demand_price(pool, pools)
        if price is None:
            per_pool[name] = {"spot_usd": cents(spot), "on_demand_price": None}
            continue
        usd_per_gpu_hour, source = price
        on_demand = usd_per_gpu_hour * Fraction(billed, PARTS * MS_PER_HOUR)
        lost_usd = usd_per_gpu_hour * Fraction(lost, PARTS * MS_PER_HOUR)
        per_pool[name] = {
            "on_demand_usd_per_gpu_hour": round(float(usd_per_gpu_hour), 6), "on_demand_price": source,
            **_saving(spot, on_demand, lost_usd),
        }  # fmt: skip
        for key, value in (("spot_usd", spot), ("on_demand_usd", on_demand), ("lost_work_usd", lost_usd)):
            totals[key] += value
    left_out = [name for name, figures in per_pool.items() if figures["on_demand_price"] is None]
    return {"pools": per_pool, **_saving(totals["spot_usd"], totals["on_demand_usd"], totals["lost_work_usd"]),
            **({"left_out": left_out} if left_out else {})}  # the totals are over the pools with a price  # fmt: skip


def _saving(spot: Fraction, on_demand: Fraction, lost: Fraction) -> dict[str, float]:
    return {"spot_usd": cents(spot), "on_demand_usd": cents(on_demand), "saving_usd": cents(on_demand - spot),
            "lost_work_usd": cents(lost), "net_saving_usd": cents(on_demand - spot - lost)}  # fmt: skip


__all__ = ["by_day", "idle_by_cause", "on_demand_price", "section", "spot_counterfactual"]
