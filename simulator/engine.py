"""The SimPy engine: arrivals, the scheduler loop, jobs, the spot market and the autoscaler.

SimPy keeps time (integer milliseconds) and nothing else: GPUs are not SimPy resources, so
SimPy never becomes a second scheduler. Processes are plain generators named after actors.
Randomness comes from generators seeded by the run's seed and a stable name (per node for
spot interruptions), so the same inputs and seed replay identically.
"""

from __future__ import annotations

import gc
import math
import random
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import simpy

from scheduler.cluster import Cluster
from scheduler.model import Capacity, Job, JobKind, Node, Pool, empty_node
from scheduler.world import Scheduler
from simulator.ledger import Ledger
from simulator.world import MS, JobRun, SimWorld, ms

Process = Generator[Any, Any, None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """How to run: the seed, event-driven or fixed rounds, invariant checks, progress reports."""

    seed: int = 0
    round_s: float = 0.0
    check: bool = False
    progress: Callable[[int, int], None] | None = None
    reclaims: Mapping[str, float] = field(default_factory=dict)
    """Recorded spot take-backs to replay: node name -> time (s) of its notice (no random draw)."""


@dataclass(slots=True)
class Engine:
    """One replay: the SimPy environment, the world, and the bookkeeping of the processes."""

    env: simpy.Environment
    world: SimWorld
    scheduler: Scheduler
    options: SimOptions
    total_jobs: int
    arrivals_done: bool = False
    finished: int = 0
    wake_event: Any = None
    woken: bool = False
    done: Any = None
    spot_rng: dict[str, random.Random] = field(default_factory=dict)
    serial: dict[str, int] = field(default_factory=dict)
    idle_since: dict[str, int] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)

    @property
    def now(self) -> int:
        return int(self.env.now)

    def wake(self) -> None:
        self.woken = True
        if self.wake_event is not None and not self.wake_event.triggered:
            self.wake_event.succeed()

    # Processes --------------------------------------------------------------------------------

    def arrivals(self, jobs: Sequence[Job]) -> Process:
        for job in jobs:
            delay = ms(job.submit_s) - self.now
            if delay > 0:
                yield self.env.timeout(delay)
            self.world.on_arrival(job)
            self.wake()
        self.arrivals_done = True
        self.wake()

    def scheduler_loop(self) -> Process:
        while True:
            if self.options.round_s > 0:
                yield self.env.timeout(ms(self.options.round_s))
            else:
                if not self.woken:
                    # The wake event is queued behind every event already due at this instant
                    # (SimPy orders same-time events by insertion), so one cycle sees them all.
                    self.wake_event = self.env.event()
                    yield self.wake_event
                self.woken = False
            observation = self.world.observe() if len(self.world.queue) else None
            if observation is not None and observation.pending:
                decision = self.scheduler.schedule(
                    observation.snapshot, observation.pending, now_s=observation.now_s, seed=self.options.seed
                )
                self.world.enact(decision)
                for placement in decision.placements:
                    self.start_job(self.world.runs[placement.job.id])
                    for replica in placement.replicas:
                        self.idle_since.pop(replica.node, None)
                self.autoscale(decision.provision)
            self._mark_emptied()
            if self._stuck():
                break
        if not self.done.triggered:
            self.done.succeed()

    # A job's life is a chain of timeouts with callbacks rather than a process: a replay starts
    # tens of thousands of jobs, and a callback costs less than a generator. Stopping a job
    # bumps its epoch, which turns the callbacks still pending for it into no-ops.

    def start_job(self, run: JobRun) -> None:
        epoch = run.epoch
        if run.saved_ms and run.job.restore_s:
            run.phase, run.phase_start_ms = "restore", self.now  # lost too if evicted before the next save
            self._after(ms(run.job.restore_s), run, epoch, self._compute)
        else:
            self._compute(run, epoch)

    def _after(self, delay_ms: int, run: JobRun, epoch: int, step: Callable[[JobRun, int], None]) -> None:
        def fire(_: object) -> None:
            if run.epoch == epoch:
                step(run, epoch)

        self.env.timeout(delay_ms).callbacks.append(fire)

    def _compute(self, run: JobRun, epoch: int) -> None:
        if run.progress_ms >= run.total_ms:
            self._finish(run)
            return
        remaining = run.total_ms - run.progress_ms
        wall = math.ceil(remaining / run.speed)
        interval = ms(run.job.checkpoint_interval_s) if run.job.kind is JobKind.BATCH else 0
        if interval and interval < wall:
            wall = interval
        run.phase, run.phase_start_ms = "compute", self.now
        self._after(wall, run, epoch, self._computed)

    def _computed(self, run: JobRun, epoch: int) -> None:
        wall = self.now - run.phase_start_ms
        remaining = run.total_ms - run.progress_ms
        done = math.floor(wall * run.speed)
        run.progress_ms = run.total_ms if wall * run.speed >= remaining else run.progress_ms + done
        if run.job.checkpointable and run.job.kind is JobKind.BATCH and run.progress_ms < run.total_ms:
            run.phase, run.phase_start_ms = "checkpoint", self.now
            self._after(ms(run.job.checkpoint_overhead_s), run, epoch, self._checkpointed)
        else:
            self._compute(run, epoch)

    def _checkpointed(self, run: JobRun, epoch: int) -> None:
        self.world.on_checkpoint(run)
        self._compute(run, epoch)

    def _finish(self, run: JobRun) -> None:
        self.world.on_finish(run)
        self.finished += 1
        if self.options.progress is not None:
            self.options.progress(self.finished, self.total_jobs)
        self._mark_emptied()
        self.wake()

    def spot_market(self, node: str, pool: Pool) -> Process:
        if node in self.options.reclaims:
            yield self.env.timeout(max(0, ms(self.options.reclaims[node]) - self.now))
        else:
            rng = self.spot_rng.setdefault(node, random.Random(f"{self.options.seed}:{node}"))
            lifetime_h = rng.expovariate(pool.interruptions_per_node_hour)
            yield self.env.timeout(max(1, round(lifetime_h * 3_600_000)))
        if node not in self.world.snapshot.nodes:
            return
        notice = ms(pool.notice_s)
        self.world.interrupt_notice(node, notice)
        yield self.env.timeout(notice)
        if node in self.world.snapshot.nodes:
            self.world.remove_node(node, "spot-interruption")
            self.idle_since.pop(node, None)
            self._mark_emptied()
            self.wake()

    def provision_node(self, pool: Pool) -> Process:
        """Asks for a node now (it is billed while it boots) and makes it ready after the delay."""
        index = self.serial.get(pool.name, pool.nodes)
        self.serial[pool.name] = index + 1
        width = max(3, len(str(max(pool.max_nodes, pool.nodes))))
        node = empty_node(pool, f"{pool.name}-{index:0{width}d}")
        self.world.provisioning[pool.name] = self.world.provisioning.get(pool.name, 0) + 1
        self.world.add_node(Node(name=node.name, pool=pool.name, gpus=node.gpus, ready=False))
        return self._boot(node, pool)

    def _boot(self, node: Node, pool: Pool) -> Process:
        yield self.env.timeout(ms(pool.provision_delay_s))
        self.world.provisioning[pool.name] -= 1
        self.world.record(pool.name)
        self.ready(node.name, pool)
        self.wake()

    def ready(self, name: str, pool: Pool, *, initial: bool = False) -> None:
        if not initial:
            self.world.node_ready(name)
        if pool.capacity is Capacity.SPOT and (pool.interruptions_per_node_hour > 0 or name in self.options.reclaims):
            self.env.process(self.spot_market(name, pool))
        self._mark_idle(name)

    def idle_release(self, name: str, since: int, pool: Pool) -> Process:
        yield self.env.timeout(ms(pool.idle_release_s))
        if self.idle_since.get(name) != since or name not in self.world.snapshot.nodes:
            return
        if pool.name in self.wanted or self.world.provisioning.get(pool.name, 0):
            # Jobs that fit nowhere asked for this pool last cycle: keep its idle nodes for them
            # (as cluster-autoscaler keeps nodes pending pods could use), and look again later.
            self.idle_since.pop(name, None)
            self._mark_idle(name)
            return
        if self.world.node_count.get(pool.name, 0) > pool.min_nodes:
            self.world.remove_node(name, "idle")
            self.idle_since.pop(name, None)

    # Decisions about nodes ------------------------------------------------------------------------

    def autoscale(self, wanted: dict[str, int] | Any) -> None:
        self.wanted = {name for name, count in wanted.items() if count > 0}
        pools = self.world.snapshot.pools
        for pool_name, count in sorted(wanted.items()):
            pool = pools[pool_name]
            room = pool.max_nodes - self.world.node_count.get(pool_name, 0)
            # Nodes on their way and ready nodes standing idle count against the ask: a gang that
            # needs three nodes where two stand idle needs one more, not three.
            idle = sum(1 for name in self.idle_since if self.world.snapshot.nodes[name].pool == pool_name)
            adding = min(room, count - self.world.provisioning.get(pool_name, 0) - idle)
            for _ in range(max(0, adding)):
                self.env.process(self.provision_node(pool))

    def _mark_emptied(self) -> None:
        """Starts the idle clock of nodes the world reports emptied since the last look."""
        for name in sorted(self.world.emptied):
            if name in self.world.snapshot.nodes and name not in self.idle_since:
                self._mark_idle(name)
        self.world.emptied.clear()

    def _mark_idle(self, name: str) -> None:
        node = self.world.snapshot.nodes[name]
        pool = self.world.snapshot.pools[node.pool]
        if pool.capacity is Capacity.RESERVED or not pool.elastic:
            return
        if any(gpu.busy for gpu in node.gpus):
            return
        self.idle_since[name] = self.now
        self.env.process(self.idle_release(name, self.now, pool))

    def _stuck(self) -> bool:
        """All jobs ended, or nothing can ever change: no arrivals, runs or nodes coming."""
        if self.finished == self.total_jobs and self.arrivals_done:
            return True
        running = self.world.running_count > 0
        coming = any(self.world.provisioning.values())
        return self.arrivals_done and not running and not coming


