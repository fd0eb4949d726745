"""How a node's GPUs are handed out, read from GPU Feature Discovery labels and HAMi's register.

NVIDIA's device plugin advertises one `nvidia.com/gpu` per GPU, per replica of a GPU
(time-slicing, MPS), or per MIG instance (MIG `single`), and `nvidia.com/mig-<profile>` per
instance under MIG `mixed`. The labels tell which (shared/research/gpu-node-modes.md, 1 and 6):

- `nvidia.com/mig.strategy` = `single` | `mixed` (absent when `none`); under `single`,
  `nvidia.com/gpu.product` ends `-MIG-<profile>` (`-MIG-INVALID` when the layout is not one
  profile on every GPU) and `nvidia.com/gpu.count` counts instances, not GPUs;
- `nvidia.com/gpu.sharing-strategy` = `none` | `time-slicing` | `mps` with
  `nvidia.com/gpu.replicas` = R per GPU: the node advertises GPUs x R units;
- `nvidia.com/mig.config.state` other than `success`: MIG Manager is re-laying the GPUs out;
- node annotation `hami.io/node-nvidia-register`: HAMi's device plugin, which places a pod on the
  GPUs its scheduler's annotations name (`extender.hami`).

`read_mode` turns them into a `Shape` the scheduler's model can express (GPUs, a fixed MIG
layout, sharing, replicas) and a `NodeMode`; `PROMISES` says per mode what the node enforces
and what stays fleetsched's bookkeeping (the README's table is checked against it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from scheduler import mig
from scheduler.catalog import GpuModelSpec, MigGeometry

log = logging.getLogger(__name__)

GPU = "nvidia.com/gpu"
GPU_SHARED = "nvidia.com/gpu.shared"  # time-slicing and MPS with renameByDefault
MIG_PREFIX = "nvidia.com/mig-"
GPU_COUNT = "nvidia.com/gpu.count"
PRODUCT = "nvidia.com/gpu.product"
REPLICAS = "nvidia.com/gpu.replicas"
SHARING = "nvidia.com/gpu.sharing-strategy"
MIG_STRATEGY = "nvidia.com/mig.strategy"
MIG_CAPABLE = "nvidia.com/mig.capable"
MIG_CONFIG_STATE = "nvidia.com/mig.config.state"
_SINGLE_PROFILE = re.compile(r"-MIG-(.+?)(?:-SHARED)?$", re.IGNORECASE)


class NodeMode(StrEnum):
    """How the node's device plugin hands out GPUs."""

    WHOLE = "whole"
    TIME_SLICING = "time-slicing"
    MPS = "mps"
    MIG_SINGLE = "mig-single"
    MIG_MIXED = "mig-mixed"
    HAMI = "hami"


@dataclass(frozen=True, slots=True)
class Promise:
    """What fleetsched may count on in one mode, who enforces it, and what is bookkeeping only."""

    enforced: str
    advisory: str


PROMISES: Mapping[NodeMode, Promise] = {
    NodeMode.WHOLE: Promise(
        "n exclusive GPUs of the model (kubelet and device plugin count them)",
        "which GPUs (`fleetsched.io/gpus` indices: the kubelet picks the devices)",
    ),
    NodeMode.TIME_SLICING: Promise(
        "a replica of one of the node's GPUs (kube-scheduler and the kubelet count GPUs x R replicas); "
        "no whole GPU is offered",
        "the share's milli-GPU and memory, which GPU and how many pods on it, co-tenants: no isolation, "
        "one fault domain",
    ),
    NodeMode.MPS: Promise(
        "one replica: 1/R of a GPU's memory and threads, capped per process by the MPS daemon; "
        "only shares of at most 1/R fit, no whole GPU is offered",
        "which GPU and how many pods on it; fault isolation (a fatal fault reaches every client of the GPU)",
    ),
    NodeMode.MIG_SINGLE: Promise(
        "n isolated MIG instances of the node's one profile, asked as `nvidia.com/gpu` with the "
        "`-MIG-<profile>` product as node selector (MIG hardware and the kubelet)",
        "which instance, its parent GPU and start slot; whole GPUs are not offered",
    ),
    NodeMode.MIG_MIXED: Promise(
        "n isolated instances of profile p, asked as `nvidia.com/mig-<p>` (MIG hardware and the kubelet)",
        "which instance, its parent GPU and start slot (`3@4` is bookkeeping); GPUs with MIG off are not used",
    ),
    NodeMode.HAMI: Promise(
        "the GPUs fleetsched chose, with memory and compute limits (HAMi's device plugin reads the "
        "`hami.io/` annotations written at bind, under HAMi's node lock `hami.io/mutex.lock`; HAMi-core "
        "caps memory and throttles SMs)",
        "the compute share under contention (a time-averaged limit); pods that switch HAMi-core off",
    ),
}


