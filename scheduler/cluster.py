"""Cluster files: one `[[pool]]` table per pool, read into Pools and an initial snapshot.

```toml
[[pool]]
name = "h100-spot"
gpu = "H100-80GB"
gpus_per_node = 8
capacity = "spot"              # on-demand | spot | reserved
price = "aws:p5.48xlarge:spot" # or usd_per_node_hour = 24.0 (or usd_per_gpu_hour = 3.0)
nodes = 4                      # initial; min_nodes / max_nodes make it elastic
interruptions_per_node_hour = 0.05
notice_s = 120
mig = "off"                    # off | dynamic | a fixed layout such as "3g.40gb@0,3g.40gb@4"
sharing = false                # GPUs may be shared by milli-GPU/memory requests
```
Every mistake stops the load with one line naming the file, the line and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from scheduler import mig
from scheduler.catalog import CAPACITY_TYPES, Catalog, MigGeometry, default_catalog
from scheduler.errors import InputError
from scheduler.model import Capacity, ClusterSnapshot, MigMode, Pool, empty_node
from scheduler.tomlfile import TomlDocument

DEFAULT_NOTICE_S = 120.0
#: Limits that catch typos before they cost memory or overflow: the simulator makes every node
#: of a pool up front (100,000 is past the largest clusters run today), no machine has 1,024
#: GPUs, and no price, delay or rate is near 10^12 (the millisecond clock overflows near 10^305).
MAX_NODES = 100_000
MAX_GPUS_PER_NODE = 1024
MAX_NUMBER = 1e12
_NUMBERS = ("provision_delay_s", "idle_release_s", "interruptions_per_node_hour", "notice_s")
_COUNTS = ("nodes", "min_nodes", "max_nodes")
_KEYS = {
    "name", "gpu", "gpus_per_node", "capacity", "price", "usd_per_node_hour", "usd_per_gpu_hour",
    "mig", "sharing", *_NUMBERS, *_COUNTS,
}


@dataclass(frozen=True, slots=True)
class Cluster:
    """The pools a cluster file describes, in file order."""

    source: str
    pools: Mapping[str, Pool]

    def snapshot(self) -> ClusterSnapshot:
        """The cluster at time zero: each pool's initial nodes, all GPUs free."""
        nodes = {}
        for pool in self.pools.values():
            width = max(3, len(str(max(pool.max_nodes, pool.nodes))))
            for index in range(pool.nodes):
                node = empty_node(pool, f"{pool.name}-{index:0{width}d}")
                nodes[node.name] = node
        return ClusterSnapshot(self.pools, MappingProxyType(nodes))


def load_cluster(path: str | Path, catalog: Catalog | None = None) -> Cluster:
    """Reads a cluster file; InputError naming file, line and key on any mistake."""
    return parse_cluster(TomlDocument.read(path), catalog or default_catalog())


def parse_cluster(document: TomlDocument, catalog: Catalog) -> Cluster:
    tables = document.data.get("pool")
    extra = [key for key in document.data if key != "pool"]
    if extra:
        document.fail(extra[0], "unknown top-level key; a cluster file holds [[pool]] tables")
    if not isinstance(tables, list) or not tables:
        raise InputError("no [[pool]] tables; a cluster needs at least one pool", source=document.source)
    pools: dict[str, Pool] = {}
    for index, table in enumerate(tables):
        pool = _pool(PoolTable(document, index, table), catalog)
        if pool.name in pools:
            PoolTable(document, index, table).fail("name", f"pool {pool.name!r} is defined twice")
        pools[pool.name] = pool
    return Cluster(document.source, MappingProxyType(pools))


