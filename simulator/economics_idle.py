"""Idle cost by cause: every idle part-millisecond of the ledger put in exactly one of five causes.

The ledger (`simulator.ledger`) knows how much of each pool was idle, not why. The run's
history knows the rest: the timeline gives, per pool and instant, the nodes billed, the nodes
booting and the parts held (exactly: `History`), and the events tell which nodes are ready,
which hold nothing, and whether any job waits. Between two instants nothing changes, so each
stretch of idle parts goes to one cause, in this order:

1. `booting`: the whole of every node asked for and not ready yet (clouds bill boot time);
2. `reserved_unused`: free parts of ready nodes in reserved pools (paid whether used or not);
3. `waiting_for_release`: whole empty ready nodes of an elastic pool, beyond its min_nodes,
   standing until their idle_release_s runs out (or kept for a job the pool grew for);
4. `fragmentation`: the other free parts while at least one job waits (it did not fit them,
   or the policy or a guardrail held it);
5. `no_demand`: the other free parts while no job waits.

The causes add up to the pool's idle part-ms; `idle_part_ms` proves the timeline's idle total
equals the ledger's, pool by pool, and raises AssertionError otherwise.
"""

from __future__ import annotations

import csv
import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.model import Capacity, Pool
from simulator.ledger import PARTS
from simulator.recording import Event, Files, Memory, TimelineRow
from simulator.runs import MS

CAUSES = ("booting", "reserved_unused", "waiting_for_release", "fragmentation", "no_demand")
#: The one stop after which a job still holds its GPUs: a spot notice (the take-back evicts it);
#: after any other (preempted, its node removed) it has given them back and waits again.
_HOLDING_STOP = "spot-notice"


@dataclass(frozen=True, slots=True)
class History:
    """What a replay told its sink, in order: events, timeline rows (exact busy parts), jobs.csv
    rows (text values, as written). Each is read afresh on every call, from memory or from the
    run directory's files, so a pass over a replay of millions of jobs holds one row at a time."""

    events: Callable[[], Iterable[Event]]
    timeline: Callable[[], Iterable[TimelineRow]]
    jobs: Callable[[], Iterable[Mapping[str, str]]]


def history_of(sink: object) -> History | None:
    """The history a finished replay's sink holds: a `Memory`'s lists, or the files a `Files`
    sink wrote (read back; its busy GPUs, rounded to 4 decimals, are exact parts again, since
    every grant is a multiple of 1/7 GPU or of 7 parts). None for any other sink."""
    if isinstance(sink, Memory):
        memory = sink
        return History(lambda: memory.log, lambda: memory.timeline_rows, lambda: map(_text_row, memory.rows))
    if isinstance(sink, Files):
        folder = sink.folder
        return History(lambda: _read_events(folder / "events.jsonl"), lambda: _read_timeline(folder / "timeline.csv"),
                       lambda: _read_jobs(folder / "jobs.csv"))  # fmt: skip
    return None


def _text_row(row: Mapping[str, Any]) -> dict[str, str]:
    """A jobs.csv row as the csv module writes it and reads it back: every value as text."""
    return {key: "" if value is None else str(value) for key, value in row.items()}


def _read_events(path: Path) -> Iterator[Event]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            t_ms = round(record.pop("t_s") * MS)
            yield t_ms, record.pop("event"), record


def _read_timeline(path: Path) -> Iterator[TimelineRow]:
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            busy_parts = round(float(row["gpus_busy"]) * PARTS)
            yield round(float(row["t_s"]) * MS), row["pool"], int(row["nodes"]), busy_parts, int(row["provisioning"])


