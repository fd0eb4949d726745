"""HAMi's node lock at bind: taken with a resourceVersion-guarded write, left for HAMi's device
plugin on success, waited for and then refused while another pod holds it, taken over when
expired or orphaned, released when the binding fails."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from extender import hami
from extender.kubeapi import ApiError, RestApi
from extender.state import GPUS, ClusterView
from extender.verbs import GpuExtender
from extender.wire import BindingArgs, ExtenderArgs
from tests.test_k8s_extender import NOW, FakeApi, FakeClock, extender, pod
from tests.test_k8s_node_modes import HAMI_LABELS, REGISTER, gfd_node

OWN = "2026-11-27T04:00:00Z,ml,s"  # the lock as HAMi writes it, for pod ml/s at NOW


class LockingApi(FakeApi):
    """FakeApi plus nodes as the API server keeps them: a resourceVersion bumped by every write,
    a merge patch refused (409, hami.Conflict) unless it names the current version."""

    def __init__(self, view: ClusterView, nodes: list[dict[str, Any]]) -> None:
        super().__init__(view)
        self.nodes = {str(n["metadata"]["name"]): copy.deepcopy(n) for n in nodes}
        for number, node in enumerate(self.nodes.values()):
            node["metadata"]["resourceVersion"] = str(100 + number)
        self.pods = {"ml/s", "ml/w", "ml/rival"}
        self.pods_asked: list[str] = []
        self.patches: list[tuple[str, dict[str, str | None], str]] = []
        self.before_patch: Callable[[str], None] = lambda name: None
        self.bind_error: Exception | None = None

    def get_node(self, name: str, *, timeout_s: float) -> Mapping[str, Any]:
        if name not in self.nodes:
            raise ApiError(404, f"nodes {name!r} not found")
        return copy.deepcopy(self.nodes[name])

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None], resource_version: str, *,
                               timeout_s: float) -> None:  # fmt: skip
        self.before_patch(name)
        self.patches.append((name, dict(annotations), resource_version))
        metadata = self.nodes[name]["metadata"]
        if resource_version != metadata["resourceVersion"]:
            raise hami.Conflict(f"node {name} changed")
        self.write(name, annotations)

    def write(self, name: str, annotations: Mapping[str, str | None]) -> None:
        """A write by anyone: the node's annotations merged, its version bumped."""
        metadata = self.nodes[name]["metadata"]
        merged = {**metadata.get("annotations", {}), **annotations}
        metadata["annotations"] = {key: value for key, value in merged.items() if value is not None}
        metadata["resourceVersion"] = str(int(metadata["resourceVersion"]) + 1)

    def pod_exists(self, namespace: str, name: str, *, timeout_s: float) -> bool:
        self.pods_asked.append(f"{namespace}/{name}")
        return f"{namespace}/{name}" in self.pods

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float) -> None:  # fmt: skip
        if self.bind_error is not None:
            raise self.bind_error
        super().bind_pod(namespace, name, uid, node, annotations, timeout_s=timeout_s)

    def lock(self, node: str = "hami-1") -> str | None:
        value = self.nodes[node]["metadata"].get("annotations", {}).get(hami.LOCK)
        return None if value is None else str(value)


SHARE = pod("s", annotations={"fleetsched.io/gpu-milli": "500", "fleetsched.io/gpu-memory-mib": "8000"})


def hami_extender(lock: str | None = None) -> tuple[GpuExtender, LockingApi]:
    """An extender over HAMi node hami-1 (holding `lock` when given), plain node plain-1, and
    pods s (a half-GPU share) and w (one GPU); s is filtered onto hami-1."""
    annotations = {hami.REGISTER: REGISTER, **({hami.LOCK: lock} if lock is not None else {})}
    nodes = [gfd_node("hami-1", HAMI_LABELS, {"nvidia.com/gpu": "20"}, annotations),
             gfd_node("plain-1", {"nvidia.com/gpu.product": "NVIDIA-A10G"}, {"nvidia.com/gpu": "1"})]
    verbs, view, _ = extender(nodes, [SHARE, pod("w")])
    api = LockingApi(view, nodes)
    verbs.api = api
    assert verbs.filter(ExtenderArgs(SHARE, ("hami-1",))).node_names == ("hami-1",)
    return verbs, api


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> hami.LockTiming:
    """A short wait for a held lock, so that giving up takes 0.2 s rather than 3."""
    timing = hami.LockTiming(wait_s=0.2, retry_s=0.01)
    monkeypatch.setattr(hami, "TIMING", timing)
    return timing


