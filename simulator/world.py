"""SimWorld: the simulated cluster as a World: observe() shows it, enact() carries decisions out.

It owns the mutable state (nodes, running jobs and their progress, the waiting queue, the cost
ledger, the event log, the nodes on their way and those standing idle) and decides what the
autoscaler does with the pools; time, randomness and processes belong to the SimPy engine
(simulator/engine.py), which calls the `on_*` and node methods when things happen and runs
the processes the world asks for through `Processes`. Every enacted decision is checked
with `scheduler.decision.apply` first; with `check` the world also proves after every
decision that the ledger's holders match the GPUs the snapshot shows.

Its history (events, ended jobs' rows, the timeline, solver reports) goes to a `Sink` as it
happens (`simulator.recording`); the summary's totals to a `Tally`. Kept in `memory` by
default; given a sink of files, the world forgets each job when it ends, so memory follows
what runs and waits, not the length of the trace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler.decision import Decision, SolverReport, apply
from scheduler.model import ClusterSnapshot, GpuRequest, Job, JobKind, Node, Placement, Pool
from scheduler.queue import WaitingQueue
from scheduler.world import Observation
from simulator.autoscaling import Autoscaling, Processes
from simulator.guardrails import Guardrails
from simulator.ledger import Ledger, parts_of
from simulator.recording import Event, Memory, Sink, TimelineRow
from simulator.rounds import RoundsLedger
from simulator.runs import MS, JobRun, Phase, ms
from simulator.tally import DENIED, Tally


@dataclass(slots=True)
class SimWorld(Autoscaling):
    """The simulated cluster; the engine drives it, the Scheduler decides for it (its
    autoscaler's part: `simulator.autoscaling`)."""

    snapshot: ClusterSnapshot
    ledger: Ledger
    queue: WaitingQueue
    clock: Callable[[], int]
    processes: Processes
    check: bool = False
    sink: Sink = field(default_factory=Memory)
    keep: bool = True  # keep ended jobs (and, with a `Memory` sink, the history); else forget them
    runs: dict[str, JobRun] = field(default_factory=dict)  # jobs waiting or running (and, when kept, ended)
    tally: Tally = field(default_factory=Tally)
    busy_parts: dict[str, int] = field(default_factory=dict)
    node_count: dict[str, int] = field(default_factory=dict)
    provisioning: dict[str, int] = field(default_factory=dict)  # pool -> nodes asked for, not ready yet
    idle_since: dict[str, int] = field(default_factory=dict)  # node -> when it last fell idle
    wanted: set[str] = field(default_factory=set)  # pools the last decision asked to grow
    promised: dict[str, frozenset[str]] = field(default_factory=dict)  # pool -> jobs it was last grown for
    reserved: frozenset[str] = frozenset()  # nodes the last decision's reservation holds
    running_count: int = 0
    guardrails: Guardrails | None = None  # spend, approvals and holds, when the run is governed
    rounds: RoundsLedger | None = None  # time per GPU model per job, when the profile runs round policies
    _serial: dict[str, int] = field(default_factory=dict)
    _parts: dict[tuple[str, GpuRequest], int] = field(default_factory=dict)  # ledger parts per pool and request
    _emptied: set[str] = field(default_factory=set)  # nodes emptied since the idle clocks were last started
    _row: TimelineRow | None = None  # the timeline row of this instant, told the sink when the next begins

    def __post_init__(self) -> None:
        for node in self.snapshot.nodes.values():
            self.node_count[node.pool] = self.node_count.get(node.pool, 0) + 1
            self.ledger.open(node.name, node.pool, 0)
        for pool in self.snapshot.pools:
            self.record(pool)

    @property
    def memory(self) -> Memory | None:
        """The history, when this world keeps it."""
        return self.sink if self.keep and isinstance(self.sink, Memory) else None

    def _kept(self) -> Memory:
        if (memory := self.memory) is None:
            raise RuntimeError("this world wrote its history to a sink and did not keep it")
        return memory

    @property
    def log(self) -> list[Event]:
        return self._kept().log

    @property
    def timeline(self) -> list[TimelineRow]:
        """Per pool and instant: nodes, busy parts, nodes provisioning."""
        return [*self._kept().timeline_rows, *([self._row] if self._row is not None else [])]

    @property
    def solver_log(self) -> list[tuple[int, SolverReport]]:
        return self._kept().solver_log

    def event(self, now_ms: int, name: str, data: dict[str, Any]) -> None:
        """Tells the sink an event; counts node events for the summary."""
        self.sink.event((now_ms, name, data))
        if name == "node-add":
            self.tally.node_event(name)
        elif name == "node-remove":
            self.tally.node_event(name, data["reason"])

    @property
    def quiet(self) -> bool:
        """Nothing runs and no node is on its way."""
        waiting_on_timers = self.guardrails is not None and self.guardrails.pending_timers > 0
        return self.running_count == 0 and not any(self.provisioning.values()) and not waiting_on_timers

    # The World port ----------------------------------------------------------------------

    def observe(self) -> Observation:
        snapshot = self.snapshot
        if self.guardrails is not None:
            waiting = list(self.queue.jobs())
            started = frozenset(job.id for job in waiting if self.runs[job.id].first_start_ms is not None)
            snapshot = self.guardrails.view_on(snapshot, waiting, self.clock(), started)
        if self.rounds is not None:
            now = self.clock()
            runs = self.runs
            snapshot = self.rounds.observe(snapshot, now, lambda job: runs[job].total_ms - runs[job].progress_at(now))
        return Observation(self.clock() / MS, snapshot, self.queue, MappingProxyType(self.provisioning))

    def enact(self, decision: Decision) -> None:
        """Carries `decision` out: evictions, starts, and the autoscaler's answer to what it asks.

        A decision that places nothing and leaves nothing pending was about no job (the queue
        showed none): the autoscaler keeps its last answer.
        """
        if not decision.placements and not decision.pending:
            return
        now = self.clock()
        if decision.solver is not None:
            self.sink.solver(now, decision.solver)
            self.tally.solved(decision.solver)
        after = apply(self.snapshot, decision, now / MS)  # validates: no over-allocation, MIG, gangs
        victims = [self.runs[preemption.job] for preemption in decision.preemptions]
        self.snapshot = after
        for run in victims:
            run.preemptions += 1
            if self.rounds is not None:  # Gavel's jobs save at the end of their lease: nothing is lost
                run.saved_ms, run.safe_since_ms = run.progress_at(now), now
            self._stop(run, now, reason="preempted")
            self._evict(run, now, released=True)
        for placement in decision.placements:
            self._start(self.runs[placement.job.id], placement, now)
        if self.guardrails is not None:
            for job_id, reason in self.guardrails.decided(decision, now):
                self._deny(self.runs[job_id], now, reason)
        if self.check:
            self.check_invariants()
        for placement in decision.placements:
            self.processes.start_job(self.runs[placement.job.id])
            for replica in placement.replicas:
                self.idle_since.pop(replica.node, None)
        self.reserved = decision.reservation.nodes if decision.reservation is not None else frozenset()
        self._autoscale(decision.provision, decision.pending)

    # What the engine reports ----------------------------------------------------------------

    def on_arrival(self, job: Job) -> JobRun:
        run = JobRun(job, total_ms=ms(job.duration_s))
        self.runs[job.id] = run
        self.queue.add(job)
        self.tally.arrived(job.submit_s)
        if self.guardrails is not None:
            self.guardrails.arrived(job, self.snapshot.pools, self.clock())
        self.event(self.clock(), "arrive", {"job": job.id})
        if self.rounds is not None:
            self.rounds.arrived(job, self.clock())
        return run

    def on_finish(self, run: JobRun) -> None:
        now = self.clock()
        run.phase, run.end_ms = Phase.DONE, now
        run.outcome = "completed" if run.job.kind is JobKind.SERVICE else run.job.status
        self._release(run, now)
        self.event(now, "finish", {"job": run.job.id, "outcome": run.outcome})
        if self.rounds is not None:
            self.rounds.ended(run.job.id)
        self._retire(run)

    def close(self, end_ms: int, reasons: Mapping[str, str]) -> None:
        """The replay ended at `end_ms`: accounts settled, jobs still waiting told as unfinished
        (in submit order) with the `reasons` they did not run, the last timeline row told."""
        self.ledger.settle(end_ms)
        if self.guardrails is not None:
            reasons = {**reasons, **self.guardrails.close(end_ms)}  # held by a guardrail: that is why
        left = [run for run in self.runs.values() if run.phase is not Phase.DONE]
        for run in sorted(left, key=lambda r: (r.job.submit_s, r.job.id)):
            self._retire(run, reasons.get(run.job.id, ""))
        if self._row is not None:
            self.sink.timeline(self._row)
            self._row = None

    def _retire(self, run: JobRun, reason: str = "") -> None:
        """An ended job: its row to the sink, its totals to the tally; forgotten unless kept."""
        job_id = run.job.id
        units = self.ledger.units(self.ledger.jobs.get(job_id, {}))
        self.sink.job(run, units / self.ledger.denominator, reason)  # int / int: the exact value, rounded once
        self.tally.add_job(run, units, reason if run.outcome != DENIED else "")
        self.tally.measured.add(run, self.ledger, units)  # before `retire` forgets its part-ms
        if not self.keep:
            del self.runs[job_id]
            self.ledger.retire(job_id)

    def _deny(self, run: JobRun, now: int, reason: str) -> None:
        """A guardrail denied a waiting job: it leaves the queue, ends as denied, with the reason."""
        self.queue.remove(run.job)
        run.phase, run.end_ms, run.outcome = Phase.DONE, now, DENIED
        self.event(now, "deny", {"job": run.job.id, "reason": reason})
        if self.guardrails is not None:
            self.guardrails.denied(run.job, now)
        self._retire(run, reason)

    def on_checkpoint(self, run: JobRun) -> None:
        now = self.clock()
        run.saved_ms, run.safe_since_ms = run.progress_ms, now
        self.event(now, "checkpoint", {"job": run.job.id, "saved_s": run.saved_ms / MS})

    # Nodes ----------------------------------------------------------------------------------

    def node_booted(self, name: str) -> None:
        """A node asked for is ready."""
        pool = self.snapshot.nodes[name].pool
        self.provisioning[pool] -= 1
        self.record(pool)
        self.node_ready(name)

    def node_ready(self, name: str) -> None:
        node = self.snapshot.nodes[name]
        self.snapshot = self.snapshot.with_node(Node(name=node.name, pool=node.pool, gpus=node.gpus, ready=True))
        self.event(self.clock(), "node-ready", {"node": name})

    def taken_back(self, name: str) -> None:
        """The cloud took a spot node back at the end of its notice."""
        self.remove_node(name, "spot-interruption")
        self.idle_since.pop(name, None)
        self.start_idle_clocks()

    def interrupt_notice(self, name: str, notice_ms: int) -> None:
        """A spot notice: the node takes no new work; jobs on it stop, checkpointing if they can."""
        now = self.clock()
        node = self.snapshot.nodes[name]
        if node.ready:
            node = Node(name=node.name, pool=node.pool, gpus=node.gpus, ready=False)
            self.snapshot = self.snapshot.with_node(node)
        self.event(now, "spot-notice", {"node": name, "notice_s": notice_ms / MS})
        for job_id in sorted({job for gpu in node.gpus for job in gpu.jobs()}):
            run = self.runs[job_id]
            if run.phase is Phase.STOPPING:  # a gang already stopped by a notice on another of its nodes
                continue
            run.interruptions += 1
            job = run.job
            if job.checkpointable and ms(job.checkpoint_overhead_s) <= notice_ms and run.phase is Phase.COMPUTE:
                run.progress_ms = run.progress_at(now)
                run.phase = Phase.STOPPING
                run.saved_ms, run.safe_since_ms = run.progress_ms, now + ms(job.checkpoint_overhead_s)
                self.event(now, "checkpoint", {"job": job_id, "saved_s": run.saved_ms / MS, "on": "notice"})
            self._stop(run, now, reason="spot-notice")

    def remove_node(self, name: str, reason: str) -> None:
        now = self.clock()
        node = self.snapshot.nodes[name]
        for job_id in sorted({job for gpu in node.gpus for job in gpu.jobs()}):
            run = self.runs[job_id]
            if run.phase is not Phase.STOPPING:
                self._stop(run, now, reason=reason)
            self._evict(run, now)
        node = self.snapshot.nodes[name]
        self.snapshot = self.snapshot.without_node(name)
        self.node_count[node.pool] -= 1
        self.ledger.close(name, now)
        self.event(now, "node-remove", {"node": name, "reason": reason})
        self.record(node.pool)

    # Internals -------------------------------------------------------------------------------

    def _start(self, run: JobRun, placement: Placement, now: int) -> None:
        """Bookkeeping of a placement already in the snapshot: ledger, speed, log."""
        pools = self.snapshot.pools
        run.placement, run.held_parts = placement, {}
        self.running_count += 1
        for replica in placement.replicas:
            pool = pools[self.snapshot.nodes[replica.node].pool]
            parts = self._parts_of(pool, run.job.request) * len(replica.grants)
            run.held_parts[replica.node] = run.held_parts.get(replica.node, 0) + parts
            run.pools.add(pool.name)
        if self.guardrails is not None:
            units = self.ledger.units(self.ledger.jobs.get(run.job.id, {}))
            replica_pools = [pools[self.snapshot.nodes[replica.node].pool] for replica in placement.replicas]
            self.guardrails.started(run.job, replica_pools, now, units)
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
        self.event(now, "start", {"job": run.job.id, "nodes": nodes, "restart": restart})

    def _stop(self, run: JobRun, now: int, reason: str) -> None:
        """The job stops making progress now; what it has not saved is lost."""
        if run.phase is not Phase.STOPPING:
            lost_wall = now - run.safe_since_ms if run.job.kind is JobKind.BATCH else 0
            run.progress_ms = run.saved_ms
            for node, parts in run.held_parts.items():
                self.ledger.lose(run.job.id, self.snapshot.nodes[node].pool, parts * lost_wall)
            run.lost_gpu_ms += round(run.gpus() * lost_wall)
        run.phase = Phase.STOPPING
        run.epoch += 1  # whatever the engine had scheduled for this job will not happen
        self.event(now, "stop", {"job": run.job.id, "reason": reason})

    def _evict(self, run: JobRun, now: int, *, released: bool = False) -> None:
        """The job gives its GPUs back (`released`: the snapshot already has) and waits again."""
        self._release(run, now, in_snapshot=not released)
        run.phase, run.placement = Phase.WAITING, None
        self.queue.add(run.job)

    def _release(self, run: JobRun, now: int, *, in_snapshot: bool = True) -> None:
        if run.placement is None:
            return
        names = {r.node for r in run.placement.replicas}
        if in_snapshot:
            self.snapshot = self.snapshot.release(run.job.id)
        for name in names:
            if not any(gpu.busy for gpu in self.snapshot.nodes[name].gpus):
                self._emptied.add(name)
        for node, parts in run.held_parts.items():
            self.ledger.free(node, run.job.id, now)
            self._busy(node, -parts)
        if self.guardrails is not None:
            units = self.ledger.units(self.ledger.jobs.get(run.job.id, {}))
            self.guardrails.stopped(run.job, now, units, self.ledger.denominator)
        run.held_parts = {}
        self.running_count -= 1

    def _parts_of(self, pool: Pool, request: GpuRequest) -> int:
        """`ledger.parts_of`, worked out once per pool and request: every start asks."""
        key = (pool.name, request)
        parts = self._parts.get(key)
        if parts is None:
            parts = self._parts[key] = parts_of(pool, request)
        return parts

    def _busy(self, node: str, parts: int) -> None:
        pool = self.snapshot.nodes[node].pool
        self.busy_parts[pool] = self.busy_parts.get(pool, 0) + parts
        self.record(pool)

    def record(self, pool: str) -> None:
        """Adds the pool's state now to the timeline (one row per pool and instant: a row is told
        the sink once the next one is for another pool or instant)."""
        row = (self.clock(), pool, self.node_count.get(pool, 0), self.busy_parts.get(pool, 0),
               self.provisioning.get(pool, 0))  # fmt: skip
        last = self._row
        if last is not None and last[:2] != row[:2]:
            self.sink.timeline(last)
        self._row = row

    def check_invariants(self) -> None:
        """The ledger's holders equal the GPUs the snapshot shows held, node by node."""
        self.ledger.check_holders(self.snapshot, lambda pool, job: self._parts_of(pool, self.runs[job].job.request))
