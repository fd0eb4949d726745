"""The cycle's state: trials that keep or roll back the snapshot and the class index together,
and the index's running counts (nodes per pool, free room, nodes become ready) against a recount."""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

import policies
from scheduler import capacity
from scheduler.capacity import Room
from scheduler.classes import NodeClasses
from scheduler.framework import Framework
from scheduler.model import ClusterSnapshot, Grant, Node, Placement, ReplicaPlacement, empty_node
from tests.builders import make_job, make_pool, make_snapshot, share, whole

FRAMEWORK = Framework(policies.profile("binpack"))


def classes_of(index: NodeClasses) -> list[tuple[Hashable, list[str]]]:
    """The index's classes in its own order, by signature."""
    return [(c.key, list(c.members)) for c in index.classes]


def recounted(index: NodeClasses, snapshot: ClusterSnapshot) -> dict[str, Room]:
    rooms: dict[str, Room] = {}
    for node in index.nodes.values():
        rooms.setdefault(node.pool, Room()).add(capacity.node_room(snapshot.pools[node.pool], node))
    return {pool: room for pool, room in rooms.items() if room}


def placed(job_id: str, node: str, *gpus: int) -> Placement:
    return Placement(make_job(job_id, whole(len(gpus))), (ReplicaPlacement(node, tuple(Grant(g) for g in gpus)),))


def test_a_trial_not_kept_leaves_snapshot_and_index_as_they_were() -> None:
    snapshot = make_snapshot(make_pool(nodes=3))
    state = FRAMEWORK.state(snapshot)
    before = classes_of(state.classes)
    with state.trial():
        state.assume(placed("a", "pool-0", 0, 1))
        assert "a" in state.snapshot.running  # read inside: folded into the snapshot
        assert classes_of(state.classes) != before
    assert state.snapshot is snapshot and "a" not in state.snapshot.running
    assert classes_of(state.classes) == before


def test_kept_trials_nest_and_an_outer_rollback_undoes_the_inner_ones() -> None:
    snapshot = make_snapshot(make_pool(nodes=2))
    state = FRAMEWORK.state(snapshot)
    with state.trial():
        with state.trial() as inner:
            state.assume(placed("a", "pool-0", 0))
            inner.keep()
        assert "a" in state.snapshot.running
        with state.trial():
            state.assume(placed("b", "pool-1", 0))
        assert "b" not in state.snapshot.running and "a" in state.snapshot.running
    assert not state.snapshot.running
    assert [c.members for c in state.classes.classes] == [["pool-0", "pool-1"]]


def test_a_release_inside_a_trial_comes_back() -> None:
    snapshot = make_snapshot(make_pool(nodes=1)).assume(placed("low", "pool-0", 0, 1, 2, 3, 4, 5, 6, 7))
    state = FRAMEWORK.state(snapshot)
    with state.trial():
        state.release("low")
        assert all(gpu.free for gpu in state.classes.nodes["pool-0"].gpus)
    assert "low" in state.snapshot.running
    assert not any(gpu.free for gpu in state.classes.nodes["pool-0"].gpus)


def test_by_name_rollback_restores_each_node_once_in_name_order() -> None:
    snapshot = make_snapshot(make_pool(nodes=3))
    state = FRAMEWORK.state(snapshot)
    restored: list[str] = []
    update = state.classes.update

    def spy(node: Node) -> None:
        restored.append(node.name)
        update(node)

    with state.trial(by_name=True):
        state.assume(placed("a", "pool-2", 0))
        state.assume(placed("b", "pool-0", 0))
        state.assume(placed("c", "pool-2", 1))
        state.classes.update = spy  # type: ignore[method-assign]
    assert restored == ["pool-0", "pool-2"]


NODE_CHANGES = st.lists(st.tuples(st.integers(0, 5), st.integers(0, 8), st.booleans()), max_size=40)


@settings(max_examples=60, deadline=None)
@given(NODE_CHANGES)
def test_the_index_keeps_pool_sizes_free_room_and_readiness_as_a_recount_finds_them(
    changes: list[tuple[int, int, bool]],
) -> None:
    """Random nodes join, fill, empty, turn ready or not and leave; after each sync the running
    counts equal a count from scratch."""
    plain, shared = make_pool("plain", nodes=0, max_nodes=6), make_pool("t4", gpu="T4", nodes=0, sharing=True)
    snapshot = make_snapshot(plain, shared)
    index = FRAMEWORK.new_index()
    index.sync(snapshot)
    became = 0
    for number, used, ready in changes:
        pool = plain if number % 2 else shared
        name = f"n{number}"
        old = snapshot.nodes.get(name)
        if used == 8 and old is not None:
            snapshot = snapshot.without_node(name) if not any(g.busy for g in old.gpus) else snapshot
        else:
            node = empty_node(pool, name)
            if pool.sharing:
                gpus = tuple(node.grant(pool, make_job(f"s{i}", share(100 * used + 1)), (Grant(i),)).gpus[i]
                             for i in range(len(node.gpus)))  # fmt: skip
            else:
                gpus = tuple(node.gpus[i] if i >= used else node.grant(pool, make_job("w"), (Grant(i),)).gpus[i]
                             for i in range(len(node.gpus)))  # fmt: skip
            made = Node(name=name, pool=pool.name, gpus=gpus, ready=ready)
            became += ready and (old is None or not old.ready)
            snapshot = ClusterSnapshot(snapshot.pools, {**snapshot.nodes, name: made}, snapshot.running)
        index.sync(snapshot)
        sizes = {p: sum(n.pool == p for n in snapshot.nodes.values()) for p in snapshot.pools}
        assert {p: n for p, n in index.pool_sizes().items() if n} == {p: n for p, n in sizes.items() if n}
        assert {p: r for p, r in index.free_rooms().items() if r} == recounted(index, snapshot)
        assert index.became_ready == became
