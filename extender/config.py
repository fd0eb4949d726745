"""The extender's configuration file, checked key by key before anything starts.

```toml
address = "127.0.0.1"          # where the verbs are served; off loopback needs client_ca or token_file
port = 8888
prefix = "/extender"           # kube-scheduler's urlPrefix path
tls_cert = ""                  # both set: HTTPS with this certificate and key (reloaded when they change)
tls_key = ""
health_address = "0.0.0.0"     # a second, plain-HTTP listener with only GET /healthz, /readyz, /metrics
health_port = 8889             # (for the kubelet's probes on the pod IP); 0: none
client_ca = ""                 # PEM CA: the verbs need a client certificate it signed (mutual TLS; needs tls_cert)
client_name = ""               # and, when set, whose: the certificate's common name or a DNS name (a shared CA)
token_file = ""                # or a caller sends `Authorization: Bearer <the file's content>` (reloaded; TLS needed)
workers = 16                   # threads that answer verbs; connections themselves cost no thread
read_timeout_s = 5.0           # for a request (and a TLS handshake) once begun
idle_timeout_s = 30.0          # a kept-alive connection closed after this long without a request
max_body_bytes = 1048576       # a larger body is refused with 413 (full Nodes lists need more)
backlog = 128                  # connections the kernel queues before they are accepted
kubeconfig = ""                # empty: the pod's service account (in-cluster)
scheduler_name = "fleetsched"  # pods with this spec.schedulerName are planned
profile = "cost-cpsat"         # a bundled profile name or a .toml path (read from this file's folder)
governance = ""                # a governance file (TOML; scheduler.governance_file): budgets, quotas, approvals
                               # (read from this file's folder); the profile governed enforces them
planner_interval_s = 1.0
stale_after_s = 30.0           # /readyz turns 503 when the cluster view is older
leader_elect = true            # replicas share a coordination.k8s.io Lease; only its holder plans and binds
lease_name = "fleetsched-extender"
lease_namespace = ""           # empty: $POD_NAMESPACE, else the service account's, else kube-system
follow_lease = ""              # kube-scheduler's Lease (deploy/ names it): campaign while this pod holds it
lease_duration_s = 15.0        # as client-go's leaderelection: duration > renew deadline > retry period
renew_deadline_s = 10.0
retry_period_s = 2.0
usage_prometheus = ""          # a Prometheus scraping the GPU agents: /metrics then shows idle GPU-hours and $ per team
usage_window_s = 86400.0       # summed over this window (extender.usage)
usage_refresh_s = 300.0        # and asked again this often

[[pool]]                       # optional; nodes no pool matches are read from standard labels
name = "h100-spot"
match = { "karpenter.sh/capacity-type" = "spot", "nvidia.com/gpu.product" = "NVIDIA-H100-80GB-HBM3" }
usd_per_node_hour = 24.0       # or price = "aws:p5.48xlarge:spot" (a catalog key): one of the two
gpu = "H100-80GB"              # optional: else the node's labels tell
capacity = "spot"              # optional: on-demand | spot | reserved
sharing = false
interruptions_per_node_hour = 0.05  # spot pools only (capacity, or the price's)
notice_s = 120
```
A pool is checked as a cluster file's (`scheduler.cluster`), less what its nodes tell; the
files the keys name are loaded, and their mistakes located at the key, by `extender.main.prepare`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from extender import wire
from extender.nodes import PoolRule
from scheduler.catalog import CAPACITY_TYPES, Catalog
from scheduler.cluster import PoolTable, pool_capacity, pool_price, spot_rate
from scheduler.errors import InputError
from scheduler.model import Capacity
from scheduler.tomlfile import TomlDocument

_STRINGS = {"address": "127.0.0.1", "prefix": "/extender", "tls_cert": "", "tls_key": "", "kubeconfig": "",
            "scheduler_name": "fleetsched", "profile": "cost-cpsat", "governance": ""}  # fmt: skip
_NUMBERS = {"planner_interval_s": 1.0, "stale_after_s": 30.0}
# The server's keys (health listener, caller checks, limits): see `_server_keys`.
_SERVER_STRINGS = {"health_address": "0.0.0.0", "client_ca": "", "client_name": "", "token_file": ""}
_SERVER_SECONDS = {"read_timeout_s": 5.0, "idle_timeout_s": 30.0}
_SERVER_COUNTS = {"health_port": (8889, 0, 65535), "workers": (16, 1, 1024),
                  "max_body_bytes": (1024 * 1024, 1024, wire.MAX_BODY_BYTES), "backlog": (128, 1, 65535)}  # fmt: skip
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
    health_address: str = "0.0.0.0"
    health_port: int = 8889
    client_ca: str = ""
    client_name: str = ""
    token_file: str = ""
    workers: int = 16
    read_timeout_s: float = 5.0
    idle_timeout_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    backlog: int = 128
    # leader election (extender.lease)
    leader_elect: bool = True
    lease_name: str = "fleetsched-extender"
    lease_namespace: str = ""
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    follow_lease: str = ""  # kube-scheduler's Lease: campaign only while this pod holds it
    governance: str = ""  # a governance file; relative to the configuration's folder ("": no guardrails)
    # idle cost from the GPU agents' metrics (extender.usage); "" : none
    usage_prometheus: str = ""
    usage_window_s: float = 86_400.0
    usage_refresh_s: float = 300.0
    # where it was read from, for mistakes in the files its keys name (`key_error`)
    source: str = ""
    lines: Mapping[str, int] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()  # keys a command-line flag set instead


def load_config(path: str | Path, catalog: Catalog) -> ExtenderConfig:
    document = TomlDocument.read(path)
    data = document.data
    known = {*_STRINGS, *_NUMBERS, "port", "pool", *_SERVER_STRINGS, *_SERVER_SECONDS, *_SERVER_COUNTS,
             *_LEASE_STRINGS, *_LEASE_NUMBERS, "leader_elect", *_USAGE_NUMBERS, "usage_prometheus"}
    for key in data:
        if key not in known:
            document.fail(key, f"unknown key; the extender's configuration has {', '.join(sorted(known))}")
    values = {**_strings(document, _STRINGS), **_seconds(document, _NUMBERS)}
    port = data.get("port", 8888)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        document.fail("port", f"must be a port number 1..65535, got {port!r}")
    if not values["prefix"].startswith("/"):
        document.fail("prefix", f'must be a URL path starting with "/", e.g. "/extender"; got {values["prefix"]!r}')
    if not values["scheduler_name"]:
        document.fail("scheduler_name", "must name the scheduler whose pods are planned (spec.schedulerName)")
    if bool(values["tls_cert"]) != bool(values["tls_key"]):
        document.fail("tls_cert" if not values["tls_cert"] else "tls_key", "HTTPS needs both tls_cert and tls_key")
    values.update(_server_keys(document, values, port))
    raw_pools = data.get("pool", [])
    if not isinstance(raw_pools, list):
        document.fail("pool", "must be [[pool]] tables")
    pools = tuple(_pool(PoolTable(document, index, raw, named=False), catalog) for index, raw in enumerate(raw_pools))
    names = [pool.name for pool in pools]
    for index, name in enumerate(names):
        if names.index(name) != index:
            document.fail(f"pool[{index}].name", f"pool {name!r} is named twice", key="name", table="pool", index=index)
    _paths_from(Path(path).parent, values)
    lines = {key: line for key in _FILE_KEYS if key in data and (line := document.line_of(key)) is not None}
    return ExtenderConfig(port=port, pools=pools, **values, **_lease(document), **_usage(document),
                          source=str(path), lines=lines)


def _paths_from(folder: Path, values: dict[str, Any]) -> None:
    """Reads a path in the file from the file's folder, as an operator expects and deploy/README
    says (a profile's name, without .toml, is a bundled profile's; an absolute path stays)."""
    for key in ("governance", "kubeconfig", "tls_cert", "tls_key", "client_ca", "token_file"):
        if values[key]:
            values[key] = str(folder / Path(values[key]).expanduser())
    if values["profile"].endswith(".toml"):
        values["profile"] = str(folder / values["profile"])


#: The keys that name files (or a bundled profile) read when the extender starts: `key_error`.
_FILE_KEYS = ("kubeconfig", "profile", "governance", "tls_cert", "tls_key", "client_ca", "token_file")


def with_governance(config: ExtenderConfig, path: str) -> ExtenderConfig:
    """`config` with the governance file `--governance` names (a mistake in it is the flag's, not the key's)."""
    return replace(config, governance=path, flags=config.flags | {"governance"})


def key_error(config: ExtenderConfig, key: str, error: InputError) -> InputError:
    """`error`, a mistake in what the configuration's `key` names (a file that does not load, a
    profile not bundled), located at the key: `FILE:LINE: key: what the error says` (no line
    when the key is left at its default). Unchanged when a flag set the key."""
    if key in config.flags:
        return error
    inner = error if error.field != key else InputError(error.problem, source=error.source, line=error.line)
    return InputError(str(inner), source=config.source, line=config.lines.get(key), field=key)


def _strings(document: TomlDocument, defaults: Mapping[str, str]) -> dict[str, Any]:
    """Each of `defaults`' keys: the file's string, or the default."""
    found = {key: document.data.get(key, default) for key, default in defaults.items()}
    for key, value in found.items():
        if not isinstance(value, str):
            document.fail(key, f"must be a string, got {value!r}")
    return found


def _seconds(document: TomlDocument, defaults: Mapping[str, float]) -> dict[str, Any]:
    """Each of `defaults`' keys: the file's number of seconds (above 0), or the default."""
    found: dict[str, Any] = {}
    for key, default in defaults.items():
        number = document.data.get(key, default)
        if not isinstance(number, int | float) or isinstance(number, bool) or not 0 < number < math.inf:
            document.fail(key, f"must be a number of seconds above 0, got {number!r}")
        found[key] = float(number)
    return found


_USAGE_NUMBERS = {"usage_window_s": 86_400.0, "usage_refresh_s": 300.0}


def _usage(document: TomlDocument) -> dict[str, Any]:
    """Where the GPU agents' metrics are read (an http or https URL, or none) and how."""
    values = {**_strings(document, {"usage_prometheus": ""}), **_seconds(document, _USAGE_NUMBERS)}
    url = values["usage_prometheus"]
    if url and not (url.startswith(("http://", "https://")) and len(url.split("://", 1)[1].strip("/")) > 0):
        document.fail("usage_prometheus", f"must be an http:// or https:// URL of Prometheus, got {url!r}")
    return values


