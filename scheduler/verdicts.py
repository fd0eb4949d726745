"""What the Framework remembers: a class's verdict for a job shape, shapes hashed once, and the store.

A verdict depends only on the job's shape, the node's pool and its GPU state (the plugin
contract), so verdicts stay valid from one cycle to the next while the Framework lives; a class
whose nodes change gets a new signature, and a new class id.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from scheduler import capacity
from scheduler.classes import ClassIds
from scheduler.decision import Code, Status
from scheduler.model import GpuRequest, Grant, Node, Pool
from scheduler.queue import Need

MAX_VERDICTS = 200_000
READY = "NodeReady"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One class's answer for one job shape: the filter status and, when it passed, raw scores
    and the grants one replica would get on `node`, the representative it was evaluated on."""

    status: Status
    scores: tuple[float, ...] | None = None
    node: Node | None = None
    grants: tuple[Grant, ...] = ()

    def grants_on(self, pool: Pool, node: Node, request: GpuRequest) -> tuple[Grant, ...] | None:
        """The grants for one replica on `node`, reused when it is the node evaluated."""
        return self.grants if node is self.node else capacity.find_grants(pool, node, request)


class Shape:
    """A job's shape: the values of the fields its profile's plugins read, hashed once.

    Shapes key every memo, every cycle (verdicts, the queue's buckets and bounds); a tuple
    holding a dataclass is hashed field by field at each lookup, this once.
    """

    __slots__ = ("_hash", "fields")

    def __init__(self, fields: tuple[Hashable, ...]) -> None:
        self.fields = fields
        self._hash = hash(fields)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, Shape) and self._hash == other._hash and self.fields == other.fields)

    def __repr__(self) -> str:
        return f"Shape{self.fields!r}"


NOT_READY = Verdict(Status(Code.UNRESOLVABLE, ("node is not ready",), READY))


class Verdicts:
    """What the Framework remembers between cycles: per job shape, each class's verdict (by
    class id) and the pools closed to it, and whether a new node of a pool would take it.

    An UNRESOLVABLE answer holds for every node of a pool, so a pool that gave one is closed
    to the shape and its other classes are never asked. Past MAX_VERDICTS entries the
    verdicts are dropped, to bound memory.
    """

    def __init__(self) -> None:
        self.ids = ClassIds()
        self.by_class: dict[Hashable, dict[int, Verdict]] = {}
        self.closed: dict[Hashable, dict[str, Status]] = {}
        self.new_node: dict[tuple[Hashable, str], Status] = {}  # per shape and pool: an empty node's answer
        self.needs: dict[Hashable, Need] = {}  # per shape: what a waiting queue's bound reads
        self.needs_of: object = None  # the pools `needs` (and `new_node`) answer for

    def trim(self) -> None:
        if sum(len(known) for known in self.by_class.values()) > MAX_VERDICTS:
            self.by_class.clear()

    def forget(self) -> None:
        """Drops every answer (class ids stay): what the filters read beyond the job and the node changed."""
        self.by_class.clear()
        self.closed.clear()
        self.new_node.clear()
        self.needs, self.needs_of = {}, None
