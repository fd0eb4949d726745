"""The cost ledger: every node-millisecond charged, every GPU-millisecond attributed or idle.

Money is exact. A GPU is split into PARTS = 7,000 parts (a milli-GPU share is 7 parts, a MIG
compute slice is 7,000 / slices parts, so 1,000 on A100/H100 and 1,750 on A30), time is
integer milliseconds, and the ledger adds integer part-milliseconds. A pool's price turns
part-milliseconds into dollars only when a report asks, as an exact fraction:

    usd = usd_per_node_hour x part_ms / (gpus_per_node x PARTS x 3,600,000)

Each node integrates its holders since its last change: each job's parts x elapsed to that
job, the parts nobody holds to the pool's idle bucket; and separately the node's whole
capacity to the pool's bill. `check` proves attributed + idle == bill for every pool. A
job's accounts are final once it holds nothing and will hold nothing again (it ended):
`retire` folds them into per-pool totals, so a long replay keeps accounts only for jobs alive.

Worked example: an 8-GPU node at $80/h holds one 2-GPU job for 30 minutes and is then
released. Bill 8 x 7,000 x 1,800,000 part-ms = $40; the job 2 x 7,000 x 1,800,000 = $10;
idle 6 x 7,000 x 1,800,000 = $30; $10 + $30 = $40.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from scheduler import costing
from scheduler.model import ClusterSnapshot, GpuRequest, Pool, RequestKind

PARTS = 7000
MS_PER_HOUR = 3_600_000


def parts_of(pool: Pool, request: GpuRequest) -> int:
    """Parts one grant of `request` holds on one GPU of `pool` (whole GPU, share, or MIG instance):
    its GPU-worth (`scheduler.costing.gpu_worth`) per GPU granted, in parts."""
    worth = costing.gpu_worth(pool, request) / (request.gpus if request.kind is not RequestKind.SHARE else 1)
    parts = worth * PARTS
    if parts.denominator != 1:  # PARTS is chosen so that every share and MIG slice is whole parts
        raise AssertionError(f"{request.describe()} on {pool.name} is {parts} parts")
    return int(parts)


def _denominator(pool: Pool) -> int:
    """What a part-millisecond of `pool` times its micro-dollar price per node-hour is divided by."""
    return pool.gpus_per_node * PARTS * MS_PER_HOUR * 10**6


def micro_usd(usd: float) -> int:
    """A price in integer micro-dollars (catalog prices have at most six decimals)."""
    return round(usd * 1_000_000)


@dataclass(slots=True)
class NodeAccount:
    """One node's holders since its last change."""

    pool: str
    capacity_parts: int
    since_ms: int
    holders: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Ledger:
    """Integer part-millisecond accounts per pool, per job and per pool's idle bucket."""

    pools: Mapping[str, Pool]
    nodes: dict[str, NodeAccount] = field(default_factory=dict)
    bill: dict[str, int] = field(default_factory=dict)
    idle: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, dict[str, int]] = field(default_factory=dict)
    lost: dict[str, dict[str, int]] = field(default_factory=dict)
    retired: dict[str, int] = field(default_factory=dict)  # per pool: attributed part-ms of retired jobs
    lost_by_pool: dict[str, int] = field(default_factory=dict)  # per pool: lost part-ms of every job
    # Dollars as integers over one denominator for every pool (`units`): a job's cost is worked
    # out at its end, and integer sums stay exact at a fraction of the cost of Fractions.
    denominator: int = field(init=False)
    _units_per_part_ms: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        denominators = {name: _denominator(pool) for name, pool in self.pools.items()}
        self.denominator = math.lcm(*denominators.values()) if denominators else 1
        self._units_per_part_ms = {
            name: micro_usd(pool.usd_per_node_hour) * (self.denominator // denominators[name])
            for name, pool in self.pools.items()
        }

    def open(self, node: str, pool: str, now_ms: int) -> None:
        """Starts charging a node (from the moment it is asked for: clouds bill booting nodes)."""
        capacity = self.pools[pool].gpus_per_node * PARTS
        self.nodes[node] = NodeAccount(pool, capacity, now_ms)

    def close(self, node: str, now_ms: int) -> None:
        """Stops charging a node that left the cluster."""
        self._integrate(node, now_ms)
        del self.nodes[node]

    def hold(self, node: str, job: str, parts: int, now_ms: int) -> None:
        """`job` starts holding `parts` more parts of `node`."""
        account = self._integrate(node, now_ms)
        account.holders[job] = account.holders.get(job, 0) + parts
        if sum(account.holders.values()) > account.capacity_parts:
            raise AssertionError(f"node {node} over-allocated in the ledger")

    def free(self, node: str, job: str, now_ms: int) -> None:
        """`job` gives back all it holds on `node`."""
        account = self._integrate(node, now_ms)
        account.holders.pop(job, None)

    def lose(self, job: str, pool: str, part_ms: int) -> None:
        """Records attributed part-ms of `job` whose work was thrown away (preemption, interruption)."""
        by_pool = self.lost.setdefault(job, {})
        by_pool[pool] = by_pool.get(pool, 0) + part_ms
        self.lost_by_pool[pool] = self.lost_by_pool.get(pool, 0) + part_ms

    def retire(self, job: str) -> None:
        """Forgets an ended job's accounts, keeping its part-ms in the pools' totals."""
        for pool, part_ms in self.jobs.pop(job, {}).items():
            self.retired[pool] = self.retired.get(pool, 0) + part_ms
        self.lost.pop(job, None)

    def attributed(self) -> dict[str, int]:
        """Per pool, the part-ms held by jobs, retired or not."""
        totals = dict(self.retired)
        for by_pool in self.jobs.values():
            for pool, part_ms in by_pool.items():
                totals[pool] = totals.get(pool, 0) + part_ms
        return totals

    def settle(self, now_ms: int) -> None:
        """Brings every open node's accounts up to `now_ms`."""
        for node in self.nodes:
            self._integrate(node, now_ms)

    def _integrate(self, node: str, now_ms: int) -> NodeAccount:
        account = self.nodes[node]
        elapsed = now_ms - account.since_ms
        if elapsed:
            pool = account.pool
            self.bill[pool] = self.bill.get(pool, 0) + account.capacity_parts * elapsed
            held = 0
            for job, parts in account.holders.items():
                by_pool = self.jobs.setdefault(job, {})
                by_pool[pool] = by_pool.get(pool, 0) + parts * elapsed
                held += parts
            self.idle[pool] = self.idle.get(pool, 0) + (account.capacity_parts - held) * elapsed
            account.since_ms = now_ms
        return account

    def usd(self, pool: str, part_ms: int) -> Fraction:
        """Exact dollars of `part_ms` part-milliseconds in `pool`."""
        spec = self.pools[pool]
        return Fraction(micro_usd(spec.usd_per_node_hour) * part_ms, _denominator(spec))

    def units(self, accounts: Mapping[str, int]) -> int:
        """Exact dollars of part-ms kept per pool, in units of 1 / `denominator` dollars."""
        per_part_ms = self._units_per_part_ms
        return sum(per_part_ms[pool] * part_ms for pool, part_ms in accounts.items())

    def usd_of_units(self, units: int) -> Fraction:
        return Fraction(units, self.denominator)

    def usd_of(self, accounts: Mapping[str, int]) -> Fraction:
        """Exact dollars of part-ms kept per pool."""
        return sum((self.usd(pool, part_ms) for pool, part_ms in accounts.items()), Fraction(0))

    def check_holders(self, snapshot: ClusterSnapshot, parts: Callable[[Pool, str], int]) -> None:
        """Raises AssertionError unless each node's holders are exactly the jobs `snapshot` shows
        holding its GPUs, with the parts `parts(pool, job)` says one grant holds, per grant."""
        for name, account in self.nodes.items():
            node = snapshot.nodes[name]
            pool = snapshot.pools[node.pool]
            expected: dict[str, int] = {}
            holders = [gpu.owner for gpu in node.gpus if gpu.owner is not None]
            holders += [share.job for gpu in node.gpus for share in gpu.shares]
            holders += [slot.job for gpu in node.gpus for slot in gpu.mig if slot.job is not None]
            for job in holders:
                expected[job] = expected.get(job, 0) + parts(pool, job)
            if expected != account.holders:
                raise AssertionError(f"{name}: ledger holders {account.holders} != GPUs held {expected}")

    def check(self) -> None:
        """Raises AssertionError unless attributed + idle == bill, exactly, in every pool."""
        attributed = self.attributed()
        for pool, billed in self.bill.items():
            if attributed.get(pool, 0) + self.idle.get(pool, 0) != billed:
                raise AssertionError(
                    f"ledger of pool {pool}: attributed {attributed.get(pool, 0)} + idle {self.idle.get(pool, 0)}"
                    f" != bill {billed} part-ms"
                )