# The leader election keys, checked as client-go checks its LeaderElectionConfig.
_LEASE_STRINGS = {"lease_name": "fleetsched-extender", "lease_namespace": "", "follow_lease": ""}
_LEASE_NUMBERS = {"lease_duration_s": 15.0, "renew_deadline_s": 10.0, "retry_period_s": 2.0}


def _lease(document: TomlDocument) -> dict[str, Any]:
    values: dict[str, Any] = {"leader_elect": document.data.get("leader_elect", True)}
    if not isinstance(values["leader_elect"], bool):
        document.fail("leader_elect", f"must be true or false, got {values['leader_elect']!r}")
    values.update(_strings(document, _LEASE_STRINGS))
    if not values["lease_name"]:
        document.fail("lease_name", "must name the Lease")
    values.update(_seconds(document, _LEASE_NUMBERS))
    if values["renew_deadline_s"] >= values["lease_duration_s"]:
        document.fail("renew_deadline_s", f"must be below lease_duration_s ({values['lease_duration_s']:g})")
    if values["retry_period_s"] * 1.2 >= values["renew_deadline_s"]:
        document.fail("retry_period_s", f"must be below renew_deadline_s / 1.2 ({values['renew_deadline_s'] / 1.2:g})")
    return values


def is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "localhost")


