"""The cluster model: GPU state transitions, snapshots, assume and release."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.model import (
    AllocationError,
    Capacity,
    GpuRequest,
    Grant,
    MigMode,
    Placement,
    ReplicaPlacement,
    RequestKind,
    empty_node,
)
from scheduler.persistent import LayeredMap
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole


def test_request_rules() -> None:
    assert whole(2).describe() == "2 GPUs"
    assert whole(1).describe() == "1 GPU"
    assert share(300, 8).describe() == "300m+8192MiB"
    assert mig_request("3g.40gb", 2).describe() == "2 x 3g.40gb"
    with pytest.raises(ValueError, match="at least one"):
        GpuRequest(gpus=0)
    with pytest.raises(ValueError, match="share"):
        GpuRequest(kind=RequestKind.SHARE, gpus=2, milli=500)
    with pytest.raises(ValueError, match="profile"):
        GpuRequest(kind=RequestKind.WHOLE, mig_profile="1g.10gb")
    with pytest.raises(ValueError, match="profile"):
        GpuRequest(kind=RequestKind.MIG)


def test_pool_derived_values() -> None:
    pool = make_pool(usd_per_node_hour=80.0, gpus_per_node=8)
    assert pool.usd_per_gpu_hour == 10.0
    assert not pool.elastic
    assert make_pool(capacity=Capacity.SPOT).capacity == "spot"


def test_whole_gpu_grant_and_release() -> None:
    pool = make_pool()
    node = empty_node(pool, "n")
    job = make_job("a", whole(2))
    taken = node.grant(pool, job, (Grant(0), Grant(3)))
    assert [gpu.owner for gpu in taken.gpus] == ["a", None, None, "a", None, None, None, None]
    with pytest.raises(AllocationError, match="already in use by a"):
        taken.grant(pool, make_job("b"), (Grant(3),))
    with pytest.raises(AllocationError, match="no GPU 9"):
        node.grant(pool, job, (Grant(9),))
    assert taken.without(pool, "a") == node


def test_shares_are_capped_by_compute_and_memory() -> None:
    pool = make_pool(gpu="T4", gpus_per_node=1, sharing=True)
    node = empty_node(pool, "n")
    node = node.grant(pool, make_job("a", share(600, 10)), (Grant(0),))
    node = node.grant(pool, make_job("b", share(400, 6)), (Grant(0),))
    assert node.gpus[0].used_milli == 1000 and node.gpus[0].used_memory_mib == 16 * 1024
    with pytest.raises(AllocationError, match="compute over-allocated"):
        node.grant(pool, make_job("c", share(1)), (Grant(0),))
    freed = node.without(pool, "a")
    with pytest.raises(AllocationError, match="memory over-allocated"):
        freed.grant(pool, make_job("c", share(100, 11)), (Grant(0),))
    with pytest.raises(AllocationError, match="held whole"):
        empty_node(pool, "m").grant(pool, make_job("w"), (Grant(0),)).grant(pool, make_job("c", share(1)), (Grant(0),))


def test_shares_need_a_sharing_pool_and_whole_gpus_need_mig_off() -> None:
    plain = make_pool()
    with pytest.raises(AllocationError, match="does not share"):
        empty_node(plain, "n").grant(plain, make_job("a", share(100)), (Grant(0),))
    migged = make_pool(mig_mode=MigMode.DYNAMIC)
    with pytest.raises(AllocationError, match="MIG mode"):
        empty_node(migged, "n").grant(migged, make_job("a"), (Grant(0),))
    with pytest.raises(AllocationError, match="does not run MIG"):
        empty_node(plain, "n").grant(plain, make_job("a", mig_request("1g.10gb")), (Grant(0, 0),))


def test_dynamic_mig_creates_and_destroys_instances() -> None:
    pool = make_pool(gpu="A100-40GB", mig_mode=MigMode.DYNAMIC)
    node = empty_node(pool, "n")
    node = node.grant(pool, make_job("a", mig_request("4g.20gb")), (Grant(0, 0),))
    node = node.grant(pool, make_job("b", mig_request("3g.20gb")), (Grant(0, 4),))
    assert [str(slot.instance) for slot in node.gpus[0].mig] == ["4g.20gb@0", "3g.20gb@4"]
    with pytest.raises(AllocationError, match=r"cannot create 1g\.5gb@6"):
        node.grant(pool, make_job("c", mig_request("1g.5gb")), (Grant(0, 6),))
    assert node.without(pool, "a").gpus[0].layout == node.gpus[0].layout[1:]
    assert node.without(pool, "a").without(pool, "b") == empty_node(pool, "n")


def test_fixed_mig_layout_occupies_and_frees_slots() -> None:
    pool = make_pool(gpu="H100-80GB", mig_layout="3g.40gb@0,3g.40gb@4")
    node = empty_node(pool, "n")
    assert all(slot.job is None for slot in node.gpus[0].mig)
    taken = node.grant(pool, make_job("a", mig_request("3g.40gb")), (Grant(0, 4),))
    assert [slot.job for slot in taken.gpus[0].mig] == [None, "a"]
    with pytest.raises(AllocationError, match="already held by a"):
        taken.grant(pool, make_job("b", mig_request("3g.40gb")), (Grant(0, 4),))
    with pytest.raises(AllocationError, match=r"no free 1g\.10gb@0 in the fixed layout"):
        taken.grant(pool, make_job("b", mig_request("1g.10gb")), (Grant(0, 0),))
    assert taken.without(pool, "a") == node


def test_snapshot_assume_and_release_leave_the_original_untouched() -> None:
    pool = make_pool(nodes=2)
    snapshot = make_snapshot(pool)
    job = make_job("gang", whole(8), replicas=2)
    placement = Placement(job, (ReplicaPlacement("pool-0", tuple(map(Grant, range(8)))),
                                ReplicaPlacement("pool-1", tuple(map(Grant, range(8))))))
    after = snapshot.assume(placement, start_s=5.0)
    assert after.running["gang"].start_s == 5.0
    assert all(gpu.owner == "gang" for node in after.nodes.values() for gpu in node.gpus)
    assert all(gpu.free for node in snapshot.nodes.values() for gpu in node.gpus)
    with pytest.raises(AllocationError, match="already running"):
        after.assume(placement)
    back = after.release("gang")
    assert dict(back.nodes) == dict(snapshot.nodes) and not back.running
    with pytest.raises(AllocationError, match="not running"):
        back.release("gang")
    with pytest.raises(AllocationError, match="no node nowhere"):
        snapshot.assume(Placement(make_job("x"), (ReplicaPlacement("nowhere", (Grant(0),)),)))


def test_a_node_that_is_not_ready_takes_nothing() -> None:
    pool = make_pool(nodes=0)
    node = empty_node(pool, "n")
    snapshot = make_snapshot(pool, nodes=[type(node)(name="n", pool=pool.name, gpus=node.gpus, ready=False)])
    with pytest.raises(AllocationError, match="not ready"):
        snapshot.assume(Placement(make_job("x"), (ReplicaPlacement("n", (Grant(0),)),)))


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 300), st.integers()), max_size=400),
       st.integers(0, 300))
def test_layered_map_behaves_like_a_dict(operations: list[tuple[bool, int, int]], size: int) -> None:
    expected = {key: key for key in range(size)}
    layered: LayeredMap[int, int] = LayeredMap(expected)
    history = []
    for remove, key, value in operations:
        if remove and key in expected:
            del expected[key]
            layered = layered.removed(key)
        elif not remove:
            expected[key] = value
            layered = layered.updated({key: value})
        history.append((layered, dict(expected)))
    for snapshot, wanted in history:
        assert dict(snapshot.items()) == wanted
        assert len(snapshot) == len(wanted)
        assert sorted(snapshot) == sorted(wanted) and all(key in snapshot for key in wanted)
    with pytest.raises(KeyError):
        layered.removed(-1)
    with pytest.raises(KeyError):
        layered[-1]
    assert -1 not in layered and "LayeredMap" in repr(LayeredMap({1: 2}))


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40)), max_size=120), st.integers(0, 40))
def test_changed_keys_are_exactly_the_keys_whose_values_differ(operations: list[tuple[bool, int]], size: int) -> None:
    """Between any two versions that grew from one base, `changed_keys` names every key whose
    value (by identity) or presence differs, and no other; across bases it does not know."""
    layered: LayeredMap[int, object] = LayeredMap({key: object() for key in range(size)})
    versions = [layered]
    for remove, key in operations:
        layered = layered.removed(key) if remove and key in layered else layered.updated({key: object()})
        versions.append(layered)
    for older, newer in zip(versions, versions[1:] + versions[:1], strict=True):
        changed = newer.changed_keys(older)
        if changed is None:
            assert newer._base is not older._base
            continue
        keys = set(newer) | set(older)
        assert changed == {key for key in keys if newer.get(key) is not older.get(key)}
