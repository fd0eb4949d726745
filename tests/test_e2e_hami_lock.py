"""HAMi's node lock against a real kube-apiserver: the resourceVersion guard refuses the second
of two writers with 409, and a binding on a HAMi node takes the lock, binds with HAMi's pod
annotations and leaves the lock; a binding the API server refuses releases it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from extender import hami
from extender.kubeapi import ApiError, RestApi
from extender.wire import BindingArgs
from extender.world import SystemClock
from tests.e2e.controlplane import ControlPlane, add_node, add_pod, control_plane, node_of


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with control_plane() as started:
        add_node(started.rest, "hami-1", {"gpu": "on"}, {"nvidia.com/gpu": "20"})
        yield started


def lock_of(api: RestApi) -> str | None:
    value = (api.get_node("hami-1")["metadata"].get("annotations") or {}).get(hami.LOCK)
    return None if value is None else str(value)


def test_a_write_at_an_old_resource_version_is_refused_and_a_null_removes_the_annotation(plane: ControlPlane) -> None:
    api = RestApi(plane.rest)
    version = str(api.get_node("hami-1")["metadata"]["resourceVersion"])
    api.patch_node_annotations("hami-1", {hami.LOCK: "2026-11-27T04:00:00Z,ml,first"}, version)
    with pytest.raises(hami.Conflict):  # a second binder that read the same version
        api.patch_node_annotations("hami-1", {hami.LOCK: "2026-11-27T04:00:00Z,ml,second"}, version)
    assert lock_of(api) == "2026-11-27T04:00:00Z,ml,first"
    assert hami.release_lock(api, "hami-1", ("ml", "first")) and lock_of(api) is None
    assert not api.pod_exists("ml", "first")


def test_a_binding_on_a_hami_node_leaves_the_lock_and_a_refused_one_releases_it(plane: ControlPlane) -> None:
    api = RestApi(plane.rest)
    pod = add_pod(plane.rest, "hami-pod", {"nvidia.com/gpu": "1"})
    uid = str(pod["metadata"]["uid"])
    annotations = {hami.NODE: "hami-1", hami.TO_ALLOCATE: "GPU-aaa,NVIDIA,8000,50:;", hami.BIND_PHASE: "allocating"}
    with pytest.raises(ApiError, match="HTTP 404"):  # the pod is gone: the API server refuses the Binding
        hami.bind_pod(api, SystemClock(), BindingArgs("gone-pod", "ml", "uid-gone", "hami-1"), annotations)
    assert lock_of(api) is None and node_of(plane.rest, "hami-pod") == ""
    hami.bind_pod(api, SystemClock(), BindingArgs("hami-pod", "ml", uid, "hami-1"), annotations)
    lock = lock_of(api)
    assert lock is not None and lock.endswith(",ml,hami-pod") and node_of(plane.rest, "hami-pod") == "hami-1"
    bound = plane.rest.request("GET", "/api/v1/namespaces/ml/pods/hami-pod")["metadata"]["annotations"]
    assert bound[hami.TO_ALLOCATE] == "GPU-aaa,NVIDIA,8000,50:;" and bound[hami.BIND_PHASE] == "allocating"
