"""A real gRPC PodResources v1 server on a unix socket, standing in for the kubelet in the agent's tests.

It serves the generated servicer (extender/agent/podresources) over `unix://PATH`, answers `List`
with the pods the test sets, and can be stopped and started again on the same path (a kubelet
restart).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from extender.agent.podresources import api_pb2, api_pb2_grpc

# (namespace, pod, container) -> [(resource name, [device ids])]
Pods = Mapping[tuple[str, str, str], Sequence[tuple[str, Sequence[str]]]]


def response(pods: Pods) -> Any:
    """A ListPodResourcesResponse holding `pods` (containers of one pod grouped, in order)."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    for (namespace, pod, container), devices in pods.items():
        grouped.setdefault((namespace, pod), []).append(api_pb2.ContainerResources(
            name=container,
            devices=[api_pb2.ContainerDevices(resource_name=name, device_ids=list(ids)) for name, ids in devices]))
    return api_pb2.ListPodResourcesResponse(pod_resources=[
        api_pb2.PodResources(name=pod, namespace=namespace, containers=containers)
        for (namespace, pod), containers in grouped.items()])


class _Lister(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def List(self, request: Any, context: Any) -> Any:  # noqa: N802 - the servicer's method name
        self.kubelet.calls += 1
        return response(self.kubelet.pods)


class FakeKubelet:
    """The PodResources server; `pods` may be changed between calls."""

    def __init__(self, socket_path: Path, pods: Pods | None = None) -> None:
        self.socket_path = socket_path
        self.pods: Pods = dict(pods or {})
        self.calls = 0
        self._server: Any = None

    def start(self) -> FakeKubelet:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(_Lister(self), server)
        server.add_insecure_port(f"unix://{self.socket_path}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
