"""The extender's configuration file, checked key by key before anything starts.

```toml
address = "0.0.0.0"            # where the HTTP server listens
port = 8888
prefix = "/extender"           # kube-scheduler's urlPrefix path
tls_cert = ""                  # both set: HTTPS with this certificate and key
tls_key = ""
kubeconfig = ""                # empty: the pod's service account (in-cluster)
scheduler_name = "fleetsched"  # pods with this spec.schedulerName are planned
profile = "cost-cpsat"         # a bundled profile name or a .toml path
planner_interval_s = 1.0
stale_after_s = 30.0           # /readyz turns 503 when the cluster view is older

[[pool]]                       # optional; nodes no pool matches are read from standard labels
name = "h100-spot"
match = { "karpenter.sh/capacity-type" = "spot", "nvidia.com/gpu.product" = "NVIDIA-H100-80GB-HBM3" }
usd_per_node_hour = 24.0       # or price = "aws:p5.48xlarge:spot" (a catalog key)
gpu = "H100-80GB"              # optional: else the node's labels tell
capacity = "spot"              # optional: on-demand | spot | reserved
sharing = false
interruptions_per_node_hour = 0.05
notice_s = 120
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extender.nodes import PoolRule
from scheduler.catalog import CAPACITY_TYPES, Catalog
from scheduler.errors import InputError
from scheduler.model import Capacity
from scheduler.tomlfile import TomlDocument

_STRINGS = {"address": "0.0.0.0", "prefix": "/extender", "tls_cert": "", "tls_key": "", "kubeconfig": "",
            "scheduler_name": "fleetsched", "profile": "cost-cpsat"}  # fmt: skip
_NUMBERS = {"planner_interval_s": 1.0, "stale_after_s": 30.0}
_POOL_KEYS = {"name", "match", "usd_per_node_hour", "price", "gpu", "capacity", "sharing",
              "interruptions_per_node_hour", "notice_s"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExtenderConfig:
    address: str
    port: int
    prefix: str
    tls_cert: str
    tls_key: str
    kubeconfig: str
    scheduler_name: str
    profile: str
    planner_interval_s: float
    stale_after_s: float
    pools: tuple[PoolRule, ...]
    # deploy: the keys agreed in issue 14 that deploy/ sets (the health listener of helper
    # "server", the election of helper "lease"); their owners' blocks replace this one.
    health_address: str = "0.0.0.0"
    health_port: int = 8889
    leader_elect: bool = True
    lease_name: str = "fleetsched-extender"
    lease_namespace: str = ""


def load_config(path: str | Path, catalog: Catalog) -> ExtenderConfig:
    document = TomlDocument.read(path)
    data = document.data
    known = {*_STRINGS, *_NUMBERS, "port", "pool", *_AGREED}
    for key in data:
        if key not in known:
            document.fail(key, f"unknown key; the extender's configuration has {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for key, default in _STRINGS.items():
        value = data.get(key, default)
        if not isinstance(value, str):
            document.fail(key, f"must be a string, got {value!r}")
        values[key] = value
    for key, seconds in _NUMBERS.items():
        number = data.get(key, seconds)
        if not isinstance(number, int | float) or isinstance(number, bool) or number <= 0:
            document.fail(key, f"must be a number of seconds above 0, got {number!r}")
        values[key] = float(number)
    port = data.get("port", 8888)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        document.fail("port", f"must be a port number 0..65535, got {port!r}")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        document.fail("tls_cert" if not values["tls_cert"] else "tls_key", "HTTPS needs both tls_cert and tls_key")
    raw_pools = data.get("pool", [])
    if not isinstance(raw_pools, list):
        document.fail("pool", "must be [[pool]] tables")
    pools = tuple(_pool(document, raw, index, catalog) for index, raw in enumerate(raw_pools))
    names = [pool.name for pool in pools]
    for index, name in enumerate(names):
        if names.index(name) != index:
            document.fail("name", f"pool {name!r} is named twice", table="pool", index=index)
    return ExtenderConfig(port=port, pools=pools, **values, **_agreed(document))


# deploy: issue 14's agreed keys, each with its default and what it must be.
_AGREED: dict[str, tuple[object, str]] = {
    "health_address": ("0.0.0.0", "a string"), "health_port": (8889, "a port number 0..65535 (0: none)"),
    "leader_elect": (True, "true or false"), "lease_name": ("fleetsched-extender", "a string"),
    "lease_namespace": ("", "a string"),
}


def _agreed(document: TomlDocument) -> dict[str, Any]:
    values = {}
    for key, (default, kind) in _AGREED.items():
        value = document.data.get(key, default)
        out_of_range = isinstance(value, int) and key == "health_port" and not 0 <= value <= 65535
        if type(value) is not type(default) or out_of_range:
            document.fail(key, f"must be {kind}, got {value!r}")
        values[key] = value
    return values


def _pool(document: TomlDocument, raw: object, index: int, catalog: Catalog) -> PoolRule:
    def fail(key: str, message: str) -> Any:
        document.fail(f"pool[{index}].{key}", message, key=key, table="pool", index=index)

    if not isinstance(raw, dict):
        return fail("name", "must be a table")  # type: ignore[no-any-return]
    for key in raw:
        if key not in _POOL_KEYS:
            fail(key, f"unknown key; a pool has {', '.join(sorted(_POOL_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        fail("name", "every pool has a name")
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match or not all(isinstance(v, str) for v in match.values()):
        fail("match", 'must be a table of node labels and values, e.g. { "karpenter.sh/capacity-type" = "spot" }')
    usd = _pool_price(raw, catalog, fail)
    price, gpu = raw.get("price"), raw.get("gpu")
    capacity = raw.get("capacity")
    if capacity is not None and capacity not in CAPACITY_TYPES:
        fail("capacity", f"must be one of {', '.join(CAPACITY_TYPES)}, got {capacity!r}")
    sharing = raw.get("sharing", False)
    if not isinstance(sharing, bool):
        fail("sharing", f"must be true or false, got {sharing!r}")
    numbers = _pool_interruptions(raw, fail)
    return PoolRule(
        name=str(name), match={str(k): str(v) for k, v in match.items()},  # type: ignore[union-attr]
        usd_per_node_hour=float(usd) if usd is not None else None, price=str(price) if price is not None else None,
        gpu=str(gpu) if gpu is not None else None, capacity=Capacity(capacity) if capacity else None,
        sharing=sharing, **numbers,
    )


def _pool_price(raw: Mapping[str, Any], catalog: Catalog, fail: Callable[[str, str], Any]) -> float | None:
    """A pool's price keys checked (`price` and `gpu` must be catalog keys); returns `usd_per_node_hour`."""
    usd = raw.get("usd_per_node_hour")
    if usd is not None and (not isinstance(usd, int | float) or isinstance(usd, bool) or usd < 0):
        fail("usd_per_node_hour", f"must be a number >= 0, got {usd!r}")
    for key, look_up in (("price", catalog.price), ("gpu", catalog.resolve)):
        if raw.get(key) is not None:
            try:
                look_up(str(raw[key]))
            except InputError as error:
                fail(key, str(error))
    return usd


def _pool_interruptions(raw: Mapping[str, Any], fail: Callable[[str, str], Any]) -> dict[str, float]:
    """A pool's take-back rate and notice, checked: numbers >= 0, 0 when not given."""
    numbers = {}
    for key in ("interruptions_per_node_hour", "notice_s"):
        value = raw.get(key, 0.0)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            fail(key, f"must be a number >= 0, got {value!r}")
        numbers[key] = float(value)
    return numbers