@contextmanager
def collector_spared() -> Iterator[None]:
    """Runs the replay with CPython's cyclic collector told what is long-lived.

    A replay allocates millions of short-lived objects beside a large trace and cluster that
    live throughout; the collector would rescan those again and again (a quarter of a long
    replay's time). Freeze what exists, collect the young generation less often, and restore
    both afterwards.
    """
    gc.collect()
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(50_000, 20, 50)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@dataclass(frozen=True, slots=True)
class SimResult:
    """What a replay leaves: the world (runs, ledger, log, timeline) and when it ended."""

    world: SimWorld
    end_ms: int
    profile: str
    seed: int


def simulate(
    jobs: Sequence[Job], cluster: Cluster, scheduler: Scheduler, options: SimOptions | None = None
) -> SimResult:
    """Replays `jobs` (any order) on `cluster` with `scheduler`; returns the finished world."""
    options = options or SimOptions()
    env = simpy.Environment()
    snapshot = cluster.snapshot()
    world = SimWorld(scheduler, snapshot, Ledger(snapshot.pools), clock=lambda: int(env.now), check=options.check)
    ordered = sorted(jobs, key=lambda job: (job.submit_s, job.id))
    engine = Engine(env, world, scheduler, options, total_jobs=len(ordered))
    engine.done = env.event()
    for name, node in sorted(snapshot.nodes.items()):
        engine.ready(name, snapshot.pools[node.pool], initial=True)
    env.process(engine.arrivals(ordered))
    env.process(engine.scheduler_loop())
    with collector_spared():
        env.run(until=engine.done)
    end = int(env.now)
    world.ledger.settle(end)
    world.ledger.check()
    return SimResult(world, end, scheduler.profile.name, options.seed)


__all__ = ["MS", "SimOptions", "SimResult", "simulate"]
