"""SimWorld: the simulated cluster as a World: observe() freezes it, enact() carries decisions out.

It owns the mutable state (nodes, running jobs and their progress, the waiting queue, the cost
ledger, the event log) and nothing else: time, randomness and processes belong to the SimPy
engine (simulator/engine.py), which calls the `on_*` methods when things happen. Every enacted
decision is checked with `scheduler.decision.validate` first; with `check` the world also proves
after every change that the ledger's holders match the GPUs the snapshot shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.decision import Decision, SolverReport, apply
from scheduler.model import (
    FULL_GPU_MILLI,
    ClusterSnapshot,
    Job,
    JobKind,
    MigMode,
    Node,
    Placement,
    Pool,
    RequestKind,
    empty_node,
)
from scheduler.world import Observation, Scheduler
from simulator.ledger import PARTS, Ledger, parts_of
from simulator.queue import Capacity, WaitingQueue

MS = 1000


def ms(seconds: float) -> int:
    """Seconds as the engine's integer milliseconds."""
    return round(seconds * MS)


@dataclass(slots=True)
class JobRun:
    """One job's life in the replay: progress (reference-GPU milliseconds), attempts, outcome."""

    job: Job
    total_ms: int
    saved_ms: int = 0
    progress_ms: int = 0
    phase: str = "waiting"  # waiting | restore | compute | checkpoint | stopping | done
    phase_start_ms: int = 0
    safe_since_ms: int = 0
    speed: float = 1.0
    placement: Placement | None = None
    epoch: int = 0
    first_start_ms: int | None = None
    end_ms: int | None = None
    outcome: str = ""
    preemptions: int = 0
    interruptions: int = 0
    lost_gpu_ms: int = 0
    pools: set[str] = field(default_factory=set)
    held_parts: dict[str, int] = field(default_factory=dict)

    def progress_at(self, now_ms: int) -> int:
        if self.phase != "compute":
            return self.progress_ms
        return min(self.total_ms, self.progress_ms + math.floor((now_ms - self.phase_start_ms) * self.speed))

    def gpus(self) -> float:
        """GPU-equivalents held now (shares and MIG instances by their fraction)."""
        return sum(self.held_parts.values()) / PARTS


_WHOLE_ONLY: dict[int, Capacity] = {}  # read-only capacities of plain nodes, by free GPUs
_NOTHING = Capacity()


def node_capacity(pool: Pool, node: Node) -> Capacity:
    """What a ready node offers the waiting queue's bounds (read-only: never add to it)."""
    if not node.ready:
        return _NOTHING
    if pool.mig_mode is MigMode.OFF and not pool.sharing:  # the common case, shared objects
        free = [gpu.free for gpu in node.gpus].count(True)
        known = _WHOLE_ONLY.get(free)
        if known is None:
            known = _WHOLE_ONLY[free] = Capacity({free: 1} if free else {})
        return known
    capacity = Capacity()
    geometry = pool.gpu.mig
    if pool.mig_mode is not MigMode.OFF and geometry is not None:
        for gpu in node.gpus:
            used = sum(geometry.profiles[s.instance.profile].compute_slices for s in gpu.mig if s.job is not None)
            capacity.mig_slices += geometry.compute_slices - used
        return capacity
    free = sum(gpu.free for gpu in node.gpus)
    if free:
        capacity.whole_by_node[free] = 1
    if pool.sharing:
        for gpu in node.gpus:
            if gpu.owner is None and gpu.used_milli < FULL_GPU_MILLI:
                room = FULL_GPU_MILLI - gpu.used_milli
                capacity.share_by_gpu[room] = capacity.share_by_gpu.get(room, 0) + 1
    return capacity


