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

HAMi's device plugin finds "the pod being allocated" on its node through the node lock, the node
annotation `hami.io/mutex.lock` = `<RFC3339 time>,<namespace>,<pod>` (HAMi
pkg/util/nodelock/nodelock.go): its scheduler takes it before the Binding, and the plugin
releases it after Allocate (bind-phase `success`, or `failed` on an error). Without it the
plugin falls back to the first pending pod on the node in bind-phase `allocating`, and two pods
bound at once can swap devices and limits. `bind_pod` keeps that protocol: it takes the lock
with a write guarded by the node's resourceVersion (of two binders, one gets 409 and reads
again), waits a bounded time while another pod holds a live lock, takes over a lock older than
HAMi's expiry (5 min, HAMi's default) or one whose pod is gone, binds, and leaves the lock to the
device plugin. The lock names one pod, so two pods on one node are bound in turn, the second
once the plugin has allocated the first (a gang takes its nodes' locks first: `take_lock`).
A failed binding releases the lock (only ours), as HAMi's scheduler does; the
pod's annotations travel with the Binding, so a failed one wrote none and there is no bind-phase
to mark `failed` (HAMi's scheduler, which patches the pod first, leaves `allocating` there too).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from extender.wire import BindingArgs
from extender.world import Clock
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
LOCK = "hami.io/mutex.lock"


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


class Conflict(Exception):  # noqa: N818 - an answer: the object changed since it was read
    """The API server refused a write guarded by a resourceVersion that is no longer current (409)."""


class NodeLocked(Exception):  # noqa: N818 - the binding's answer to kube-scheduler
    """The node's HAMi lock could not be taken in time."""


class BindingApi(Protocol):
    """The API calls a binding on a HAMi node makes (`extender.kubeapi.RestApi` has them); each
    gives up after `timeout_s`."""

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        """Creates the pod's Binding with `annotations` (see `extender.verbs.KubeApi`)."""
        ...

    def get_node(self, name: str, *, timeout_s: float) -> Mapping[str, Any]:
        """The Node object as the API server has it now."""
        ...

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None], resource_version: str, *,
                               timeout_s: float) -> None:  # fmt: skip
        """Sets (None: removes) node annotations if the node is still at `resource_version`;
        raises Conflict when it is not."""
        ...

    def pod_exists(self, namespace: str, name: str, *, timeout_s: float) -> bool:
        """Whether the API server has the pod."""
        ...


# Seconds the next request may take, asked before each one; it raises (`extender.verbs.Stopped`)
# when none may be made any more (this replica no longer leads).
Budget = Callable[[], float]
RELEASE_TIMEOUT_S = 5.0  # releasing our own lock is safe for any replica: not bound by leadership


def fixed(seconds: float) -> Budget:
    """A budget of `seconds` for every request."""
    return lambda: seconds


TEN_SECONDS = fixed(10.0)  # a caller with no deadline of its own (tests, tools)


@dataclass(frozen=True, slots=True)
class LockTiming:
    """How long a lock lives, and how long a binding waits for one."""

    expiry_s: float = 300.0  # HAMi's NodeLockTimeout default (HAMI_NODELOCK_EXPIRE)
    wait_s: float = 3.0  # a binding answers within kube-scheduler's httpTimeout (5 s in deploy/)
    retry_s: float = 0.1
    release_attempts: int = 5


TIMING = LockTiming()


def bind_pod(api: BindingApi, clock: Clock, args: BindingArgs, annotations: Mapping[str, str], *,
             budget: Budget = TEN_SECONDS, held: bool | None = None, wait_s: float | None = None) -> None:  # fmt: skip
    """Creates the pod's Binding; on a HAMi node (`annotations` are HAMi's) under HAMi's node
    lock: taken first (unless `held` says the caller took it: True when the pod held it before),
    left for the device plugin on success, released on failure. Raises NodeLocked when the lock
    stays held by another pod for `wait_s` (default `TIMING.wait_s`), and the binding's own
    errors. `budget` gives each request's timeout, and may stop the binding before one."""
    namespace, name, uid, node = args.pod_namespace, args.pod_name, args.pod_uid, args.node
    if NODE not in annotations:
        api.bind_pod(namespace, name, uid, node, annotations, timeout_s=budget())
        return
    if held is None:
        held = take_lock(api, clock, node, (namespace, name), budget=budget, wait_s=wait_s)
    try:
        api.bind_pod(namespace, name, uid, node, annotations, timeout_s=budget())
    except Exception as error:
        from extender.verbs import AlreadyBound  # verbs imports this module (through nodes)

        if not (held and isinstance(error, AlreadyBound) and error.node == node):
            # Kept only when an earlier call bound the pod here and the plugin has yet to allocate it.
            release_lock(api, node, (namespace, name))
        raise