def test_binding_on_a_hami_node_writes_hamis_annotations_under_its_lock_and_leaves_the_lock() -> None:
    verbs, api = hami_extender()
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == ""
    assert api.patches == [("hami-1", {hami.LOCK: OWN}, "100")]
    assert api.lock() == OWN  # HAMi's device plugin releases it after Allocate
    written = api.annotations["ml/s"]
    assert written[hami.TO_ALLOCATE] == f"{('GPU-aaa', 'GPU-bbb')[int(written[GPUS])]},NVIDIA,8000,50:;"
    assert written[hami.NODE] == "hami-1" and written[hami.BIND_PHASE] == "allocating"
    assert api.bound["ml/s"] == "hami-1"
    assert verbs.filter(ExtenderArgs(pod("w"), ("plain-1",))).node_names == ("plain-1",)
    assert verbs.bind(BindingArgs("w", "ml", "uid-w", "plain-1")) == ""
    assert api.annotations["ml/w"] == {GPUS: "0"}  # NVIDIA's device plugin: nothing to tell it, no lock
    assert len(api.patches) == 1 and hami.LOCK not in api.nodes["plain-1"]["metadata"]["annotations"]


def test_a_rival_binder_that_wins_the_write_makes_the_binding_wait_then_fail_cleanly(quick: hami.LockTiming) -> None:
    verbs, api = hami_extender()
    rival = "2026-11-27T04:00:00Z,ml,rival"
    api.before_patch = lambda name: api.write(name, {hami.LOCK: rival}) if api.lock(name) is None else None
    answer = verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1"))
    assert answer.startswith(f"binding failed: node hami-1 is locked by HAMi ({hami.LOCK}={rival})")
    assert answer.endswith(f"gave up after {quick.wait_s:g} s")
    assert api.patches == [("hami-1", {hami.LOCK: OWN}, "100")]  # refused: the rival's write came first
    assert api.lock() == rival and "ml/s" not in api.bound  # the rival's lock is not ours to release
    assert api.pods_asked == ["ml/rival"]  # once per holder, however long the wait
    # The GPUs held for the binding are free again: once the rival's pod is allocated, s binds.
    api.before_patch = lambda name: None
    api.write("hami-1", {hami.LOCK: None})
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "" and api.lock() == OWN


def test_a_node_changed_between_read_and_write_is_read_again() -> None:
    verbs, api = hami_extender()
    changes = [{"heartbeat": "1"}, {"heartbeat": "2"}]
    api.before_patch = lambda name: api.write(name, changes.pop(0)) if changes else None
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == ""
    assert [version for _, _, version in api.patches] == ["100", "101", "102"]
    assert api.lock() == OWN and api.bound["ml/s"] == "hami-1"


def test_a_node_that_keeps_changing_fails_the_binding_with_the_conflict_named(quick: hami.LockTiming) -> None:
    verbs, api = hami_extender()
    api.before_patch = lambda name: api.write(name, {"heartbeat": str(len(api.patches))})
    answer = verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1"))
    assert answer == f"binding failed: node hami-1: HAMi's lock {hami.LOCK} kept changing under this binding " \
                     f"(409 Conflict); gave up after {quick.wait_s:g} s"
    assert len(api.patches) > 2 and api.lock() is None and "ml/s" not in api.bound


def test_a_lock_older_than_hamis_expiry_is_taken_over() -> None:
    verbs, api = hami_extender(lock="2026-11-27T03:54:59Z,ml,rival")  # 5 min 1 s before NOW
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == ""
    assert api.patches == [("hami-1", {hami.LOCK: OWN}, "100")] and api.lock() == OWN


def test_a_live_lock_of_a_pod_that_is_gone_is_taken_over_and_a_live_one_is_not(quick: hami.LockTiming) -> None:
    verbs, api = hami_extender(lock="2026-11-27T03:56:00Z,ml,deleted")
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "" and api.lock() == OWN
    live = "2026-11-27T03:55:01Z,ml,rival"  # 4 min 59 s old, its pod still there
    verbs, api = hami_extender(lock=live)
    assert "is locked by HAMi" in verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1"))
    assert api.patches == [] and api.lock() == live


def test_a_failed_binding_releases_the_lock_and_frees_the_gpus() -> None:
    verbs, api = hami_extender()
    api.bind_error = ApiError(500, "etcd timed out")
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "binding failed: HTTP 500: etcd timed out"
    assert [(lock, version) for _, lock, version in api.patches] == [({hami.LOCK: OWN}, "100"), ({hami.LOCK: None}, "101")]
    assert api.lock() is None and "ml/s" not in api.annotations  # the annotations travel with the Binding
    api.bind_error = None
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "" and api.lock() == OWN