def _read_jobs(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from csv.DictReader(handle)


def initial_nodes(pools: Mapping[str, Pool]) -> dict[str, str]:
    """Node -> pool of the cluster at time zero, named as `scheduler.cluster.Cluster.snapshot` names them."""
    nodes = {}
    for pool in pools.values():
        width = max(3, len(str(max(pool.max_nodes, pool.nodes))))
        for index in range(pool.nodes):
            nodes[f"{pool.name}-{index:0{width}d}"] = pool.name
    return nodes


@dataclass(slots=True)
class _State:
    """The cluster between two instants, as the history tells it."""

    pools: Mapping[str, Pool]
    node_pool: dict[str, str]
    ready: set[str]
    holders: dict[str, set[str]] = field(default_factory=dict)  # node -> jobs holding part of it
    job_nodes: dict[str, set[str]] = field(default_factory=dict)  # running or stopping job -> its nodes
    empty_ready: dict[str, int] = field(default_factory=dict)  # pool -> ready nodes nobody holds
    pool_row: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # pool -> nodes, busy parts, booting
    waiting: int = 0

    def __post_init__(self) -> None:
        for node, pool in self.node_pool.items():
            self.holders.setdefault(node, set())
            if node in self.ready:
                self.empty_ready[pool] = self.empty_ready.get(pool, 0) + 1

    def _empty_ready(self, node: str) -> bool:
        return node in self.ready and not self.holders.get(node)

    def _change(self, node: str, change: Any) -> None:
        """Applies `change()` to `node`, keeping its pool's count of empty ready nodes."""
        before = self._empty_ready(node)
        change()
        after = self._empty_ready(node)
        if before != after:
            pool = self.node_pool[node]
            self.empty_ready[pool] = self.empty_ready.get(pool, 0) + (1 if after else -1)

    def _release(self, job: str) -> None:
        for node in self.job_nodes.pop(job, set()):
            self._change(node, lambda node=node: self.holders[node].discard(job))

    def apply(self, event: Event) -> None:
        _, name, data = event
        if name == "arrive":
            self.waiting += 1
        elif name == "deny":
            self.waiting -= 1
        elif name == "start":
            self.waiting -= 1
            job = data["job"]
            self.job_nodes[job] = set(data["nodes"])
            for node in self.job_nodes[job]:
                self._change(node, lambda node=node: self.holders[node].add(job))
        elif name == "finish":
            self._release(data["job"])
        elif name == "stop" and data["reason"] != _HOLDING_STOP:
            self._release(data["job"])
            self.waiting += 1
        elif name == "node-add":
            self.node_pool[data["node"]] = data["pool"]
            self.holders[data["node"]] = set()
        elif name == "node-ready":
            self._change(data["node"], lambda: self.ready.add(data["node"]))
        elif name == "spot-notice":
            self._change(data["node"], lambda: self.ready.discard(data["node"]))
        elif name == "node-remove":
            node = data["node"]
            for job in sorted(self.holders[node]):  # jobs stopped by a spot notice: evicted now
                self._release(job)
                self.waiting += 1
            self._change(node, lambda: self.ready.discard(node))
            del self.holders[node], self.node_pool[node]

    def causes(self, pool_name: str) -> tuple[int, ...]:
        """Idle parts of the pool now, by cause (in the order of `CAUSES`)."""
        nodes, busy, booting_nodes = self.pool_row.get(pool_name, (0, 0, 0))
        pool = self.pools[pool_name]
        capacity = pool.gpus_per_node * PARTS
        idle = nodes * capacity - busy
        booting = booting_nodes * capacity
        reserved = releasing = 0
        if pool.capacity is Capacity.RESERVED:
            reserved = idle - booting
        elif pool.elastic:
            above_floor = max(0, nodes - booting_nodes - pool.min_nodes)
            releasing = min(self.empty_ready.get(pool_name, 0), above_floor) * capacity
        rest = idle - booting - reserved - releasing
        if min(booting, reserved, releasing, rest) < 0:
            raise AssertionError(f"idle causes of pool {pool_name}: {booting}, {reserved}, {releasing}, {rest} parts")
        waited = self.waiting > 0
        return booting, reserved, releasing, rest if waited else 0, 0 if waited else rest


def idle_part_ms(history: History, pools: Mapping[str, Pool], end_ms: int,
                 ledger_idle: Mapping[str, int]) -> dict[str, dict[str, int]]:  # fmt: skip
    """Per pool, its idle part-ms by cause (`CAUSES`); AssertionError unless each pool's causes add up
    to `ledger_idle`, the ledger's idle part-ms."""
    node_pool = initial_nodes(pools)
    state = _State(pools, node_pool, set(node_pool))
    totals = {pool: [0] * len(CAUSES) for pool in pools}
    rates: dict[str, tuple[tuple[Any, ...], tuple[int, ...]]] = {}  # pool -> what its causes depend on, causes
    # Both streams come in time order; merged by time, each keeps its own order within an instant.
    events = ((event[0], 0, event) for event in history.events())
    rows = ((row[0], 1, row) for row in history.timeline())
    changes: Iterator[tuple[int, int, Any]] = heapq.merge(events, rows, key=lambda change: change[0])
    since = 0
    for t_ms, kind, change in changes:
        if t_ms > since:
            _accrue(state, totals, rates, t_ms - since)
            since = t_ms
        if kind == 0:
            state.apply(change)
        else:
            _, pool, nodes, busy, booting = change
            state.pool_row[pool] = (nodes, busy, booting)
    if end_ms > since:
        _accrue(state, totals, rates, end_ms - since)
    for pool, causes in totals.items():
        if sum(causes) != ledger_idle.get(pool, 0):
            raise AssertionError(f"pool {pool}: idle by cause {sum(causes)} != ledger idle "
                                 f"{ledger_idle.get(pool, 0)} part-ms")  # fmt: skip
    return {pool: dict(zip(CAUSES, causes, strict=True)) for pool, causes in totals.items()}


def _accrue(state: _State, totals: dict[str, list[int]], rates: dict[str, tuple[tuple[Any, ...], tuple[int, ...]]],
            elapsed_ms: int) -> None:  # fmt: skip
    """Adds `elapsed_ms` of each pool's idle parts by cause; a pool's causes are worked out again
    only when what they depend on changed (most events change one pool, or only the queue)."""
    waited = state.waiting > 0
    for pool, row in state.pool_row.items():
        key = (row, state.empty_ready.get(pool, 0), waited)
        cached = rates.get(pool)
        if cached is None or cached[0] != key:
            cached = rates[pool] = (key, state.causes(pool))
        total = totals[pool]
        for index, parts in enumerate(cached[1]):
            if parts:
                total[index] += parts * elapsed_ms


__all__ = ["CAUSES", "History", "history_of", "idle_part_ms", "initial_nodes"]
