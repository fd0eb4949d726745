"""The simulated world's autoscaler: idle clocks, releasing idle nodes, growing pools on request.

`SimWorld` (`simulator.world`) derives from `Autoscaling`, which holds this part of its
methods and names the state they share with the rest of the world. A node of an elastic pool
that falls idle starts a clock; when it runs out the node goes unless a waiting job was
promised it. A decision's `provision` asks for nodes, up to each pool's max_nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from scheduler.decision import Pending
from scheduler.model import Capacity, ClusterSnapshot, Node, Pool, empty_node
from simulator.ledger import Ledger
from simulator.runs import JobRun, Phase


class Processes(Protocol):
    """What the world asks of the engine: things that take simulated time."""

    def start_job(self, run: JobRun) -> None:
        """The run, placed, starts computing (after restoring what it saved)."""

    def boot(self, node: Node, pool: Pool) -> None:
        """The node, asked for now, becomes ready after the pool's provisioning delay."""

    def idle_timer(self, name: str, since_ms: int, pool: Pool) -> None:
        """After the pool's idle_release_s, the world is told the node has been idle since `since_ms`."""



class Autoscaling:
    """The autoscaler's methods of `SimWorld`, and the state of the world they read and change
    (declared here, held by `SimWorld`'s fields)."""

    snapshot: ClusterSnapshot
    ledger: Ledger
    clock: Callable[[], int]
    processes: Processes
    runs: dict[str, JobRun]
    node_count: dict[str, int]
    provisioning: dict[str, int]
    idle_since: dict[str, int]
    wanted: set[str]
    promised: dict[str, frozenset[str]]
    reserved: frozenset[str]
    _serial: dict[str, int]
    _emptied: set[str]

    def event(self, now_ms: int, name: str, data: dict[str, Any]) -> None:
        raise NotImplementedError  # SimWorld's

    def record(self, pool: str) -> None:
        raise NotImplementedError  # SimWorld's

    def remove_node(self, name: str, reason: str) -> None:
        raise NotImplementedError  # SimWorld's

    def start_idle_clocks(self) -> None:
        """Starts the idle clock of every node emptied since the last call."""
        if not self._emptied:  # the common case: the engine asks after every event
            return
        for name in sorted(self._emptied):
            if name in self.snapshot.nodes and name not in self.idle_since:
                self.mark_idle(name)
        self._emptied.clear()

    def mark_idle(self, name: str) -> None:
        """Starts the idle clock of an empty node of an elastic pool (reserved nodes are kept)."""
        node = self.snapshot.nodes[name]
        pool = self.snapshot.pools[node.pool]
        if pool.capacity is Capacity.RESERVED or not pool.elastic:
            return
        if any(gpu.busy for gpu in node.gpus):
            return
        now = self.clock()
        self.idle_since[name] = now
        self.processes.idle_timer(name, now, pool)

    def idle_expired(self, name: str, since_ms: int) -> None:
        """A node idle since `since_ms` has been idle for its pool's idle_release_s: release it,
        unless it was used since, or it is promised to a waiting job (kept for it, as
        cluster-autoscaler keeps nodes pending pods could use: looked at again later), or the
        pool is at min_nodes.

        Promised: the last cycle's reservation holds it, or jobs that fit nowhere asked for its
        pool last cycle, or its pool was last grown (or its idle nodes counted against an ask)
        for jobs of which one still waits. The last keeps the node a gang waits for when the
        pool has reached max_nodes (a pool that cannot grow is asked for by no one) or when
        the queue did not show the gang that cycle; without it the node would go, the pool
        could grow again, and its replacement would go the same way."""
        if self.idle_since.get(name) != since_ms or name not in self.snapshot.nodes:
            return
        pool = self.snapshot.pools[self.snapshot.nodes[name].pool]
        kept = pool.name in self.wanted or self.provisioning.get(pool.name, 0) or name in self.reserved
        if kept or self._still_promised(pool.name):
            self.idle_since.pop(name, None)
            self.mark_idle(name)
            return
        if self.node_count.get(pool.name, 0) > pool.min_nodes:
            self.remove_node(name, "idle")
            self.idle_since.pop(name, None)

    def _still_promised(self, pool: str) -> bool:
        """Whether a job the pool was last grown for still waits (forgetting the promise when none does)."""
        jobs = self.promised.get(pool, frozenset())
        if any(self.runs[job].phase is Phase.WAITING for job in jobs if job in self.runs):
            return True
        self.promised.pop(pool, None)
        return False

    def _autoscale(self, wanted: Mapping[str, int], pending: Mapping[str, Pending]) -> None:
        """Asks for the nodes `wanted` per pool, up to max_nodes, less those coming or idle;
        the pools asked for are promised to the `pending` jobs that fit nowhere."""
        self.wanted = {name for name, count in wanted.items() if count > 0}
        if self.wanted:
            asking = frozenset(job for job, why in pending.items() if why.fits_nowhere)
            for name in self.wanted:
                self.promised[name] = asking
        pools = self.snapshot.pools
        for pool_name, count in sorted(wanted.items()):
            pool = pools[pool_name]
            room = pool.max_nodes - self.node_count.get(pool_name, 0)
            # Nodes on their way and ready nodes standing idle count against the ask: a gang that
            # needs three nodes where two stand idle needs one more, not three.
            idle = sum(1 for name in self.idle_since if self.snapshot.nodes[name].pool == pool_name)
            adding = min(room, count - self.provisioning.get(pool_name, 0) - idle)
            for _ in range(max(0, adding)):
                self._provision(pool)

    def _provision(self, pool: Pool) -> None:
        """Asks for a node now (it is billed while it boots); the engine makes it ready later."""
        index = self._serial.get(pool.name, pool.nodes)
        self._serial[pool.name] = index + 1
        width = max(3, len(str(max(pool.max_nodes, pool.nodes))))
        node = empty_node(pool, f"{pool.name}-{index:0{width}d}")
        self.provisioning[pool.name] = self.provisioning.get(pool.name, 0) + 1
        booting = Node(name=node.name, pool=pool.name, gpus=node.gpus, ready=False)
        self.snapshot = self.snapshot.with_node(booting)
        self.node_count[pool.name] = self.node_count.get(pool.name, 0) + 1
        self.ledger.open(node.name, pool.name, self.clock())
        self.event(self.clock(), "node-add", {"node": node.name, "pool": pool.name})
        self.record(pool.name)
        self.processes.boot(node, pool)
