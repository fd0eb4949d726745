"""Which pod holds which GPU: the kubelet's PodResources v1 `List` over its unix socket, and the pods' teams.

NVIDIA's device plugin hands devices to containers by id: a GPU's UUID ("GPU-..."), a MIG
instance's ("MIG-..."), with "::N" after it for the N-th replica of a time-sliced GPU, or the
GPU's index under the plugin's `index` id strategy. `holders` maps each id of resource
`nvidia.com/gpu`, `nvidia.com/gpu.shared` and `nvidia.com/mig-*` to the containers that hold it
(several under time-slicing). A missing socket or a kubelet that does not answer (restarting)
is `up=False` with the reason; the channel is dropped and made afresh on the next call, so the
agent reconnects as soon as the kubelet is back.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from extender.agent import DEFAULT_SOCKET
from extender.agent.podresources import api_pb2, api_pb2_grpc
from extender.modes import GPU, GPU_SHARED, MIG_PREFIX
from extender.translate import TeamRule, pod_key


@dataclass(frozen=True, slots=True)
class Holder:
    """A container that holds a device."""

    namespace: str
    pod: str
    container: str

    @property
    def job_id(self) -> str:
        """The fleetsched job the pod is (the extender names a pod's job `namespace/name`)."""
        return pod_key(self.namespace, self.pod)


@dataclass(frozen=True, slots=True)
class PodDevices:
    """One answer of the kubelet: up, and per device id the containers holding it."""

    up: bool
    holders: Mapping[str, tuple[Holder, ...]] = field(default_factory=dict)
    reason: str = ""
    error: str = ""  # a short name for fleetsched_agent_errors_total


def is_gpu_resource(name: str) -> bool:
    return name in (GPU, GPU_SHARED) or name.startswith(MIG_PREFIX)


def device_holders(response: Any) -> dict[str, tuple[Holder, ...]]:
    """Each GPU device id of a ListPodResourcesResponse and the pods holding it, in the kubelet's
    order. Two containers of one pod on one device (two time-sliced replicas of a GPU) are one
    holder, `container` naming both ("a,b"): the device is measured once per pod."""
    found: dict[str, dict[tuple[str, str], list[str]]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not is_gpu_resource(devices.resource_name):
                    continue
                for device_id in devices.device_ids:
                    held = found.setdefault(device_id.split("::", 1)[0], {})
                    containers = held.setdefault((pod.namespace, pod.name), [])
                    if container.name not in containers:
                        containers.append(container.name)
    return {device_id: tuple(Holder(namespace, name, ",".join(containers))
                             for (namespace, name), containers in held.items())
            for device_id, held in found.items()}  # fmt: skip


class PodResourcesClient:
    """Calls the kubelet's List each time it is asked; never raises for a kubelet that is away."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout_s: float = 2.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._channel: grpc.Channel | None = None
        self._stub: Any = None

    def list(self) -> PodDevices:
        if not os.path.exists(self.socket_path):
            self.close()
            return PodDevices(False, reason=f"no socket at {self.socket_path}", error="SocketMissing")
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{os.path.abspath(self.socket_path)}")
            self._stub = api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            response = self._stub.List(api_pb2.ListPodResourcesRequest(), timeout=self.timeout_s)
        except grpc.RpcError as error:
            self.close()  # a fresh channel next time: no reconnection backoff to wait out
            code = error.code() if hasattr(error, "code") else None
            name = code.name if code is not None else "UNKNOWN"
            details = error.details() if hasattr(error, "details") else ""
            return PodDevices(False, reason=f"List on {self.socket_path}: {name} {details}".rstrip(), error=name)
        return PodDevices(True, device_holders(response))

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stub = None, None


@dataclass(frozen=True, slots=True)
class TeamMap:
    """A pod's team, as the extender finds it (`TeamRule`: the namespace, or a pod label), with
    per-namespace names given on the command line taking precedence. Under a label rule the
    labels come from the API server (`extender.agent.labels`); None (not read) is no team."""

    rule: TeamRule = field(default_factory=TeamRule)
    namespaces: Mapping[str, str] = field(default_factory=dict)

    def team(self, namespace: str, labels: Mapping[str, str] | None = None) -> str:
        if namespace in self.namespaces:
            return self.namespaces[namespace]
        if self.rule.source == "label" and labels is None:
            return ""
        return self.rule.team(namespace, labels or {})

    @property
    def needs_labels(self) -> bool:
        return self.rule.source == "label"


__all__ = ["DEFAULT_SOCKET", "Holder", "PodDevices", "PodResourcesClient", "TeamMap", "device_holders"]
