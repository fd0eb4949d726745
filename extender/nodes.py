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
- GPUs and how they are handed out: `extender.modes` reads GPU Feature Discovery's labels
  (whole GPUs, time-slicing and MPS replicas, MIG single and mixed strategies) and
  `extender.hami` HAMi's register; each node's pool says what its mode lets fleetsched promise.
- Sharing (milli-GPU and memory shares): time-slicing, MPS and HAMi nodes, or the pool's `sharing`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from extender import hami
from extender.modes import NodeMode, Shape, read_mode
from extender.translate import PodJob
from extender.wire import WireError, expect_object
from scheduler.catalog import Catalog, GpuModelSpec
from scheduler.errors import InputError
from scheduler.model import Capacity, Grant, MigMode, Pool, RequestKind

log = logging.getLogger(__name__)

PRODUCT_LABELS = ("nvidia.com/gpu.product", "cloud.google.com/gke-accelerator", "karpenter.k8s.aws/instance-gpu-name")
INSTANCE_TYPE = "node.kubernetes.io/instance-type"


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
    """What the scheduler needs of a Kubernetes node: its pool, whether it takes pods, how its
    device plugin hands GPUs out, and (HAMi) the GPUs by the index fleetsched grants them by."""

    name: str
    pool: Pool
    ready: bool
    labels: Mapping[str, str] = field(default_factory=dict)
    mode: NodeMode = NodeMode.WHOLE
    hami_devices: tuple[hami.HamiDevice, ...] = ()


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
    register = (metadata.get("annotations") or {}).get(hami.REGISTER)
    devices = hami.read_register(name, str(register)) if register is not None else ()
    if register is not None:
        shape: Shape | None = Shape(NodeMode.HAMI, len(devices), sharing=True) if devices else None
    else:
        shape = read_mode(name, labels, allocatable, model)
    if shape is None:
        return None
    capacity = rule.capacity if rule is not None and rule.capacity is not None else _capacity(labels)
    usd, source = _price(labels, rule, capacity, catalog)
    sharing = shape.sharing or (rule is not None and rule.sharing and not shape.layout)
    pool_name = rule.name if rule is not None else "/".join(
        ("auto", model.name, labels.get(INSTANCE_TYPE, f"{shape.gpus}gpu"), capacity.value)
    )
    pool = Pool(
        name=pool_name + shape.describe(), gpu=model, gpus_per_node=shape.gpus, capacity=capacity,
        usd_per_node_hour=usd, price_source=source, mig_mode=MigMode.FIXED if shape.layout else MigMode.OFF,
        mig_layout=shape.layout, sharing=sharing, device_replicas=shape.device_replicas,
        replica_limits=shape.replica_limits, notice_s=rule.notice_s if rule is not None else 0.0,
        interruptions_per_node_hour=rule.interruptions_per_node_hour if rule is not None else 0.0,
    )
    spec = expect_object(node.get("spec") or {}, f"Node {name}.spec")
    conditions = status.get("conditions") or []
    ready = shape.ready and not spec.get("unschedulable", False) and any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions
    )
    return NodeInfo(name, pool, ready, labels, shape.mode, devices)


def device_annotations(info: NodeInfo, pod: PodJob, grants: Sequence[Grant], now_s: float) -> dict[str, str]:
    """What the node's device plugin reads to allocate exactly `grants` to `pod` (HAMi's
    annotations); nothing where the kubelet picks the devices itself."""
    if info.mode is not NodeMode.HAMI or pod.job.request.kind is RequestKind.MIG:
        return {}
    return hami.pod_annotations(info.name, info.hami_devices, grants, pod.job.request, pod.container_gpus, now_s)


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
