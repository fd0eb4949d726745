"""End to end: a real kube-apiserver and kube-scheduler, and the extender server, on loopback.

Fake GPU nodes (spot and on-demand H100, on-demand A100, a MIG node, a node with shared GPUs)
and GPU pods are created through the API; the real kube-scheduler asks the extender (filter,
prioritize, bind over HTTP) and the test reads back where each pod was bound. The first run
on a machine builds the Kubernetes binaries (tests/e2e/get-kube.sh, about 5 minutes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from extender import wire
from extender.kubeapi import wait_until
from extender.main import start
from extender.state import GPUS
from extender.verbs import GpuExtender
from extender.world import SystemClock
from tests.e2e.controlplane import (
    ControlPlane,
    add_node,
    add_pod,
    add_priority_class,
    control_plane,
    local_extender,
    node_of,
)

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node.kubernetes.io/instance-type": "p5.48xlarge"}
SPOT = {**H100, "karpenter.sh/capacity-type": "spot"}
ON_DEMAND = {**H100, "karpenter.sh/capacity-type": "on-demand"}
A100 = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "node.kubernetes.io/instance-type": "p4de.24xlarge",
        "karpenter.sh/capacity-type": "on-demand"}
MIG = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB", "nvidia.com/gpu.count": "1",
       "node.kubernetes.io/instance-type": "p4d.24xlarge", "karpenter.sh/capacity-type": "on-demand"}
L4 = {"nvidia.com/gpu.product": "NVIDIA-L4", "node.kubernetes.io/instance-type": "g6.xlarge",
      "karpenter.sh/capacity-type": "on-demand"}
SHARED = {"nvidia.com/gpu.product": "NVIDIA-A10G", "node.kubernetes.io/instance-type": "g5.12xlarge",
          "karpenter.sh/capacity-type": "on-demand", "nvidia.com/gpu.sharing-strategy": "time-slicing"}


class AheadClock(SystemClock):
    """The machine's clocks, with the wall clock moved on by `ahead_s` when a test needs time to
    have passed for the extender (a pod's age) without waiting for it."""

    def __init__(self) -> None:
        self.ahead_s = 0.0

    def now_s(self) -> float:
        return super().now_s() + self.ahead_s


NODES = 5


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[ControlPlane, GpuExtender, AheadClock]]:
    with control_plane() as plane:
        rest = plane.rest
        add_node(rest, "h100-spot-1", SPOT, {"nvidia.com/gpu": "8"})
        add_node(rest, "h100-od-1", ON_DEMAND, {"nvidia.com/gpu": "8"})
        add_node(rest, "a100-od-1", A100, {"nvidia.com/gpu": "8"})
        add_node(rest, "mig-1", MIG, {"nvidia.com/mig-3g.20gb": "1", "nvidia.com/mig-1g.5gb": "4"})
        add_node(rest, "shared-1", SHARED, {"nvidia.com/gpu": "4"})
        clock = AheadClock()
        server, stop = start(local_extender(), rest, clock)  # what `fleetsched extender` runs
        extender = server.extender
        assert isinstance(extender, GpuExtender)
        plane.start_scheduler(server.url)
        try:
            view = extender.planner.cluster
            assert wait_until(lambda: len(view.view().snapshot.nodes) == NODES, 30), "the mirror never saw the nodes"
            yield plane, extender, clock
        finally:
            stop()


@pytest.fixture
def cluster(shared: tuple[ControlPlane, GpuExtender, AheadClock]) -> Iterator[tuple[ControlPlane, GpuExtender]]:
    """The shared control plane, left after each test as the test found it: its pods deleted
    (as a kubelet would finish them) and the mirror caught up, so tests run in any order."""
    plane, extender, clock = shared
    yield plane, extender
    rest = plane.rest
    for item in rest.request("GET", "/api/v1/namespaces/ml/pods")["items"]:
        rest.request("DELETE", f"/api/v1/namespaces/ml/pods/{item['metadata']['name']}", {"gracePeriodSeconds": 0})
    view = extender.planner.cluster
    assert wait_until(lambda: not view.view().snapshot.running, 30), "the mirror never saw the pods go"
    clock.ahead_s = 0.0


def bound(plane: ControlPlane, name: str, timeout_s: float = 60.0) -> str:
    rest = plane.rest
    wait_until(lambda: bool(node_of(rest, name)), timeout_s, 0.2)
    return node_of(rest, name)


def annotations(plane: ControlPlane, name: str) -> dict[str, Any]:
    pod = plane.rest.request("GET", f"/api/v1/namespaces/ml/pods/{name}")
    return dict((pod.get("metadata") or {}).get("annotations") or {})


def test_each_pod_is_bound_where_the_profile_wants_it(cluster: tuple[ControlPlane, GpuExtender]) -> None:
    plane, _ = cluster
    rest = plane.rest
    h100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    add_pod(rest, "pre", {"nvidia.com/gpu": "2"}, labels={"fleetsched.io/preemptible": "true"},
            annotations={"fleetsched.io/gpu-models": "H100-80GB"})
    add_pod(rest, "firm", {"nvidia.com/gpu": "2"}, annotations={"fleetsched.io/gpu-models": "H100-80GB"})
    add_pod(rest, "cheap", {"nvidia.com/gpu": "1"})
    add_pod(rest, "mig", {"nvidia.com/mig-1g.5gb": "1"})
    add_pod(rest, "share", {"nvidia.com/gpu": "1"}, annotations={"fleetsched.io/gpu-milli": "500",
                                                                "fleetsched.io/gpu-memory-mib": "4096"})
    assert bound(plane, "pre") == "h100-spot-1"  # cheapest H100, and the pod tolerates spot
    assert bound(plane, "firm") == "h100-od-1"  # not preemptible: never spot
    assert bound(plane, "cheap") == "shared-1"  # the cheapest GPU-hour of all
    assert bound(plane, "mig") == "mig-1"
    assert bound(plane, "share") == "shared-1"
    assert annotations(plane, "pre")[GPUS] == "0,1"
    assert "@" in annotations(plane, "mig")[GPUS]  # a MIG instance: GPU and start
    del h100