@dataclass(slots=True)
class SimWorld:
    """The simulated cluster; the engine drives it, the Scheduler decides for it."""

    scheduler: Scheduler
    snapshot: ClusterSnapshot
    ledger: Ledger
    clock: Callable[[], int]
    check: bool = False
    runs: dict[str, JobRun] = field(default_factory=dict)
    queue: WaitingQueue = field(init=False)
    log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    solver_log: list[tuple[int, SolverReport]] = field(default_factory=list)
    free: Capacity = field(default_factory=Capacity)
    busy_parts: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[int, str, int, int, int]] = field(default_factory=list)
    provisioning: dict[str, int] = field(default_factory=dict)
    node_count: dict[str, int] = field(default_factory=dict)
    emptied: set[str] = field(default_factory=set)
    running_count: int = 0
    free_changed: bool = True
    _growth_key: tuple[tuple[str, int], ...] | None = None
    _free_version: int = 0
    _room: Capacity | None = None
    _growth_capacity: Capacity = field(default_factory=Capacity)
    _room_version: int = -1

    def __post_init__(self) -> None:
        sort = self.scheduler.profile.sort
        # Buckets keep the profile's queue order, worked out once per job: bucketing is only on
        # when the order is static (shapes_are_interchangeable), and static orders ignore the cycle.
        bucketed = self.scheduler.shapes_are_interchangeable
        self.queue = WaitingQueue(
            self.scheduler.shape,
            (lambda job: (sort.sort_key(None, job), job.submit_s, job.id))  # type: ignore[arg-type]
            if bucketed else (lambda job: (job.submit_s, job.id)),  # the scheduler orders the rest
            bucketed,
        )
        for node in self.snapshot.nodes.values():
            self.node_count[node.pool] = self.node_count.get(node.pool, 0) + 1
            self.ledger.open(node.name, node.pool, 0)
            self._free_add(node_capacity(self.snapshot.pools[node.pool], node))
        for pool in self.snapshot.pools:
            self.record(pool)

    # The World port ----------------------------------------------------------------------

    def observe(self) -> Observation:
        now = self.clock()
        growth_key = tuple(sorted((*self.node_count.items(), *((f"+{k}", v) for k, v in self.provisioning.items()))))
        growth_changed, self._growth_key = growth_key != self._growth_key, growth_key
        if growth_changed:
            self._growth_capacity = self._growth()
        growth = self._growth_capacity
        if not (growth.whole_by_node or growth.share_by_gpu or growth.mig_slices):
            room = self.free  # nothing can grow: the free capacity is the room (no copy)
        else:
            if growth_changed or self._room is None or self._room_version != self._free_version:
                self._room, self._room_version = self.free.merged(growth), self._free_version
            room = self._room
        slices = self.snapshot.pools

        def limit(job: Job) -> int:
            mig = job.request.kind is RequestKind.MIG
            return room.fits(job, _instance_slices(job, slices) if mig else 1)

        # Buckets untouched since the last take were shown all that could fit, unless capacity
        # grew since; with elastic pools every bucket is shown, so provisioning sees them all.
        elastic = bool(growth.whole_by_node or growth.share_by_gpu or growth.mig_slices)
        fresh_only = self.queue.bucketed and not self.free_changed and not growth_changed and not elastic
        self.free_changed = False
        pending = self.queue.take(limit, only_fresh=fresh_only)
        return Observation(now_s=now / MS, snapshot=self.snapshot, pending=tuple(pending))

    def enact(self, decision: Decision) -> None:
        now = self.clock()
        if decision.solver is not None:
            self.solver_log.append((now, decision.solver))
        after = apply(self.snapshot, decision, now / MS)  # validates: no over-allocation, MIG, gangs
        victims = [self.runs[preemption.job] for preemption in decision.preemptions]
        touched = {r.node for p in decision.placements for r in p.replicas}
        touched.update(r.node for run in victims if run.placement for r in run.placement.replicas)
        for name in touched:
            pool = self.snapshot.pools[self.snapshot.nodes[name].pool]
            self._free_add(node_capacity(pool, self.snapshot.nodes[name]), -1)
            self._free_add(node_capacity(pool, after.nodes[name]))
        self.snapshot = after
        for run in victims:
            run.preemptions += 1
            self._stop(run, now, reason="preempted")
            self._evict(run, now, released=True)
        placed = set()
        for placement in decision.placements:
            self._start(self.runs[placement.job.id], placement, now)
            placed.add(placement.job.id)
        for job_id in decision.pending:
            if job_id not in placed:
                self.queue.add(self.runs[job_id].job, fresh=False)
        if self.check:
            self.check_invariants()

    # What the engine reports ----------------------------------------------------------------

    def on_arrival(self, job: Job) -> JobRun:
        run = JobRun(job, total_ms=ms(job.duration_s))
        self.runs[job.id] = run
        self.queue.add(job)
        self.log.append((self.clock(), "arrive", {"job": job.id}))
        return run

    def on_finish(self, run: JobRun) -> None:
        now = self.clock()
        run.phase, run.end_ms = "done", now
        run.outcome = "completed" if run.job.kind is JobKind.SERVICE else run.job.status
        self._release(run, now)
        self.log.append((now, "finish", {"job": run.job.id, "outcome": run.outcome}))

    def on_checkpoint(self, run: JobRun) -> None:
        now = self.clock()
        run.saved_ms, run.safe_since_ms = run.progress_ms, now
        self.log.append((now, "checkpoint", {"job": run.job.id, "saved_s": run.saved_ms / MS}))

    # Nodes ----------------------------------------------------------------------------------

    def add_node(self, node: Node) -> None:
        self.snapshot = self.snapshot.with_node(node)
        self.node_count[node.pool] = self.node_count.get(node.pool, 0) + 1
        self.ledger.open(node.name, node.pool, self.clock())
        self.log.append((self.clock(), "node-add", {"node": node.name, "pool": node.pool}))
        self.record(node.pool)

    def node_ready(self, name: str) -> None:
        node = self.snapshot.nodes[name]
        ready = Node(name=node.name, pool=node.pool, gpus=node.gpus, ready=True)
        self.snapshot = self.snapshot.with_node(ready)
        self._free_add(node_capacity(self.snapshot.pools[node.pool], ready))
        self.free_changed = True
        self.log.append((self.clock(), "node-ready", {"node": name}))

    def remove_node(self, name: str, reason: str) -> None:
        now = self.clock()
        node = self.snapshot.nodes[name]
        for job_id in sorted({job for gpu in node.gpus for job in gpu.jobs()}):
            run = self.runs[job_id]
            if run.phase != "stopping":
                self._stop(run, now, reason=reason)
            self._evict(run, now)
        node = self.snapshot.nodes[name]
        self._free_add(node_capacity(self.snapshot.pools[node.pool], node), -1)
        self.snapshot = self.snapshot.without_node(name)
        self.node_count[node.pool] -= 1
        self.ledger.close(name, now)
        self.log.append((now, "node-remove", {"node": name, "reason": reason}))
        self.record(node.pool)

    def interrupt_notice(self, name: str, notice_ms: int) -> None:
        """A spot notice: the node takes no new work; jobs on it stop, checkpointing if they can."""
        now = self.clock()
        node = self.snapshot.nodes[name]
        if node.ready:
            self._free_add(node_capacity(self.snapshot.pools[node.pool], node), -1)
            node = Node(name=node.name, pool=node.pool, gpus=node.gpus, ready=False)
            self.snapshot = self.snapshot.with_node(node)
        self.log.append((now, "spot-notice", {"node": name, "notice_s": notice_ms / MS}))
        for job_id in sorted({job for gpu in node.gpus for job in gpu.jobs()}):
            run = self.runs[job_id]
            if run.phase == "stopping":  # a gang already stopped by a notice on another of its nodes
                continue
            run.interruptions += 1
            job = run.job
            if job.checkpointable and ms(job.checkpoint_overhead_s) <= notice_ms and run.phase == "compute":
                run.progress_ms = run.progress_at(now)
                run.phase = "stopping"
                run.saved_ms, run.safe_since_ms = run.progress_ms, now + ms(job.checkpoint_overhead_s)
                self.log.append((now, "checkpoint", {"job": job_id, "saved_s": run.saved_ms / MS, "on": "notice"}))
            self._stop(run, now, reason="spot-notice")

    # Internals -------------------------------------------------------------------------------

    def _start(self, run: JobRun, placement: Placement, now: int) -> None:
        """Bookkeeping of a placement already in the snapshot: ledger, speed, log."""
        pools = self.snapshot.pools
        run.placement, run.held_parts = placement, {}
        self.running_count += 1
        for replica in placement.replicas:
            pool = pools[self.snapshot.nodes[replica.node].pool]
            parts = parts_of(pool, run.job.request) * len(replica.grants)
            run.held_parts[replica.node] = run.held_parts.get(replica.node, 0) + parts
            run.pools.add(pool.name)
        for node, parts in run.held_parts.items():
            self.ledger.hold(node, run.job.id, parts, now)
            self._busy(node, parts)
        model = pools[self.snapshot.nodes[placement.replicas[0].node].pool].gpu.name
        run.speed = dict(run.job.speedups).get(model, 1.0) if run.job.kind is JobKind.BATCH else 1.0
        if run.first_start_ms is None:
            run.first_start_ms = now
        run.progress_ms, run.safe_since_ms = run.saved_ms, now
        if run.job.kind is JobKind.SERVICE:
            run.total_ms = max(0, ms(run.job.submit_s + run.job.duration_s) - now)
            run.progress_ms = run.saved_ms = 0
        nodes = [r.node for r in placement.replicas]
        restart = run.preemptions + run.interruptions > 0
        self.log.append((now, "start", {"job": run.job.id, "nodes": nodes, "restart": restart}))

    def _stop(self, run: JobRun, now: int, reason: str) -> None:
        """The job stops making progress now; what it has not saved is lost."""
        if run.phase != "stopping":
            lost_wall = now - run.safe_since_ms if run.job.kind is JobKind.BATCH else 0
            run.progress_ms = run.saved_ms
            for node, parts in run.held_parts.items():
                self.ledger.lose(run.job.id, self.snapshot.nodes[node].pool, parts * lost_wall)
            run.lost_gpu_ms += round(run.gpus() * lost_wall)
        run.phase = "stopping"
        run.epoch += 1  # whatever the engine had scheduled for this job will not happen
        self.log.append((now, "stop", {"job": run.job.id, "reason": reason}))

    def _evict(self, run: JobRun, now: int, *, released: bool = False) -> None:
        """The job gives its GPUs back (`released`: the snapshot already has) and waits again."""
        self._release(run, now, in_snapshot=not released)
        run.phase, run.placement = "waiting", None
        self.queue.add(run.job)

    def _release(self, run: JobRun, now: int, *, in_snapshot: bool = True) -> None:
        if run.placement is None:
            return
        names = {r.node for r in run.placement.replicas}
        self.free_changed = True  # capacity grew: every bucket may fit more now
        if in_snapshot:
            before = {name: self.snapshot.nodes[name] for name in names}
            self.snapshot = self.snapshot.release(run.job.id)
            for name, old in before.items():
                pool = self.snapshot.pools[old.pool]
                self._free_add(node_capacity(pool, old), -1)
                self._free_add(node_capacity(pool, self.snapshot.nodes[name]))
        for name in names:
            if not any(gpu.busy for gpu in self.snapshot.nodes[name].gpus):
                self.emptied.add(name)
        for node, parts in run.held_parts.items():
            self.ledger.free(node, run.job.id, now)
            self._busy(node, -parts)
        run.held_parts = {}
        self.running_count -= 1

    def _free_add(self, capacity: Capacity, times: int = 1) -> None:
        if capacity.whole_by_node or capacity.share_by_gpu or capacity.mig_slices:
            self.free.add(capacity, times)
            self._free_version += 1

    def _busy(self, node: str, parts: int) -> None:
        pool = self.snapshot.nodes[node].pool
        self.busy_parts[pool] = self.busy_parts.get(pool, 0) + parts
        self.record(pool)

    def record(self, pool: str) -> None:
        """Adds the pool's state now to the timeline (one row per pool and instant)."""
        row = (self.clock(), pool, self.node_count.get(pool, 0), self.busy_parts.get(pool, 0),
               self.provisioning.get(pool, 0))
        if self.timeline and self.timeline[-1][:2] == row[:2]:
            self.timeline[-1] = row
        else:
            self.timeline.append(row)

    def _growth(self) -> Capacity:
        growth = Capacity()
        for pool in self.snapshot.pools.values():
            # Nodes still booting count: the jobs they will take must be shown to the cycle too.
            room = pool.max_nodes - self.node_count.get(pool.name, 0) + self.provisioning.get(pool.name, 0)
            if room > 0:
                empty = empty_node(pool, "new")
                growth.add(node_capacity(pool, Node(name="new", pool=pool.name, gpus=empty.gpus, ready=True)), room)
        return growth

    def check_invariants(self) -> None:
        """The ledger's holders equal the GPUs the snapshot shows held, node by node."""
        for name, account in self.ledger.nodes.items():
            node = self.snapshot.nodes[name]
            pool = self.snapshot.pools[node.pool]
            expected: dict[str, int] = {}
            holders = [gpu.owner for gpu in node.gpus if gpu.owner is not None]
            holders += [share.job for gpu in node.gpus for share in gpu.shares]
            holders += [slot.job for gpu in node.gpus for slot in gpu.mig if slot.job is not None]
            for job in holders:
                expected[job] = expected.get(job, 0) + parts_of(pool, self.runs[job].job.request)
            if expected != account.holders:
                raise AssertionError(f"{name}: ledger holders {account.holders} != GPUs held {expected}")


def _instance_slices(job: Job, pools: Mapping[str, Pool]) -> int:
    """Compute slices of one MIG instance of `job`'s profile (the smallest over pools offering it)."""
    profile = job.request.mig_profile
    slices = [p.gpu.mig.profiles[profile].compute_slices for p in pools.values()
              if p.gpu.mig is not None and profile in p.gpu.mig.profiles]
    return min(slices, default=1)