@dataclass(frozen=True, slots=True)
class Shape:
    """The node as the scheduler's model expresses it."""

    mode: NodeMode
    gpus: int
    layout: mig.Layout = ()
    sharing: bool = False
    device_replicas: int = 0
    replica_limits: bool = False
    ready: bool = True  # False while MIG Manager re-lays the GPUs out

    def describe(self) -> str:
        """The pool-name suffix that keeps nodes of different modes in different pools."""
        if self.layout:
            return "/mig:" + mig.format_layout(self.layout)
        if self.device_replicas:
            return f"/{self.mode.value}:{self.device_replicas}"
        return ""


def read_mode(
    name: str, labels: Mapping[str, str], allocatable: Mapping[str, object], model: GpuModelSpec
) -> Shape | None:
    """The node's mode and shape; None when it offers nothing the model can hold."""
    state = labels.get(MIG_CONFIG_STATE, "success")
    # Nodes labelled by hand (or by an older GFD) may lack the strategy: per-profile resources say mixed.
    mixed = any(key.startswith(MIG_PREFIX) for key in allocatable)
    strategy = labels.get(MIG_STRATEGY) or ("mixed" if mixed else "none")
    if strategy == "single":
        shape = _mig_single(name, labels, allocatable, model)
    elif strategy == "mixed":
        shape = _mig_mixed(name, labels, allocatable, model)
    else:
        if labels.get(MIG_CAPABLE) == "true":
            log.info("node %s: MIG-capable GPUs without a MIG strategy are read as whole GPUs", name)
        shape = _replicated(name, labels, allocatable)
    if shape is not None and state != "success":
        log.warning("node %s: %s is %r: no new pod goes there until it is success", name, MIG_CONFIG_STATE, state)
        return Shape(shape.mode, shape.gpus, shape.layout, shape.sharing, shape.device_replicas,
                      shape.replica_limits, ready=False)  # fmt: skip
    return shape


def whole(value: object) -> int:
    """A count as Kubernetes writes it ("8"); 0 for anything else."""
    text = str(value).strip()
    return int(text) if text.isascii() and text.isdigit() else 0


def _replicated(name: str, labels: Mapping[str, str], allocatable: Mapping[str, object]) -> Shape | None:
    units = whole(allocatable.get(GPU, 0)) or whole(allocatable.get(GPU_SHARED, 0))
    strategy = labels.get(SHARING, "none")
    shared = strategy in ("time-slicing", "mps")
    if shared and REPLICAS not in labels:  # labelled by hand: how many replicas per GPU is unknown
        log.info("node %s: %s=%s without %s: read as %d GPUs that take shares", name, SHARING, strategy,
                 REPLICAS, units)
        return Shape(NodeMode.WHOLE, units, sharing=True) if units else None
    replicas = whole(labels.get(REPLICAS, "1"))
    if not shared or replicas < 2:
        return Shape(NodeMode.WHOLE, units) if units else None
    gpus = units // replicas  # allocatable counts healthy replicas: a GPU whose replicas are not all there is left out
    if units % replicas:
        log.warning("node %s advertises %d replicas, not a multiple of %d per GPU", name, units, replicas)
    if gpus == 0:
        return None
    mode = NodeMode.MPS if strategy == "mps" else NodeMode.TIME_SLICING
    return Shape(mode, gpus, sharing=True, device_replicas=replicas, replica_limits=mode is NodeMode.MPS)


def _mig_single(
    name: str, labels: Mapping[str, str], allocatable: Mapping[str, object], model: GpuModelSpec
) -> Shape | None:
    """Every GPU split into instances of one profile: `gpu.count` instances, not GPUs."""
    found = _SINGLE_PROFILE.search(labels.get(PRODUCT, ""))
    geometry = model.mig
    if found is None or geometry is None or found.group(1) not in geometry.profiles:
        log.warning("node %s: MIG single strategy with product %r: no usable instances", name, labels.get(PRODUCT))
        return None
    profile = found.group(1)
    instances = whole(allocatable.get(GPU, 0)) // max(1, whole(labels.get(REPLICAS, "1")))
    layout = _fill(geometry, profile)
    gpus = instances // len(layout)
    if instances % len(layout):  # fewer instances than full GPUs hold: count only full GPUs (never promise more)
        log.warning("node %s: %d x %s is not %d per GPU", name, instances, profile, len(layout))
    return Shape(NodeMode.MIG_SINGLE, gpus, layout) if gpus else None