@dataclass(frozen=True, slots=True)
class PoolTable:
    """One `[[pool]]` table of a file, its keys checked one by one (the extender's pools too).

    A mistake names the file, the line and `pool[index] (name).key`; `named=False` leaves the
    name out (`pool[index].key`, as the extender's configuration names its pools' keys).
    """

    document: TomlDocument
    index: int
    table: Mapping[str, Any]
    named: bool = True

    def fail(self, key: str, message: str) -> NoReturn:
        if self.named:
            self.document.fail_in("pool", self.index, self.table, key, message)
        self.document.fail(f"pool[{self.index}].{key}", message, key=key, table="pool", index=self.index)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or not value.strip():
            self.fail(key, "required text" if value is None else f"must be text, got {value!r}")
        return str(value).strip()

    def number(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            self.fail(key, f"must be a finite number >= 0, got {value!r}")
        if value > MAX_NUMBER:
            self.fail(key, f"must be at most {MAX_NUMBER:g}, got {value!r}")
        return float(value)

    def count(self, key: str, default: int, least: int = 0, most: int = MAX_NODES) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            self.fail(key, f"must be a whole number >= {least}, got {value!r}")
        if value > most:
            self.fail(key, f"must be at most {most:,}, got {value!r}")
        return int(value)


def _pool(entry: PoolTable, catalog: Catalog) -> Pool:
    for key in entry.table:
        if key not in _KEYS:
            entry.fail(key, f"unknown key; a pool has {', '.join(sorted(_KEYS))}")
    name = entry.text("name")
    try:
        gpu = catalog.resolve(entry.text("gpu"))
    except InputError as error:
        entry.fail("gpu", error.problem)
    gpus_per_node = entry.count("gpus_per_node", 0, least=1, most=MAX_GPUS_PER_NODE)
    usd, source, price_capacity, cloud = pool_price(entry, catalog, gpu.name, gpus_per_node)
    capacity = pool_capacity(entry, price_capacity)
    nodes = entry.count("nodes", entry.count("min_nodes", 1))
    min_nodes = entry.count("min_nodes", nodes)
    max_nodes = entry.count("max_nodes", max(nodes, min_nodes))
    if not min_nodes <= nodes <= max_nodes:
        entry.fail("nodes", f"need min_nodes <= nodes <= max_nodes, got {min_nodes} <= {nodes} <= {max_nodes}")
    assert capacity is not None  # pool_capacity's default is on-demand
    rate = spot_rate(entry, capacity)
    notice = entry.number("notice_s", catalog.spot_notice_s.get(cloud, DEFAULT_NOTICE_S))
    mig_mode, layout = _mig(entry, gpu.name, gpu.mig)
    sharing = entry.table.get("sharing", False)
    if not isinstance(sharing, bool):
        entry.fail("sharing", f"must be true or false, got {sharing!r}")
    if sharing and mig_mode is not MigMode.OFF:
        entry.fail("sharing", "GPUs in MIG mode are split into instances, not shared")
    return Pool(
        name=name,
        gpu=gpu,
        gpus_per_node=gpus_per_node,
        capacity=capacity,
        usd_per_node_hour=usd,
        price_source=source,
        nodes=nodes,
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        provision_delay_s=entry.number("provision_delay_s", 0.0),
        idle_release_s=entry.number("idle_release_s", 600.0),
        interruptions_per_node_hour=rate,
        notice_s=notice,
        mig_mode=mig_mode,
        mig_layout=layout,
        sharing=sharing,
    )


def pool_capacity(entry: PoolTable, price_capacity: str, default: str | None = "on-demand") -> Capacity | None:
    """The pool's `capacity`, else its price's, else `default` (None: the extender reads each
    node's from its labels); a capacity its price contradicts is a mistake."""
    if "capacity" not in entry.table and not price_capacity and default is None:
        return None
    capacity_text = entry.text("capacity", price_capacity or default)
    if capacity_text not in CAPACITY_TYPES:
        entry.fail("capacity", f"must be one of {', '.join(CAPACITY_TYPES)}, got {capacity_text!r}")
    if price_capacity and price_capacity != capacity_text:
        entry.fail("capacity", f"is {capacity_text} but the price is a {price_capacity} price")
    return Capacity(capacity_text)


def spot_rate(entry: PoolTable, capacity: Capacity | None) -> float:
    """The pool's `interruptions_per_node_hour` (0 when not given): only a spot pool has one."""
    rate = entry.number("interruptions_per_node_hour", 0.0)
    if rate and capacity is not Capacity.SPOT:
        said = f"this pool is {capacity}" if capacity is not None else 'set capacity = "spot"'
        entry.fail("interruptions_per_node_hour", f"only spot pools are interrupted; {said}")
    return rate


def pool_price(
    entry: PoolTable, catalog: Catalog, gpu: str | None, gpus_per_node: int | None
) -> tuple[float, str, str, str]:
    """(USD per node-hour, where it came from, the price's capacity type or "", its cloud or "").

    A catalog price must be for the pool's `gpu` and `gpus_per_node` (None: not known yet, as
    in the extender, whose nodes tell); without `gpus_per_node` there is no `usd_per_gpu_hour`."""
    keys = ("price", "usd_per_node_hour", "usd_per_gpu_hour")[: 3 if gpus_per_node is not None else 2]
    given = [key for key in keys if key in entry.table]
    if len(given) != 1:  # two given: the second is named, where the file says it; none: the first choice
        one = f'give one of price = "cloud:instance:capacity", {", ".join(keys[1:])}'
        entry.fail(given[1] if len(given) > 1 else "price", one + (f" (not {' and '.join(given)})" if given else ""))
    if given[0] == "usd_per_node_hour":
        return entry.number("usd_per_node_hour", 0.0), "cluster file", "", ""
    if given[0] == "usd_per_gpu_hour" and gpus_per_node is not None:
        return entry.number("usd_per_gpu_hour", 0.0) * gpus_per_node, "cluster file", "", ""
    try:
        quote = catalog.price(entry.text("price"))
    except InputError as error:
        entry.fail("price", error.problem)
    if gpu is not None and quote.gpu_model != gpu:
        entry.fail("price", f"{quote.key} is a {quote.gpu_model} price; the pool has {gpu}")
    if gpus_per_node is not None and quote.gpus != gpus_per_node:
        entry.fail("price", f"{quote.key} has {quote.gpus} GPUs per node; the pool says {gpus_per_node}")
    return quote.usd_per_hour, f"{quote.source} ({quote.as_of})", quote.capacity, quote.cloud


def _mig(entry: PoolTable, gpu: str, geometry: MigGeometry | None) -> tuple[MigMode, mig.Layout]:
    text = entry.text("mig", "off")
    if text == "off":
        return MigMode.OFF, ()
    if geometry is None:
        entry.fail("mig", f"{gpu} does not support MIG")
    if text == "dynamic":
        return MigMode.DYNAMIC, ()
    try:
        layout = mig.parse_layout(text)
        mig.check(geometry, layout)
    except mig.MigLayoutError as error:
        entry.fail("mig", f"not off, dynamic or a legal {gpu} layout: {error.problem}")
    if not layout:
        entry.fail("mig", "a fixed layout needs at least one instance")
    return MigMode.FIXED, layout
