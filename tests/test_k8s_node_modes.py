"""GPU node modes as GPU Feature Discovery labels them (time-slicing, MPS, MIG single and mixed),
HAMi nodes and their bind annotations, managed resources, and unknown-annotation Events."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender import hami
from extender.events import REASON, AnnotationReporter
from extender.kubeapi import RestApi, wait_until
from extender.modes import NodeMode, promises_table
from extender.nodes import NodeInfo, read_node
from extender.translate import managed_resources, read_pod, unknown_annotations
from policies.fit import GpuShareFit, WholeGpuFit
from scheduler import capacity
from scheduler.decision import Code
from scheduler.model import (
    AllocationError,
    ClusterSnapshot,
    GpuRequest,
    Grant,
    Job,
    MigMode,
    Node,
    Pool,
    RequestKind,
    empty_node,
)
from scheduler.plugin import Cycle
from tests.test_k8s_extender import CATALOG, extender, pod

ROOT = Path(__file__).resolve().parent.parent


def gfd_node(name: str, labels: Mapping[str, str], allocatable: Mapping[str, str],
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": name, "labels": dict(labels), "annotations": dict(annotations or {})},
        "spec": {},
        "status": {"allocatable": {"cpu": "8", **allocatable}, "conditions": [{"type": "Ready", "status": "True"}]},
    }


def read(labels: Mapping[str, str], allocatable: Mapping[str, str], **extra: Any) -> NodeInfo:
    info = read_node(gfd_node("n-1", labels, allocatable, **extra), (), CATALOG)
    assert info is not None
    return info


def fits(info: NodeInfo, request: GpuRequest) -> tuple[bool, Code, Code]:
    """Whether a replica fits an empty node of the pool, and what the whole and share filters say."""
    node = empty_node(info.pool, info.name)
    cycle = Cycle(0.0, ClusterSnapshot({info.pool.name: info.pool}, {node.name: node}))
    job = Job(id="j", request=request)
    found = capacity.find_grants(info.pool, node, job.request) is not None
    return found, WholeGpuFit().filter(cycle, job, node).code, GpuShareFit().filter(cycle, job, node).code


A10G_TIME_SLICED = {"nvidia.com/gpu.product": "NVIDIA-A10G-SHARED", "nvidia.com/gpu.count": "1",
                    "nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "time-slicing"}  # fmt: skip


def test_a_time_sliced_a10g_with_four_replicas_is_one_gpu_shared_four_ways() -> None:
    info = read(A10G_TIME_SLICED, {"nvidia.com/gpu": "4"})
    pool = info.pool
    assert info.mode is NodeMode.TIME_SLICING and pool.gpu.name == "A10G-24GB"
    assert (pool.gpus_per_node, pool.sharing, pool.device_replicas, pool.replica_limits) == (1, True, 4, False)
    assert pool.name.endswith("/time-slicing:4")
    # No whole GPU is promised; any share size is (advisory) accepted.
    assert fits(info, GpuRequest(gpus=1)) == (False, Code.UNRESOLVABLE, Code.SUCCESS)
    assert fits(info, GpuRequest(kind=RequestKind.SHARE, milli=600, memory_mib=16_000))[0]


def test_time_slicing_counts_gpus_from_healthy_replicas_and_reads_renamed_resources() -> None:
    labels = {**A10G_TIME_SLICED, "nvidia.com/gpu.count": "8", "nvidia.com/gpu.replicas": "10"}
    assert read(labels, {"nvidia.com/gpu": "80"}).pool.gpus_per_node == 8
    assert read(labels, {"nvidia.com/gpu": "75"}).pool.gpus_per_node == 7  # a GPU with replicas missing is left out
    renamed = read({**labels, "nvidia.com/gpu.product": "NVIDIA-A10G"}, {"nvidia.com/gpu.shared": "80"})
    assert renamed.mode is NodeMode.TIME_SLICING and renamed.pool.gpus_per_node == 8
    asked = read_pod(pod("p", resources={"nvidia.com/gpu.shared": "1"}), CATALOG)
    assert asked is not None and asked.job.request == GpuRequest(gpus=1)


def test_a_sharing_strategy_without_replicas_keeps_the_old_reading() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-A10G", "nvidia.com/gpu.sharing-strategy": "time-slicing"}
    info = read(labels, {"nvidia.com/gpu": "4"})  # hand-labelled: R unknown, so 4 GPUs that take shares
    assert info.mode is NodeMode.WHOLE and (info.pool.gpus_per_node, info.pool.sharing) == (4, True)


def test_mps_replicas_cap_each_share_at_one_replica() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3-SHARED", "nvidia.com/gpu.count": "2",
              "nvidia.com/gpu.replicas": "4", "nvidia.com/gpu.sharing-strategy": "mps", "nvidia.com/mps.capable": "true"}
    info = read(labels, {"nvidia.com/gpu": "8"})
    pool = info.pool
    assert info.mode is NodeMode.MPS and (pool.gpus_per_node, pool.device_replicas, pool.replica_limits) == (2, 4, True)
    quarter = pool.gpu.memory_mib // 4
    assert fits(info, GpuRequest(kind=RequestKind.SHARE, milli=250, memory_mib=quarter)) == (
        True, Code.SUCCESS, Code.SUCCESS)  # fmt: skip
    assert fits(info, GpuRequest(kind=RequestKind.SHARE, milli=300, memory_mib=1024)) == (
        False, Code.SUCCESS, Code.UNRESOLVABLE)  # fmt: skip
    assert not fits(info, GpuRequest(kind=RequestKind.SHARE, milli=100, memory_mib=quarter + 1))[0]
    assert fits(info, GpuRequest(gpus=1))[1] is Code.UNRESOLVABLE
    node = empty_node(pool, "n-1")
    with pytest.raises(AllocationError, match="exceeds one of 4 MPS replicas"):
        node.grant(pool, Job(id="big", request=GpuRequest(kind=RequestKind.SHARE, milli=500)), (Grant(0),))
    with pytest.raises(AllocationError, match="none is held whole"):
        node.grant(pool, Job(id="whole"), (Grant(0),))


MIG_SINGLE = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "nvidia.com/gpu.count": "56",
              "nvidia.com/mig.strategy": "single", "nvidia.com/gpu.replicas": "1", "nvidia.com/mig.capable": "true"}


def test_mig_single_56_gpus_are_8_a100s_of_seven_1g5gb_instances() -> None:
    info = read(MIG_SINGLE, {"nvidia.com/gpu": "56"})
    pool = info.pool
    assert info.mode is NodeMode.MIG_SINGLE and pool.gpu.name == "A100-SXM4-40GB"
    assert pool.gpus_per_node == 8 and pool.mig_mode is MigMode.FIXED
    assert [instance.profile for instance in pool.mig_layout] == ["1g.5gb"] * 7
    # A pod asking nvidia.com/gpu for a whole GPU is not placed here: it would get a slice.
    assert fits(info, GpuRequest(gpus=1))[:2] == (False, Code.UNRESOLVABLE)
    selected = pod("slice", 2)
    selected["spec"]["nodeSelector"] = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"}
    asked = read_pod(selected, CATALOG)
    assert asked is not None and asked.job.request == GpuRequest(kind=RequestKind.MIG, gpus=2, mig_profile="1g.5gb")
    assert asked.job.gpu_models == {"A100-SXM4-40GB"}
    assert fits(info, asked.job.request)[0]


def test_mig_single_other_profiles_and_invalid_layouts() -> None:
    labels = {**MIG_SINGLE, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-3g.20gb"}
    info = read(labels, {"nvidia.com/gpu": "16"})
    assert info.pool.gpus_per_node == 8 and [i.profile for i in info.pool.mig_layout] == ["3g.20gb"] * 2
    assert read(labels, {"nvidia.com/gpu": "15"}).pool.gpus_per_node == 7  # never more than every GPU holds
    invalid = {**MIG_SINGLE, "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB-MIG-INVALID", "nvidia.com/gpu.count": "0"}
    assert read_node(gfd_node("bad", invalid, {"nvidia.com/gpu": "0"}), (), CATALOG) is None


def test_mig_mixed_profiles_become_a_fixed_layout_with_media_extensions_named_back() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.count": "3",
              "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.replicas": "0"}
    allocatable = {"nvidia.com/mig-3g.40gb": "2", "nvidia.com/mig-1g.10gb": "6", "nvidia.com/mig-1g.10gb.me": "2",
                   "nvidia.com/gpu": "1"}  # one GPU has MIG off: left out
    info = read(labels, allocatable)
    pool = info.pool
    assert info.mode is NodeMode.MIG_MIXED and pool.gpus_per_node == 2 and pool.mig_mode is MigMode.FIXED
    assert sorted(i.profile for i in pool.mig_layout) == ["1g.10gb"] * 3 + ["1g.10gb+me", "3g.40gb"]
    asked = read_pod(pod("me", resources={"nvidia.com/mig-1g.10gb.me": "1"}), CATALOG)
    assert asked is not None and asked.job.request.mig_profile == "1g.10gb+me"
    assert fits(info, asked.job.request)[0] and not fits(info, GpuRequest(gpus=1))[0]


def test_mig_reconfiguration_in_progress_takes_no_pods() -> None:
    pending = {**MIG_SINGLE, "nvidia.com/mig.config.state": "pending"}
    assert not read(pending, {"nvidia.com/gpu": "56"}).ready
    assert read({**pending, "nvidia.com/mig.config.state": "success"}, {"nvidia.com/gpu": "56"}).ready


def test_whole_gpu_nodes_keep_their_pool() -> None:
    labels = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
              "nvidia.com/gpu.replicas": "1", "nvidia.com/gpu.sharing-strategy": "none"}
    info = read(labels, {"nvidia.com/gpu": "8"})
    assert info.mode is NodeMode.WHOLE and info.pool.gpus_per_node == 8 and not info.pool.sharing
    assert info.pool.device_replicas == 0 and fits(info, GpuRequest(gpus=8))[0]


REGISTER = json.dumps([
    {"id": "GPU-aaa", "index": 0, "count": 10, "devmem": 24_000, "devcore": 100, "type": "NVIDIA-A10G",
     "mode": "hami-core", "health": True},
    {"id": "GPU-bbb", "index": 1, "count": 10, "devmem": 24_000, "devcore": 100, "type": "NVIDIA-A10G",
     "mode": "hami-core", "health": True},
])
HAMI_LABELS = {"nvidia.com/gpu.product": "NVIDIA-A10G", "gpu": "on"}


def test_a_hami_node_is_its_registered_gpus_shared() -> None:
    info = read(HAMI_LABELS, {"nvidia.com/gpu": "20"}, annotations={hami.REGISTER: REGISTER})
    assert info.mode is NodeMode.HAMI and info.pool.gpus_per_node == 2 and info.pool.sharing
    assert [device.uuid for device in info.hami_devices] == ["GPU-aaa", "GPU-bbb"]
    assert fits(info, GpuRequest(gpus=2))[0]  # HAMi gives a whole GPU as 100 % of its cores and memory
    legacy = gfd_node("old", HAMI_LABELS, {"nvidia.com/gpu": "20"}, {hami.REGISTER: "GPU-aaa,10,24000,100,NVIDIA:"})
    assert read_node(legacy, (), CATALOG) is None
    mig_mode = json.dumps([{**json.loads(REGISTER)[0], "mode": "mig"}])
    assert read_node(gfd_node("m", HAMI_LABELS, {"nvidia.com/gpu": "10"}, {hami.REGISTER: mig_mode}), (), CATALOG) is None


def test_hami_annotations_name_each_containers_devices_init_containers_first() -> None:
    devices = (hami.HamiDevice("GPU-aaa", 0, 24_000), hami.HamiDevice("GPU-bbb", 1, 24_000))
    whole = hami.pod_annotations("n-1", devices, (Grant(1), Grant(0)), GpuRequest(gpus=2), ((0,), (2, 0)), 1_700_000_000.7)
    assert whole[hami.TO_ALLOCATE] == ";GPU-bbb,NVIDIA,24000,100:GPU-aaa,NVIDIA,24000,100:;;"
    assert whole[hami.ALLOCATED] == whole[hami.TO_ALLOCATE]
    assert (whole[hami.NODE], whole[hami.TIME], whole[hami.BIND_TIME], whole[hami.BIND_PHASE]) == (
        "n-1", "1700000000", "1700000000", "allocating")  # fmt: skip
    share = GpuRequest(kind=RequestKind.SHARE, milli=333, memory_mib=0)
    assert hami.pod_annotations("n-1", devices, (Grant(0),), share, ((1,), (1,)), 0)[hami.TO_ALLOCATE] == (
        "GPU-aaa,NVIDIA,7992,34:;GPU-aaa,NVIDIA,7992,34:;")  # fmt: skip


def test_the_readme_states_what_each_mode_enforces() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert promises_table() in readme
    assert all(f"| {mode.value} |" in promises_table() for mode in NodeMode)


def scheduler_configs() -> list[dict[str, Any]]:
    """Every KubeSchedulerConfiguration in deploy/manifests, the config map's included."""
    found = []
    for path in sorted((ROOT / "deploy" / "manifests").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not document:
                continue
            embedded = [yaml.safe_load(text) for text in (document.get("data") or {}).values() if "extenders:" in text]
            found += [d for d in [document, *embedded] if d.get("kind") == "KubeSchedulerConfiguration"]
    return found


def test_the_manifests_manage_every_resource_pods_ask_for() -> None:
    wanted = managed_resources(CATALOG)
    assert {"nvidia.com/gpu", "nvidia.com/mig-1g.10gb", "nvidia.com/mig-7g.141gb", "nvidia.com/mig-1g.5gb.me"} <= set(wanted)
    configs = scheduler_configs()
    assert len(configs) >= 2
    for config in configs:
        for entry in config["extenders"]:
            assert [resource["name"] for resource in entry["managedResources"]] == list(wanted)
            assert not any(resource["ignoredByScheduler"] for resource in entry["managedResources"])


def test_unknown_fleetsched_annotations_are_found_with_what_was_meant() -> None:
    found = unknown_annotations({
        "fleetsched.io/checkpoint-intervall": "60", "fleetsched.io/checkpoint-interval-s": "60",
        "fleetsched.io/team": "ml", "fleetsched.io/gpus": "0", "example.com/other": "x", "fleetsched.io/zzz": "1",
    })
    assert found[0] == ("annotation fleetsched.io/checkpoint-intervall is not one fleetsched reads; "
                        "did you mean fleetsched.io/checkpoint-interval-s?")
    assert found[1] == "annotation fleetsched.io/team is read as a label only; set it under metadata.labels"
    assert found[2].startswith("annotation fleetsched.io/zzz is not one fleetsched reads; known: ")
    assert len(found) == 3
    assert unknown_annotations({"fleetsched.io/gpu-milli": "1", "fleetsched.io/gang-size": "2"}) == []


class FakeEvents:
    def __init__(self, fail: bool = False) -> None:
        self.posted: list[tuple[str, dict[str, str], str, str]] = []
        self.fail = fail

    def post_event(self, namespace: str, involved_object: Mapping[str, str], reason: str, message: str) -> None:
        if self.fail:
            raise OSError("API server away")
        self.posted.append((namespace, dict(involved_object), reason, message))


def test_unknown_annotations_are_reported_once_per_pod_uid_from_the_view() -> None:
    typo = pod("typo", annotations={"fleetsched.io/checkpoint-intervall": "60"})
    _, view, _ = extender([gfd_node("n-1", {"nvidia.com/gpu.product": "NVIDIA-A10G"}, {"nvidia.com/gpu": "1"})],
                          [typo, pod("fine")])
    events = FakeEvents()
    view.on_pod_read = AnnotationReporter(events, background=False).check
    view.view()
    view.view()
    changed = {**typo, "metadata": {**typo["metadata"], "labels": {"fleetsched.io/team": "ml"}}}
    view.apply("pod", "MODIFIED", changed)  # a new object of the same pod: read again, not reported again
    view.view()
    assert len(events.posted) == 1
    namespace, involved, reason, message = events.posted[0]
    assert (namespace, reason) == ("ml", REASON)
    assert involved == {"apiVersion": "v1", "kind": "Pod", "namespace": "ml", "name": "typo", "uid": "uid-typo"}
    assert "did you mean fleetsched.io/checkpoint-interval-s?" in message


def test_an_event_that_cannot_be_posted_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    reporter = AnnotationReporter(FakeEvents(fail=True), background=False)
    with caplog.at_level(logging.WARNING):
        reporter.check(pod("typo", annotations={"fleetsched.io/gang-sise": "2"}))
    assert "could not be posted: API server away" in caplog.text


class FakeRest:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.requests.append((method, path, body))
        return {}


def test_post_event_creates_a_warning_event_on_the_object() -> None:
    rest = FakeRest()
    involved = {"apiVersion": "v1", "kind": "Pod", "namespace": "ml", "name": "p", "uid": "u-1"}
    RestApi(rest).post_event("ml", involved, "UnknownAnnotation", "annotation x is not read")  # type: ignore[arg-type]
    [(method, path, body)] = rest.requests
    assert (method, path) == ("POST", "/api/v1/namespaces/ml/events")
    assert body["involvedObject"] == involved and body["type"] == "Warning" and body["reason"] == "UnknownAnnotation"
    assert body["metadata"] == {"generateName": "p.", "namespace": "ml"} and body["message"] == "annotation x is not read"


def test_a_pool_without_device_replicas_still_gives_whole_gpus() -> None:
    pool = Pool(name="p", gpu=CATALOG.resolve("A10G"), gpus_per_node=1, sharing=True)
    node = Node(name="n", pool="p", gpus=(empty_node(pool, "n").gpus[0],))
    assert capacity.find_grants(pool, node, GpuRequest(gpus=1)) == (Grant(0),)


def test_events_are_posted_from_a_thread_of_their_own() -> None:
    events = FakeEvents()
    reporter = AnnotationReporter(events)
    reporter.check(pod("a", annotations={"fleetsched.io/gpu": "1"}))
    reporter.check(pod("b", annotations={"fleetsched.io/gpu-milli": "100"}))
    assert wait_until(lambda: len(events.posted) == 1, 5.0)
    assert "did you mean fleetsched.io/gpus?" in events.posted[0][3] and events.posted[0][1]["name"] == "a"