def lock_value(now_s: float, owner: tuple[str, str]) -> str:
    """The lock as HAMi writes it: `<RFC3339 UTC>,<namespace>,<pod>`."""
    return ",".join((time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now_s)), *owner))


def parse_lock(node: str, value: str) -> tuple[float, tuple[str, str] | None]:
    """The lock's time (epoch seconds) and owner; a bare time (HAMi's legacy form) has none."""
    parts = value.split(",")
    try:
        if len(parts) not in (1, 3):
            raise ValueError(f"{len(parts)} comma-separated fields, not 3")
        taken_s = datetime.fromisoformat(parts[0]).timestamp()
    except ValueError as error:
        raise NodeLocked(f"node {node}: annotation {LOCK}={value!r} is not HAMi's lock ({error}); "
                         "remove it once no pod is being allocated there") from None  # fmt: skip
    return taken_s, (parts[1], parts[2]) if len(parts) == 3 else None


def take_lock(api: BindingApi, clock: Clock, node: str, owner: tuple[str, str], timing: LockTiming | None = None, *,
              budget: Budget = TEN_SECONDS, wait_s: float | None = None) -> bool:  # fmt: skip
    """Takes the node's lock for `owner`, waiting up to `wait_s` (default `timing.wait_s`) while
    another live pod holds it; True when `owner` held it already (a retried binding)."""
    timing = timing or TIMING
    wait_s = timing.wait_s if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    alive: dict[tuple[str, str], bool] = {}  # whether a lock's pod exists, asked once per holder
    while True:
        current = api.get_node(node, timeout_s=budget())
        metadata = current.get("metadata") or {}
        version = str(metadata.get("resourceVersion", ""))
        value = (metadata.get("annotations") or {}).get(LOCK)
        if value is not None:
            taken_s, held_by = parse_lock(node, str(value))
            if held_by == owner:
                return True
            now_s = clock.now_s()
            expired = now_s - taken_s > timing.expiry_s
            if held_by is not None and all(held_by) and not expired and held_by not in alive:
                alive[held_by] = api.pod_exists(*held_by, timeout_s=budget())
            if not expired and alive.get(held_by or ("", ""), True):
                if time.monotonic() >= deadline:
                    raise NodeLocked(f"node {node} is locked by HAMi ({LOCK}={value}): another pod is between "
                                     f"its binding and its device allocation; gave up after {wait_s:g} s")
                time.sleep(timing.retry_s)
                continue
            log.info("node %s: taking over HAMi's lock %s (%s)", node, value, "expired" if expired else "pod gone")
        try:
            api.patch_node_annotations(node, {LOCK: lock_value(clock.now_s(), owner)}, version, timeout_s=budget())
            return False
        except Conflict:  # the node changed (another binder took the lock, or anything else): read again
            if time.monotonic() >= deadline:
                raise NodeLocked(f"node {node}: HAMi's lock {LOCK} kept changing under this binding "
                                 f"(409 Conflict); gave up after {wait_s:g} s") from None  # fmt: skip
            time.sleep(timing.retry_s)


def release_lock(api: BindingApi, node: str, owner: tuple[str, str], timing: LockTiming | None = None) -> bool:
    """Removes the node's lock if `owner` holds it; True when it is no longer `owner`'s. Never
    raises: a lock left behind expires (the failure is logged)."""
    timing = timing or TIMING
    for _ in range(timing.release_attempts):
        try:
            current = api.get_node(node, timeout_s=RELEASE_TIMEOUT_S)
            metadata = current.get("metadata") or {}
            value = (metadata.get("annotations") or {}).get(LOCK)
            if value is None or parse_lock(node, str(value))[1] != owner:
                return True
            api.patch_node_annotations(node, {LOCK: None}, str(metadata.get("resourceVersion", "")),
                                       timeout_s=RELEASE_TIMEOUT_S)
            return True
        except Conflict:
            continue
        except Exception as error:
            log.warning("node %s: releasing HAMi's lock for %s/%s failed: %s", node, *owner, error)
            return False
    log.warning("node %s: HAMi's lock for %s/%s not released: the node kept changing", node, *owner)
    return False
