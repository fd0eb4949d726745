"""Kubernetes nodes into pools and GPU nodes: configured label matches first, standard labels else.

An operator names pools in the extender's configuration, each with the labels its nodes carry
and a price. A node no pool matches gets an automatic pool from the labels every GPU cluster
has (shared/research/kubernetes.md, section 3):

- GPU model: `nvidia.com/gpu.product` (GPU Feature Discovery), `cloud.google.com/gke-accelerator`,
  `karpenter.k8s.aws/instance-gpu-name`; resolved through the catalog.
- Capacity: `karpenter.sh/capacity-type` (spot, on-demand, reserved),
  `eks.amazonaws.com/capacityType` (SPOT, ON_DEMAND), `cloud.google.com/gke-spot` and
  `cloud.google.com/gke-preemptible` ("true"), `kubernetes.azure.com/scalesetpriority` (spot).
- Price: the catalog's quote for `cloud:instance:capacity`, the instance from
  `node.kubernetes.io/instance-type`, the cloud from cloud-specific labels or else from the one
  cloud whose catalog has that instance; a node without a quote is priced at zero and its pool
  says so in `price_source`.
- GPUs: `status.allocatable["nvidia.com/gpu"]`, or MIG instances `nvidia.com/mig-<profile>`
  (mixed strategy) spread over `nvidia.com/gpu.count` physical GPUs as a fixed layout.
- Sharing: `nvidia.com/gpu.sharing-strategy` other than `none`, or the pool's `sharing`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extender.translate import GPU, MIG_PREFIX
from extender.wire import WireError, expect_object
from scheduler import mig
from scheduler.catalog import Catalog, GpuModelSpec
from scheduler.errors import InputError
from scheduler.model import Capacity, MigMode, Pool

log = logging.getLogger(__name__)

PRODUCT_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator", "karpenter.k8s.aws/instance-gpu-name")
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
GPU_COUNT = "nvidia.com/gpu.count"
SHARING = "nvidia.com/gpu.sharing-strategy"


@dataclass(frozen=True, slots=True)
class PoolRule:
    """A configured pool: the labels its nodes carry, what they are and what they cost."""

    name: str
    match: Mapping[str, str]
    usd_per_node_hour: float | None = None
    price: str | None = None  # a catalog key `cloud:instance:capacity`
    gpu: str | None = None
    capacity: Capacity | None = None
    sharing: bool = False
    notice_s: float = 0.0
    interruptions_per_node_hour: float = 0.0

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.match.items())


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the scheduler needs of a Kubernetes node: its pool, and whether it takes pods."""

    name: str
    pool: Pool
    ready: bool
    labels: Mapping[str, str] = field(default_factory=dict)


def read_node(node: Mapping[str, Any], rules: Sequence[PoolRule], catalog: Catalog) -> NodeInfo | None:
    """The node's pool and readiness; None for a node with no GPU (the extender ignores it)."""
    metadata = expect_object(node.get("metadata"), "Node.metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise WireError("Node.metadata.name", "must be a non-empty string")
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    status = expect_object(node.get("status") or {}, f"Node {name}.status")
    allocatable = expect_object(status.get("allocatable") or {}, f"Node {name}.status.allocatable")
    rule = next((rule for rule in rules if rule.matches(labels)), None)
    model = _model(labels, rule, catalog, name)
    if model is None:
        return None
    gpus = _whole(allocatable.get(GPU, 0))
    migs = {key[len(MIG_PREFIX):]: _whole(value) for key, value in allocatable.items() if key.startswith(MIG_PREFIX)}
    migs = {profile: count for profile, count in migs.items() if count > 0}
    if gpus == 0 and not migs:
        return None
    capacity = rule.capacity if rule is not None and rule.capacity is not None else _capacity(labels)
    usd, source = _price(labels, rule, capacity, catalog)
    layout: mig.Layout = ()
    if migs:
        gpus = _whole(labels.get(GPU_COUNT, 0)) or 1
        layout = _layout(model, migs, gpus, name)
    sharing = (rule.sharing if rule is not None else False) or labels.get(SHARING, "none") not in ("none", "")
    pool_name = rule.name if rule is not None else "/".join(
        ("auto", model.name, labels.get(INSTANCE_TYPE, f"{gpus}gpu"), capacity.value)
    )
    if layout:
        pool_name += "/mig:" + mig.format_layout(layout)
    pool = Pool(
        name=pool_name, gpu=model, gpus_per_node=gpus, capacity=capacity, usd_per_node_hour=usd, price_source=source,
        mig_mode=MigMode.FIXED if layout else MigMode.OFF, mig_layout=layout, sharing=sharing,
        notice_s=rule.notice_s if rule is not None else 0.0,
        interruptions_per_node_hour=rule.interruptions_per_node_hour if rule is not None else 0.0,
    )
    spec = expect_object(node.get("spec") or {}, f"Node {name}.spec")
    conditions = status.get("conditions") or []
    ready = not spec.get("unschedulable", False) and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )
    return NodeInfo(name, pool, ready, labels)


