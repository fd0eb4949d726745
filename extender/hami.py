"""HAMi nodes: the GPUs HAMi's device plugin registers, and the pod annotations that make it
allocate exactly the GPUs fleetsched granted, with their memory and compute limits.

With NVIDIA's device plugin the kubelet picks the devices and `fleetsched.io/gpus` is
bookkeeping. HAMi's device plugin (v2.10, hami-core mode) instead finds the pod being
allocated from annotations its scheduler writes, ignores the kubelet's pick, and injects
HAMi-core's limits (shared/research/gpu-node-modes.md, 3.2-3.5). fleetsched writes the same
annotations with the Binding:

- `hami.io/vgpu-node`, `hami.io/vgpu-time`, `hami.io/bind-time` (Unix seconds),
  `hami.io/bind-phase` = `allocating`;
- `hami.io/vgpu-devices-to-allocate` and `hami.io/vgpu-devices-allocated`, the same text: per
  container, init containers first, one entry ending `;` (empty for a container without GPUs)
  of tuples `<GPU-UUID>,NVIDIA,<memory MiB>,<cores %>:`, e.g. `;GPU-a,NVIDIA,8000,30:;`.

The node is HAMi's when it carries the annotation `hami.io/node-nvidia-register`: a JSON list
of `{id, index, count, devmem, devcore, type, mode, health}`, one per GPU.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scheduler.model import FULL_GPU_MILLI, GpuRequest, Grant, RequestKind

log = logging.getLogger(__name__)

REGISTER = "hami.io/node-nvidia-register"
NODE = "hami.io/vgpu-node"
TIME = "hami.io/vgpu-time"
TO_ALLOCATE = "hami.io/vgpu-devices-to-allocate"
ALLOCATED = "hami.io/vgpu-devices-allocated"
BIND_PHASE = "hami.io/bind-phase"
BIND_TIME = "hami.io/bind-time"
CORE_MODE = "hami-core"


@dataclass(frozen=True, slots=True)
class HamiDevice:
    """One GPU as HAMi's device plugin registers it."""

    uuid: str
    index: int
    memory_mib: int


def read_register(node: str, text: str) -> tuple[HamiDevice, ...]:
    """The healthy hami-core GPUs of the register, by index; empty (with a warning) when it is
    not the JSON list of HAMi 2.10 or names no such GPU (fleetsched then leaves the node alone)."""
    try:
        entries = json.loads(text)
    except ValueError:
        log.warning("node %s: %s is not JSON (HAMi before 2.10?): node left out", node, REGISTER)
        return ()
    devices: list[HamiDevice] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or entry.get("health") is False:
            continue
        uuid, index, memory = entry.get("id"), entry.get("index"), entry.get("devmem")
        if entry.get("mode", CORE_MODE) != CORE_MODE:
            log.warning("node %s: HAMi mode %r is not supported: GPU %s left out", node, entry.get("mode"), uuid)
            continue
        if isinstance(uuid, str) and uuid and isinstance(index, int) and isinstance(memory, int) and memory > 0:
            devices.append(HamiDevice(uuid, index, memory))
    if not devices:
        log.warning("node %s: %s names no healthy hami-core GPU: node left out", node, REGISTER)
    return tuple(sorted(devices, key=lambda device: device.index))


def pod_annotations(
    node: str,
    devices: Sequence[HamiDevice],
    grants: Sequence[Grant],
    request: GpuRequest,
    containers: tuple[Sequence[int], Sequence[int]],
    now_s: float,
) -> dict[str, str]:
    """The annotations that hand `grants` to HAMi's device plugin. `containers` is the GPUs each
    init container and each container asks: an init container runs alone and takes the first
    grants; the containers take theirs in turn."""
    if request.kind is RequestKind.MIG:
        raise ValueError("HAMi's hami-core mode has no MIG instances")
    tuples: list[str] = []
    for grant in grants:
        device = devices[grant.gpu]
        if request.kind is RequestKind.SHARE:
            memory = request.memory_mib or device.memory_mib * request.milli // FULL_GPU_MILLI
            cores = math.ceil(request.milli * 100 / FULL_GPU_MILLI)
        else:
            memory, cores = device.memory_mib, 100
        tuples.append(f"{device.uuid},NVIDIA,{memory},{cores}:")
    inits, regular = containers
    entries = ["".join(tuples[:count]) + ";" for count in inits]
    taken = 0
    for count in regular:
        entries.append("".join(tuples[taken : taken + count]) + ";")
        taken += count
    stamp = str(int(now_s))
    allocation = "".join(entries)
    return {NODE: node, TIME: stamp, TO_ALLOCATE: allocation, ALLOCATED: allocation,
            BIND_PHASE: "allocating", BIND_TIME: stamp}  # fmt: skip
