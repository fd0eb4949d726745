"""The SimPy engine: arrivals, the scheduler loop, jobs, spot take-backs, node boots and idle timers.

SimPy keeps time (integer milliseconds) and nothing else: GPUs are not SimPy resources, so
SimPy never becomes a second scheduler. Processes are plain generators named after actors.
The scheduler loop is `run_cycle` over the `SimWorld`, which owns the state and decides what
becomes of nodes; the engine runs the processes the world asks for (its `Processes`).
Randomness comes from generators seeded by the run's seed and a stable name (per node for
spot interruptions), so the same inputs and seed replay identically.

Jobs arrive from an iterable: a sequence is sorted by submit time first; an iterator is
read as the clock reaches each job (a trace streamed from its file), and must come in submit
order (jobs submitted at one instant are taken in id order, as a sorted trace would give them).
"""

from __future__ import annotations

import gc
import itertools
import math
import random
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import simpy

from scheduler.cluster import Cluster
from scheduler.enforcement import enforces
from scheduler.errors import InputError
from scheduler.feasibility import unfinished_reasons
from scheduler.governance import Governance
from scheduler.model import Capacity, Job, JobKind, Node, Pool
from scheduler.world import Scheduler, run_cycle
from simulator.guardrails import Guardrails
from simulator.ledger import Ledger
from simulator.recording import Memory, Sink
from simulator.rounds import RoundsLedger
from simulator.runs import MS, JobRun, Phase, ms
from simulator.world import SimWorld
from traces.base import MAX_REPLAY_S

Process = Generator[Any, Any, None]


@dataclass(frozen=True, slots=True, kw_only=True)
class SimOptions:
    """How to run: the seed, event-driven or fixed rounds, invariant checks, progress reports."""

    seed: int = 0
    round_s: float = 0.0
    check: bool = False
    progress: Callable[[int, int], None] | None = None
    """Called as jobs end with (jobs ended, jobs in the trace: `total_jobs`, or 0 when unknown)."""
    total_jobs: int = 0
    reclaims: Mapping[str, float] = field(default_factory=dict)
    """Recorded spot take-backs to replay: node name -> time (s) of its notice (no random draw)."""
    governance: Governance | None = None
    """The guardrails' rules (`scheduler.governance`): the world keeps spend, approvals and holds
    and shows them to the profile's guardrail plugins; a profile without any only reports them."""


@dataclass(slots=True)
class Engine:
    """One replay: the SimPy environment and the processes that drive the world (its `Processes`)."""

    env: simpy.Environment
    scheduler: Scheduler
    options: SimOptions
    world: SimWorld = field(init=False)
    arrivals_done: bool = False
    arrived: int = 0
    finished: int = 0
    wake_event: Any = None
    woken: bool = False
    done: Any = None
    spot_rng: dict[str, random.Random] = field(default_factory=dict)

    @property
    def now(self) -> int:
        return int(self.env.now)

    def wake(self) -> None:
        self.woken = True
        if self.wake_event is not None and not self.wake_event.triggered:
            self.wake_event.succeed()

    # Processes --------------------------------------------------------------------------------

    def arrivals(self, jobs: Iterable[Job]) -> Process:
        for job in jobs:
            if job.submit_s > MAX_REPLAY_S or job.duration_s > MAX_REPLAY_S:  # any reader's jobs, not only canonical
                raise InputError(f"job {job.id}: submit_s {job.submit_s:g} and duration_s {job.duration_s:g} must "
                                 f"each be at most {MAX_REPLAY_S:g} s (a century of simulated time)")  # fmt: skip
            delay = ms(job.submit_s) - self.now
            if delay > 0:
                yield self.env.timeout(delay)
            self.arrived += 1
            self.world.on_arrival(job)
            self.wake()
        self.arrivals_done = True
        self.wake()

    def scheduler_loop(self) -> Process:
        while True:
            if self.options.round_s > 0:
                yield self.env.timeout(max(1, ms(self.options.round_s)))  # never a round of 0 ms
                self.woken = False
            else:
                if not self.woken:
                    # The wake event is queued behind every event already due at this instant
                    # (SimPy orders same-time events by insertion), so one cycle sees them all.
                    self.wake_event = self.env.event()
                    yield self.wake_event
                self.woken = False
            if len(self.world.queue):  # nothing waits, nothing to decide
                run_cycle(self.world, self.scheduler, self.options.seed)
            self.world.start_idle_clocks()
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
            run.phase, run.phase_start_ms = Phase.RESTORE, self.now  # lost too if evicted before the next save
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
        run.phase, run.phase_start_ms = Phase.COMPUTE, self.now
        self._after(wall, run, epoch, self._computed)

    def _computed(self, run: JobRun, epoch: int) -> None:
        wall = self.now - run.phase_start_ms
        remaining = run.total_ms - run.progress_ms
        done = math.floor(wall * run.speed)
        run.progress_ms = run.total_ms if wall * run.speed >= remaining else run.progress_ms + done
        if run.job.checkpointable and run.job.kind is JobKind.BATCH and run.progress_ms < run.total_ms:
            run.phase, run.phase_start_ms = Phase.CHECKPOINT, self.now
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
            self.options.progress(self.finished, self.options.total_jobs)
        self.world.start_idle_clocks()
        self.wake()

    def timer(self, delay_ms: int, then: Callable[[], None]) -> None:
        """Calls `then` after `delay_ms`, then wakes the scheduler (an approval, a new budget period)."""

        def fire(_: object) -> None:
            then()
            self.wake()

        self.env.timeout(delay_ms).callbacks.append(fire)

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
            self.world.taken_back(node)
            self.wake()

    def boot(self, node: Node, pool: Pool) -> None:
        self.env.process(self._boot(node, pool))

    def _boot(self, node: Node, pool: Pool) -> Process:
        yield self.env.timeout(ms(pool.provision_delay_s))
        self.world.node_booted(node.name)
        self.ready(node.name, pool)
        self.wake()

    def ready(self, name: str, pool: Pool) -> None:
        """A node is ready: spot capacity may be taken back from now on; its idle clock starts."""
        if pool.capacity is Capacity.SPOT and (pool.interruptions_per_node_hour > 0 or name in self.options.reclaims):
            self.env.process(self.spot_market(name, pool))
        self.world.mark_idle(name)

    def idle_timer(self, name: str, since_ms: int, pool: Pool) -> None:
        self.env.process(self._idle_timer(name, since_ms, pool))

    def _idle_timer(self, name: str, since_ms: int, pool: Pool) -> Process:
        yield self.env.timeout(ms(pool.idle_release_s))
        self.world.idle_expired(name, since_ms)

    def _stuck(self) -> bool:
        """All jobs ended, or nothing can ever change: no arrivals, runs or nodes coming, and
        nothing changed since the cycle (jobs with no work end inside the cycle that starts
        them: the capacity they free is a change, however quiet the cluster looks)."""
        if self.finished == self.arrived and self.arrivals_done:
            return True
        return self.arrivals_done and self.world.quiet and not self.woken


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
    """What a replay leaves: the world (runs, ledger, tally, and its history when kept), when it
    ended, and why each job it left unfinished did not run (`scheduler.feasibility.unfinished_reasons`)."""

    world: SimWorld
    end_ms: int
    profile: str
    seed: int
    reasons: Mapping[str, str] = field(default_factory=dict)