def test_a_retried_binding_keeps_the_lock_it_still_holds_and_releases_one_taken_again() -> None:
    verbs, api = hami_extender(lock=OWN)  # bound here before, not yet allocated: the lock is ours
    api.bound["ml/s"] = "hami-1"
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == ""
    assert api.patches == [] and api.lock() == OWN
    verbs, api = hami_extender()  # bound here and allocated: the device plugin released the lock
    api.bound["ml/s"] = "hami-1"
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "" and api.lock() is None
    verbs, api = hami_extender(lock=OWN)
    api.bound["ml/s"] = "other"  # bound elsewhere: this node's lock is not needed
    assert verbs.bind(BindingArgs("s", "ml", "uid-s", "hami-1")) == "pod is bound to other already"
    assert api.lock() is None


def test_release_touches_only_its_own_lock_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    _, api = hami_extender(lock="2026-11-27T04:00:00Z,ml,rival")
    assert hami.release_lock(api, "hami-1", ("ml", "s")) and api.lock() == "2026-11-27T04:00:00Z,ml,rival"
    with caplog.at_level("WARNING"):
        assert not hami.release_lock(api, "gone", ("ml", "s"))
    assert "releasing HAMi's lock for ml/s failed: HTTP 404" in caplog.text


def test_lock_values_are_hamis_and_a_malformed_one_is_named() -> None:
    assert hami.lock_value(NOW, ("ml", "s")) == OWN
    assert hami.parse_lock("n", OWN) == (NOW, ("ml", "s"))
    assert hami.parse_lock("n", "2026-11-27T12:00:00+08:00") == (NOW, None)  # HAMi's legacy form, local time
    with pytest.raises(hami.NodeLocked, match=r"node n: annotation hami.io/mutex.lock='yesterday,ml' is not HAMi's lock"):
        hami.parse_lock("n", "yesterday,ml")
    with pytest.raises(hami.NodeLocked, match="Invalid isoformat string"):
        hami.parse_lock("n", "yesterday,ml,s")


def test_bind_pod_leaves_nodes_alone_without_hamis_annotations() -> None:
    class BindOnly:
        def __init__(self) -> None:
            self.bound: list[str] = []

        def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                     timeout_s: float) -> None:  # fmt: skip
            self.bound.append(f"{namespace}/{name}@{node}")

    api = BindOnly()
    hami.bind_pod(api, FakeClock(NOW), BindingArgs("w", "ml", "uid-w", "plain-1"), {"fleetsched.io/gpus": "0"})  # type: ignore[arg-type]
    assert api.bound == ["ml/w@plain-1"]


class FakeRest:
    def __init__(self, answers: Mapping[str, ApiError | None] | None = None) -> None:
        self.requests: list[tuple[str, str, Any, str]] = []
        self.answers = dict(answers or {})

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                **_: Any) -> Any:
        self.requests.append((method, path, body, content_type))
        error = self.answers.get(method)
        if error is not None:
            raise error
        return {"metadata": {"name": path.rsplit("/", 1)[-1]}}


def test_rest_api_patches_node_annotations_with_its_resource_version() -> None:
    rest = FakeRest()
    api = RestApi(rest)  # type: ignore[arg-type]
    assert api.get_node("n-1")["metadata"]["name"] == "n-1"
    api.patch_node_annotations("n-1", {hami.LOCK: None}, "42")
    assert rest.requests[1] == ("PATCH", "/api/v1/nodes/n-1", {"metadata": {"resourceVersion": "42",
                                "annotations": {hami.LOCK: None}}}, "application/merge-patch+json")  # fmt: skip
    assert api.pod_exists("ml", "s") and rest.requests[2][:2] == ("GET", "/api/v1/namespaces/ml/pods/s")


def test_rest_api_answers_409_as_a_conflict_and_404_as_no_pod() -> None:
    api = RestApi(FakeRest({"PATCH": ApiError(409, "the object has been modified")}))  # type: ignore[arg-type]
    with pytest.raises(hami.Conflict, match="node n-1 is no longer at resourceVersion 42"):
        api.patch_node_annotations("n-1", {hami.LOCK: OWN}, "42")
    assert not RestApi(FakeRest({"GET": ApiError(404, "not found")})).pod_exists("ml", "s")  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        RestApi(FakeRest({"GET": ApiError(403, "forbidden")})).pod_exists("ml", "s")  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        RestApi(FakeRest({"PATCH": ApiError(403, "forbidden")})).patch_node_annotations("n", {}, "1")  # type: ignore[arg-type]

