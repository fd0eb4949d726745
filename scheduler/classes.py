"""Node equivalence classes: the cluster's nodes grouped by what every filter and score can see.

kube-scheduler asks every filter about every node for every pod; on a 5,000-node cluster that
is most of a cycle. Two nodes of one pool whose GPUs are in the same state (the same
`capacity.signature`) get the same answer from every plugin (the plugin contract), so the
Framework asks once per class, on a representative, and the index keeps the classes current
as placements change nodes, touching only the node that changed.

`NodeClasses` is that index. Between cycles it is brought to the next snapshot by `sync`,
which looks only at the nodes the two snapshots do not share. Within a cycle a placer changes
it node by node (`update`), and undoes what a trial changed (`begin`, `undo`, `end`): the
journal records each node's state before its first change. It also keeps, as nodes change
class, the nodes per pool and, per pool, the free capacity of the ready ones (`free_rooms`,
what a waiting queue's bound reads each cycle), so neither is recounted node by node.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field

from scheduler import capacity
from scheduler.capacity import Room
from scheduler.model import ClusterSnapshot, Node, Pool
from scheduler.persistent import LayeredMap


@dataclass(slots=True)
class NodeClass:
    """Nodes alike in pool, readiness and GPU state; `members` sorted by name.

    `id` names the class's signature: the same id for the same signature in every cycle, so
    answers remembered for it stay valid while the signature means the same state.
    """

    id: int
    key: Hashable
    pool: str
    ready: bool
    members: list[str] = field(default_factory=list)


class ClassIds:
    """A number per class signature, the same for as long as the numbering lives."""

    def __init__(self) -> None:
        self._ids: dict[Hashable, int] = {}

    def __call__(self, key: Hashable) -> int:
        return self._ids.setdefault(key, len(self._ids))


_Journal = list[tuple[str, Node | None]]  # (node name, its state before the change; None: it was absent)


class NodeClasses:
    """The nodes of one cluster state grouped into equivalence classes, per pool."""

    def __init__(self, nodes: Iterable[Node] = (), ids: Callable[[Hashable], int] | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.by_pool: dict[str, dict[Hashable, NodeClass]] = {}
        self._class_of: dict[str, tuple[Hashable, ...]] = {}
        self.ids = ids or ClassIds()
        self._synced: object = None
        self._touched: set[str] = set()  # nodes changed since the last sync (a placer's work)
        self._journal: _Journal | None = None
        self._trials = 0
        self._sizes: dict[str, int] = {}
        self._pools: Mapping[str, Pool] | None = None
        self._rooms: dict[str, Room] = {}
        self.total_room = Room()  # every pool's `free_rooms` together, as of the last call
        self._room_of: dict[Hashable, Room] = {}  # a class signature's room (one node's)
        self._pool_of: dict[Hashable, str] = {}
        self._joined: dict[Hashable, int] = {}  # members each signature gained (lost, when < 0) since `_room`
        self.became_ready = 0  # how many times a node joined ready, or turned ready (it only grows)
        for node in sorted(nodes, key=lambda n: n.name):
            self.update(node)

    # Between cycles -------------------------------------------------------------------------

    def sync(self, snapshot: ClusterSnapshot) -> None:
        """Brings the index to `snapshot`'s nodes, touching only the nodes that changed."""
        if snapshot.pools is not self._pools:
            if self._pools is not None and dict(snapshot.pools) != dict(self._pools):
                self._recount()  # a pool changed what it is: every class's room is read again
            self._pools = snapshot.pools
        if snapshot.nodes is self._synced and not self._touched:
            return
        changed = snapshot.nodes.changed_keys(self._synced) if isinstance(snapshot.nodes, LayeredMap) else None
        self._synced = snapshot.nodes
        touched, self._touched = self._touched, set()
        if changed is not None:  # only the nodes the two snapshots do not share, or a placer touched
            self._sync_names(snapshot.nodes, changed | touched)
        else:
            self._sync_all(snapshot.nodes)

    def _sync_names(self, nodes: Mapping[str, Node], names: Iterable[str]) -> None:
        """Brings the named nodes, in name order, to their state in `nodes` (gone when absent)."""
        indexed = self.nodes
        for name in sorted(names):
            node = nodes.get(name)
            if node is None:
                if name in indexed:
                    self.remove(name)
            elif indexed.get(name) is not node:
                self.update(node)
        self._touched.clear()

    def _sync_all(self, nodes: Mapping[str, Node]) -> None:
        """Brings every node to its state in `nodes`, then removes the nodes not in it."""
        indexed = self.nodes
        for node in nodes.values():
            if indexed.get(node.name) is not node:
                self.update(node)
        self._touched.clear()
        if len(indexed) != len(nodes):  # every snapshot node is indexed now: extras have left
            for name in [name for name in indexed if name not in nodes]:
                self.remove(name)

    # Reading --------------------------------------------------------------------------------

    @property
    def classes(self) -> list[NodeClass]:
        """Every class, pool by pool."""
        return [node_class for by_key in self.by_pool.values() for node_class in by_key.values()]

    def representative(self, node_class: NodeClass) -> Node:
        return self.nodes[node_class.members[0]]

    def pool_sizes(self) -> Mapping[str, int]:
        """Nodes per pool, ready or not."""
        return self._sizes

    def free_rooms(self) -> Mapping[str, Room]:
        """Per pool, the free capacity of its ready nodes (read-only: copy a room to add to it).

        Kept up to date lazily: each class signature's room is read once, on a member, and
        added or taken away as many times as the signature gained or lost members since.
        """
        if self._pools is None:
            raise RuntimeError("free_rooms before the first sync: the index does not know the pools")
        for key, joined in self._joined.items():
            if joined:
                room = self._room_of.get(key)
                pool = self._pool_of[key]
                if room is None:
                    node = self.representative(self.by_pool[pool][key])  # it gained members: it has one
                    room = self._room_of[key] = capacity.node_room(self._pools[pool], node)
                pool_room = self._rooms.get(pool)
                if pool_room is None:
                    pool_room = self._rooms[pool] = Room()
                pool_room.add(room, joined)
                self.total_room.add(room, joined)
        self._joined.clear()
        return self._rooms

    def _recount(self) -> None:
        self._rooms, self._room_of, self.total_room = {}, {}, Room()
        self._joined = {key: len(c.members) for by_key in self.by_pool.values() for key, c in by_key.items()}

    # Changing -------------------------------------------------------------------------------

    def update(self, node: Node) -> None:
        """Records `node`'s new state, moving it to the class of its new signature."""
        name = node.name
        if self._journal is not None:
            self._journal.append((name, self.nodes.get(name)))
        self._touched.add(name)
        key = capacity.signature(node)
        old = self._class_of.get(name)
        self.nodes[name] = node
        if old == key:
            return
        if node.ready and (old is None or not old[1]):  # a signature is (pool, ready, GPU states)
            self.became_ready += 1
        by_key = self.by_pool.setdefault(node.pool, {})
        if old is not None:
            self._leave(by_key, old, name)
        else:
            self._sizes[node.pool] = self._sizes.get(node.pool, 0) + 1
        self._class_of[name] = key
        node_class = by_key.get(key)
        if node_class is None:
            node_class = by_key[key] = NodeClass(self.ids(key), key, node.pool, node.ready)
            self._pool_of.setdefault(key, node.pool)
        bisect.insort(node_class.members, name)
        self._joined[key] = self._joined.get(key, 0) + 1

    def remove(self, name: str) -> None:
        """Forgets a node that left the cluster."""
        self._record(name)
        self._touched.add(name)
        node = self.nodes.pop(name)
        self._leave(self.by_pool[node.pool], self._class_of.pop(name), name)
        self._sizes[node.pool] -= 1

    def _leave(self, by_key: dict[Hashable, NodeClass], key: Hashable, name: str) -> None:
        members = by_key[key].members
        members.pop(bisect.bisect_left(members, name))
        if not members:
            del by_key[key]
        self._joined[key] = self._joined.get(key, 0) - 1

    # Trials ---------------------------------------------------------------------------------

    def begin(self) -> int:
        """Starts recording changes (trials nest); returns the mark `undo` goes back to."""
        if self._journal is None:
            self._journal = []
        self._trials += 1
        return len(self._journal)

    def undo(self, mark: int, *, by_name: bool = False) -> None:
        """Puts every node changed since `mark` back as it was: newest change first, or (`by_name`)
        each node straight to its state at the mark, in name order.

        The two orders leave the same nodes but can create the classes that emptied in another
        order, and the batch placer states its model in class order: each caller keeps the order
        its decisions were measured with.
        """
        journal = self._journal
        if journal is None:
            raise RuntimeError("undo outside a trial")
        changes, self._journal = journal[mark:], None  # restoring is not itself recorded
        del journal[mark:]
        if by_name:
            first: dict[str, Node | None] = {}
            for name, before in changes:
                first.setdefault(name, before)
            changes = [(name, first[name]) for name in sorted(first, reverse=True)]
        for name, before in reversed(changes):
            if before is None:
                self.remove(name)
            else:
                self.update(before)
        self._journal = journal

    def end(self) -> None:
        """Ends the innermost trial; its changes stay (an outer trial may still undo them)."""
        self._trials -= 1
        if self._trials == 0:
            self._journal = None

    def _record(self, name: str) -> None:
        if self._journal is not None:
            self._journal.append((name, self.nodes.get(name)))