def _mig_mixed(
    name: str, labels: Mapping[str, str], allocatable: Mapping[str, object], model: GpuModelSpec
) -> Shape | None:
    """Per-profile resources over the MIG-enabled GPUs (`gpu.count` physical, less those with MIG off)."""
    counts: dict[str, int] = {}
    for key, value in allocatable.items():
        if key.startswith(MIG_PREFIX):
            profile = profile_of(key[len(MIG_PREFIX):], model)
            replicas = max(1, whole(labels.get(f"{key}.replicas", "1")))
            if whole(value) // replicas:
                counts[profile] = whole(value) // replicas
    if not counts:
        return None
    unsplit = whole(allocatable.get(GPU, 0))
    if unsplit:
        log.warning("node %s: %d GPUs with MIG off beside MIG ones are not used", name, unsplit)
    gpus = max(1, whole(labels.get(GPU_COUNT, 0)) - unsplit)
    layout = mixed_layout(name, model, counts, gpus)
    return Shape(NodeMode.MIG_MIXED, gpus, layout) if layout else None


def profile_of(resource_profile: str, model: GpuModelSpec | None = None) -> str:
    """The catalog's profile for a resource's (`1g.10gb.me` -> `1g.10gb+me`): the device plugin
    writes `+` as `.` in resource names."""
    profiles = model.mig.profiles if model is not None and model.mig is not None else {}
    if resource_profile in profiles:
        return resource_profile
    head, dot, tail = resource_profile.rpartition(".")
    if dot and not tail.endswith("gb") and (model is None or f"{head}+{tail}" in profiles):
        return f"{head}+{tail}"
    return resource_profile


def resource_of(profile: str) -> str:
    """The extended resource a MIG profile is advertised as under the mixed strategy."""
    return MIG_PREFIX + profile.replace("+", ".")


def _fill(geometry: MigGeometry, profile: str) -> mig.Layout:
    """As many instances of `profile` as one GPU holds (what mig-parted's `all-<profile>` makes)."""
    layout: mig.Layout = ()
    while starts := mig.free_starts(geometry, layout, profile):
        layout = mig.create(geometry, layout, profile, starts[0])
    return layout


def mixed_layout(node: str, model: GpuModelSpec, counts: Mapping[str, int], gpus: int) -> mig.Layout:
    """One GPU's fixed layout: the node's instances of each profile spread evenly over its GPUs.

    A profile whose count does not divide evenly is rounded down: fleetsched never counts on an
    instance some GPU lacks (the kubelet, not fleetsched, picks which instance a pod gets)."""
    geometry = model.mig
    if geometry is None:
        log.warning("node %s advertises MIG instances but %s has no MIG table", node, model.name)
        return ()
    layout: mig.Layout = ()

    def largest_first(item: tuple[str, int]) -> tuple[int, str]:
        spec = geometry.profiles.get(item[0])
        return (-spec.memory_slices if spec is not None else 0, item[0])

    for profile, count in sorted(counts.items(), key=largest_first):
        if count % gpus:
            log.warning("node %s: %d x %s over %d GPUs: %d per GPU counted", node, count, profile, gpus, count // gpus)
        for _ in range(count // gpus):
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


LABELLING: Mapping[NodeMode, str] = {
    NodeMode.WHOLE: "`gpu.sharing-strategy=none` (or no GFD), no `mig.strategy`",
    NodeMode.TIME_SLICING: "`gpu.sharing-strategy=time-slicing`, `gpu.replicas=R`",
    NodeMode.MPS: "`gpu.sharing-strategy=mps`, `gpu.replicas=R`",
    NodeMode.MIG_SINGLE: "`mig.strategy=single`, `gpu.product=<model>-MIG-<profile>`",
    NodeMode.MIG_MIXED: "`mig.strategy=mixed`, resources `nvidia.com/mig-<profile>`",
    NodeMode.HAMI: "annotation `hami.io/node-nvidia-register` (HAMi 2.10, hami-core)",
}


def promises_table() -> str:
    """The README's table of what each mode enforces and what is advisory (checked by a test)."""
    rows = ["| mode | node labels | enforced | advisory (fleetsched's bookkeeping only) |", "|---|---|---|---|"]
    rows += [f"| {mode.value} | {LABELLING[mode]} | {PROMISES[mode].enforced} | {PROMISES[mode].advisory} |"
             for mode in NodeMode]  # fmt: skip
    return "\n".join(rows) + "\n"