def test_a_gang_binds_whole_or_not_at_all(cluster: tuple[ControlPlane, GpuExtender]) -> None:
    plane, _ = cluster
    rest = plane.rest
    gang = {"fleetsched.io/gang": "trainer"}
    size = {"fleetsched.io/gang-size": "2", "fleetsched.io/gpu-models": "A100-80GB"}
    add_pod(rest, "trainer-0", {"nvidia.com/gpu": "4"}, labels=gang, annotations=size)
    assert not wait_until(lambda: bool(node_of(rest, "trainer-0")), 4.0, 0.2), "half a gang was bound"
    add_pod(rest, "trainer-1", {"nvidia.com/gpu": "4"}, labels=gang, annotations=size)
    # trainer-0 was turned away while its gang was incomplete: the extender asks kube-scheduler
    # to try it again (else it waits up to 90 s); trainer-1's place waits for it, and the two
    # are bound together.
    assert bound(plane, "trainer-1", 30.0) == "a100-od-1"
    assert bound(plane, "trainer-0", 10.0) == "a100-od-1"


def test_nothing_is_bound_onto_a_node_without_the_resources(cluster: tuple[ControlPlane, GpuExtender]) -> None:
    plane, extender = cluster
    rest = plane.rest
    add_pod(rest, "too-big", {"nvidia.com/gpu": "9"})
    assert not wait_until(lambda: bool(node_of(rest, "too-big")), 5.0, 0.2)
    view = extender.planner.cluster.view()
    for name, node in view.snapshot.nodes.items():  # every GPU held at most once
        pool = view.snapshot.pools[node.pool]
        assert len(node.gpus) == pool.gpus_per_node, name
    assert extender.readiness()[0]


def test_preemption_trims_victims_and_the_preemptor_takes_the_freed_gpu(
    shared: tuple[ControlPlane, GpuExtender, AheadClock], cluster: tuple[ControlPlane, GpuExtender]
) -> None:
    """The preempt verb, on the real pods, keeps only the node whose victim loses least work.

    kube-scheduler 1.20.0 to 1.20.9 never calls an extender's preempt verb (kubernetes#102971,
    fixed in 1.20.10), and 1.20.2 is what Debian's sources build: so the verb is asked here
    with the victims kube-scheduler would send, and kube-scheduler's own preemption, which
    picks among the candidates itself, is then followed to the end: the preemptor is bound
    to the GPU its victim freed.
    """
    # Its L4 nodes would be the cheapest home for the other tests' pods: they go when it ends.
    plane, extender = cluster
    clock = shared[2]
    rest = plane.rest
    add_node(rest, "l4-1", L4, {"nvidia.com/gpu": "1"})
    add_node(rest, "l4-2", L4, {"nvidia.com/gpu": "1"})
    try:
        _preempt_on_l4(plane, extender, clock)
    finally:
        for name in ("l4-1", "l4-2"):
            rest.request("DELETE", f"/api/v1/nodes/{name}", {"gracePeriodSeconds": 0})
        view = extender.planner.cluster
        assert wait_until(lambda: len(view.view().snapshot.nodes) == NODES, 30), "the mirror never saw the L4 nodes go"


def _preempt_on_l4(plane: ControlPlane, extender: GpuExtender, clock: AheadClock) -> None:
    rest = plane.rest
    add_priority_class(rest, "urgent", 1000)
    l4 = {"fleetsched.io/gpu-models": "L4-24GB"}
    add_pod(rest, "long-run", {"nvidia.com/gpu": "1"}, annotations=l4)  # never checkpoints
    running = bound(plane, "long-run")
    add_pod(rest, "saver", {"nvidia.com/gpu": "1"}, annotations={**l4, "fleetsched.io/checkpoint-interval-s": "1"})
    saving = bound(plane, "saver")
    assert {running, saving} == {"l4-1", "l4-2"}
    clock.ahead_s = 2.0  # long-run has now run for longer than saver's checkpoint interval
    urgent = add_pod(rest, "urgent", {"nvidia.com/gpu": "1"}, annotations=l4, priority_class="urgent")

    def uid(name: str) -> str:
        return str(rest.request("GET", f"/api/v1/namespaces/ml/pods/{name}")["metadata"]["uid"])

    victims = {running: {"Pods": [{"UID": uid("long-run")}], "NumPDBViolations": 0},
               saving: {"Pods": [{"UID": uid("saver")}], "NumPDBViolations": 0}}
    asked = json.dumps({"Pod": urgent, "NodeNameToMetaVictims": victims}).encode()
    kept, _ = extender.preempt(wire.parse_preemption_args(asked))
    assert kept == {saving: (uid("saver"),)}

    def evicted() -> str:
        for name in ("long-run", "saver"):
            pod = rest.request("GET", f"/api/v1/namespaces/ml/pods/{name}")
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                return name
        return ""

    assert wait_until(lambda: bool(evicted()), 60, 0.2), "kube-scheduler did not preempt"
    victim = evicted()
    freed = node_of(rest, victim)
    # No kubelet here to finish the eviction: do what it would, and the pod takes the GPU.
    rest.request("DELETE", f"/api/v1/namespaces/ml/pods/{victim}", {"gracePeriodSeconds": 0})
    assert bound(plane, "urgent", 90.0) == freed