def exposure_problem(address: str, client_ca: str, token_file: str) -> str:
    """Why serving the verbs on `address` with these credentials is unsafe; empty when it is not."""
    if is_loopback(address) or client_ca or token_file:
        return ""
    return (f"serving the verbs on {address!r}, off loopback, lets anyone who reaches it bind pods: "
            'set client_ca (mutual TLS) or token_file, or address = "127.0.0.1"')


def _server_keys(document: TomlDocument, values: Mapping[str, Any], port: int) -> dict[str, Any]:
    """The server's keys checked: who may call the verbs off loopback, the health listener, the limits."""
    found = {**_strings(document, _SERVER_STRINGS), **_seconds(document, _SERVER_SECONDS)}
    for key, (usual, low, high) in _SERVER_COUNTS.items():
        count = document.data.get(key, usual)
        if not isinstance(count, int) or isinstance(count, bool) or not low <= count <= high:
            document.fail(key, f"must be a whole number {low}..{high}, got {count!r}")
        found[key] = count
    if found["client_ca"] and not values["tls_cert"]:
        document.fail("client_ca", "mutual TLS needs the server's own tls_cert and tls_key")
    if found["client_name"] and not found["client_ca"]:
        document.fail("client_name", "names whose client certificate may call: it needs client_ca")
    if found["token_file"] and not values["tls_cert"] and not is_loopback(values["address"]):
        document.fail("token_file", "a bearer token off loopback would cross the network in clear: "
                                    "set tls_cert and tls_key")
    problem = exposure_problem(values["address"], found["client_ca"], found["token_file"])
    if problem:
        document.fail("address", problem)
    addresses = {found["health_address"], values["address"]}
    if found["health_port"] == port and (len(addresses) == 1 or "0.0.0.0" in addresses):
        document.fail("health_port", f"{port} is the verbs' port; give the health listener another (0: none)")
    return found