def in_submit_order(jobs: Iterable[Job]) -> Iterator[Job]:
    """`jobs`, known to come in submit order, with each instant's jobs in id order; InputError
    on a job submitted before the one before it."""
    last_s = -math.inf
    for submit_s, group in itertools.groupby(jobs, key=lambda job: job.submit_s):
        instant = sorted(group, key=lambda job: job.id)
        if submit_s < last_s:
            raise InputError(f"jobs are not in submit order: {instant[0].id} is submitted at {submit_s} s, "
                             f"after a job submitted at {last_s} s")  # fmt: skip
        last_s = submit_s
        yield from instant


def profile_runs_rounds(scheduler: Scheduler) -> bool:
    """Whether a plugin of the profile reads the round view (`scheduler.rounds`): then the world
    keeps it. The round filter, score and postfilter read the priorities a round sort plugin
    computes: a profile naming them with another sort is refused (InputError on its `sort`)."""
    profile = scheduler.profile
    plugins = (*profile.filter, *profile.postfilter, *(plugin for plugin, _ in profile.score))
    readers = sorted(type(plugin).__name__ for plugin in plugins if getattr(plugin, "reads_rounds", False))
    sorts_by_rounds = getattr(profile.sort, "reads_rounds", False)
    if readers and not sorts_by_rounds:
        raise InputError(f"{', '.join(readers)} read the round priorities a round sort plugin computes; "
                         f"sort is {type(profile.sort).__name__} (use RoundsLas, RoundsLasAgnostic, RoundsFifo, "
                         "RoundsSjf or RoundsSrtf)", source=f"profile {profile.name}", field="sort")  # fmt: skip
    return bool(sorts_by_rounds)


def simulate(
    jobs: Iterable[Job],
    cluster: Cluster,
    scheduler: Scheduler,
    options: SimOptions | None = None,
    sink: Sink | None = None,
) -> SimResult:
    """Replays `jobs` on `cluster` with `scheduler`; returns the finished world.

    A sequence of jobs may come in any order; an iterator must come in submit order and is
    read as the replay goes. With a `sink`, the world tells it its history and forgets each
    job once it has ended; without, it keeps everything (`SimWorld.memory`).
    """
    options = options or SimOptions()
    env = simpy.Environment()
    snapshot = cluster.snapshot()
    if isinstance(jobs, Sequence):
        arriving: Iterable[Job] = sorted(jobs, key=lambda job: (job.submit_s, job.id))
        options = replace(options, total_jobs=options.total_jobs or len(jobs))
    else:
        arriving = in_submit_order(jobs)
    engine = Engine(env, scheduler, options)
    world = SimWorld(snapshot, Ledger(snapshot.pools), scheduler.queue(), clock=lambda: int(env.now), processes=engine,
                     check=options.check, sink=Memory() if sink is None else sink, keep=sink is None)  # fmt: skip
    if options.governance is not None:
        world.guardrails = Guardrails(options.governance, options.seed, engine.timer, lambda job: world.runs[job].job,
                                      enforced=enforces(scheduler.profile))  # fmt: skip
    if profile_runs_rounds(scheduler):
        world.rounds = RoundsLedger()  # without --round-s, every cycle is a round
    engine.world = world
    engine.done = env.event()
    for name, node in sorted(snapshot.nodes.items()):
        engine.ready(name, snapshot.pools[node.pool])
    env.process(engine.arrivals(arriving))
    env.process(engine.scheduler_loop())
    with collector_spared():
        env.run(until=engine.done)
    end = int(env.now)
    unfinished = (run.job for run in world.runs.values() if not run.outcome)
    reasons = unfinished_reasons(scheduler.profile, world.snapshot, unfinished)
    world.close(end, reasons)
    world.ledger.check()
    return SimResult(world, end, scheduler.profile.name, options.seed, reasons)


__all__ = ["MS", "SimOptions", "SimResult", "simulate"]