def _model(labels: Mapping[str, str], rule: PoolRule | None, catalog: Catalog, node: str) -> GpuModelSpec | None:
    names = [rule.gpu] if rule is not None and rule.gpu else [labels[key] for key in PRODUCT_LABELS if key in labels]
    for name in names:
        try:
            return catalog.resolve(name)
        except InputError:
            log.warning("node %s: GPU model %r is not in the catalog", node, name)
    return None


def _capacity(labels: Mapping[str, str]) -> Capacity:
    value = (
        labels.get("karpenter.sh/capacity-type")
        or labels.get("eks.amazonaws.com/capacityType", "").lower().replace("_", "-")
        or ("spot" if labels.get("cloud.google.com/gke-spot") == "true" else "")
        or ("spot" if labels.get("cloud.google.com/gke-preemptible") == "true" else "")
        or labels.get("kubernetes.azure.com/scalesetpriority", "")
    )
    return {"spot": Capacity.SPOT, "reserved": Capacity.RESERVED}.get(value, Capacity.ON_DEMAND)


def _cloud(labels: Mapping[str, str]) -> str:
    if any(key.startswith(("eks.amazonaws.com/", "karpenter.k8s.aws/")) for key in labels):
        return "aws"
    if any(key.startswith("cloud.google.com/") for key in labels):
        return "gcp"
    if any(key.startswith("kubernetes.azure.com/") for key in labels):
        return "azure"
    return ""


def _price(
    labels: Mapping[str, str], rule: PoolRule | None, capacity: Capacity, catalog: Catalog
) -> tuple[float, str]:
    if rule is not None and rule.usd_per_node_hour is not None:
        return rule.usd_per_node_hour, f"extender config, pool {rule.name}"
    instance = labels.get(INSTANCE_TYPE, "")
    cloud = _cloud(labels)
    if not cloud:  # no cloud-specific label (Karpenter runs on several): the instance type tells
        suffix = f":{instance.lower()}:{capacity.value}"
        clouds = {key.split(":", 1)[0] for key in catalog.prices if key.endswith(suffix)}
        cloud = clouds.pop() if len(clouds) == 1 else ""
    detected = f"{cloud}:{instance}:{capacity.value}"
    key = rule.price if rule is not None and rule.price else detected
    quote = catalog.prices.get(key.lower())
    if quote is None:
        return 0.0, f"unpriced: no catalog quote for {key!r}"
    return quote.usd_per_hour, f"catalog {quote.key} ({quote.source}, {quote.as_of})"


def _layout(model: GpuModelSpec, counts: Mapping[str, int], gpus: int, node: str) -> mig.Layout:
    """One GPU's fixed layout: the node's instances of each profile spread evenly over its GPUs."""
    geometry = model.mig
    if geometry is None:
        log.warning("node %s advertises MIG instances but %s has no MIG table", node, model.name)
        return ()
    layout: mig.Layout = ()

    def largest_first(item: tuple[str, int]) -> tuple[int, str]:
        spec = geometry.profiles.get(item[0])
        return (-spec.memory_slices if spec is not None else 0, item[0])

    for profile, count in sorted(counts.items(), key=largest_first):
        for _ in range(-(-count // gpus)):
            starts = mig.free_starts(geometry, layout, profile) if profile in geometry.profiles else ()
            if not starts:
                log.warning("node %s: %s does not fit one GPU's layout %s", node, profile, mig.format_layout(layout))
                break

            def room_after(start: int, made: str = profile, before: mig.Layout = layout) -> int:
                """Starts left for the rest: the start leaving most is taken."""
                after = tuple(sorted((*before, mig.MigInstance(start, made))))
                return sum(len(options) for options in mig.options(geometry, after).values())

            layout = mig.create(geometry, layout, profile, max(starts, key=lambda start: (room_after(start), -start)))
    return layout


def _whole(value: object) -> int:
    text = str(value).strip()
    return int(text) if text.isdigit() else 0