def _pool(entry: PoolTable, catalog: Catalog) -> PoolRule:
    """A `[[pool]]` table checked as a cluster file's pools are (`scheduler.cluster`), less what
    the nodes tell: their GPUs per node, and their GPU model and capacity when not given."""
    raw = entry.table
    if not isinstance(raw, dict):
        entry.fail("name", "must be a table")
    for key in raw:
        if key not in _POOL_KEYS:
            entry.fail(key, f"unknown key; a pool has {', '.join(sorted(_POOL_KEYS))}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        entry.fail("name", "every pool has a name")
    match = raw.get("match")
    if not isinstance(match, Mapping) or not match or not all(isinstance(v, str) for v in match.values()):
        entry.fail("match", 'must be a table of node labels and values, e.g. { "karpenter.sh/capacity-type" = "spot" }')
    gpu = raw.get("gpu")
    try:
        model = catalog.resolve(str(gpu)).name if gpu is not None else None
    except InputError as error:
        entry.fail("gpu", error.problem)
    if raw.get("capacity", "on-demand") not in CAPACITY_TYPES:
        entry.fail("capacity", f"must be one of {', '.join(CAPACITY_TYPES)}, got {raw['capacity']!r}")
    usd, _, price_capacity, _ = pool_price(entry, catalog, model, None)
    capacity = pool_capacity(entry, price_capacity, None)
    sharing = raw.get("sharing", False)
    if not isinstance(sharing, bool):
        entry.fail("sharing", f"must be true or false, got {sharing!r}")
    price = raw.get("price")
    return PoolRule(
        name=name, match={str(k): str(v) for k, v in match.items()},
        usd_per_node_hour=usd if price is None else None, price=str(price) if price is not None else None,
        gpu=str(gpu) if gpu is not None else None, sharing=sharing,
        capacity=Capacity(raw["capacity"]) if "capacity" in raw else None,  # else each node's labels tell
        interruptions_per_node_hour=spot_rate(entry, capacity), notice_s=entry.number("notice_s", 0.0),
    )
