"""Benchmark: replay the 82,247-job Philly extract on a 512-GPU cluster, and a bare SimPy replay.

The cluster (benchmarks/data/philly-512.toml) is 64 nodes of 8 GPUs in two pools, room for
the load. With `--overloaded` it is benchmarks/data/philly-320.toml: 40 nodes, about 60 % of
the GPUs the load needs, so thousands of jobs wait at once (where a replay that showed every
cycle the whole queue would be quadratic). The bare replay is the floor any SimPy simulator
stands on: one process per job, one simpy.Container of the same GPUs, each job taking its
GPUs, holding them for its duration, giving them back (no nodes, no policy, no ledger).
Prints wall seconds, jobs per second, peak memory and the ratio.
Targets: under 15 s; within 3x of the bare replay, and 8x when overloaded.

With `--split` it also says where the replay's time goes: deciding (`Scheduler.decide`, every
cycle), enacting (`SimWorld.enact`), and the rest (the SimPy engine, arrivals, job ends, the
ledger, records), each also per job and as a multiple of the bare replay. The timers add about
a microsecond a cycle, so the ratio is read from a run without them.

    python benchmarks/bench_sim.py [--overloaded] [--trace PATH] [--profile default] [--jobs N] [--split] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import simpy
from machine import describe, machine

import policies
from scheduler.cluster import load_cluster
from scheduler.decision import Decision
from scheduler.model import Job
from scheduler.world import Observation, Scheduler
from simulator.engine import SimOptions, collector_spared, simulate
from simulator.world import SimWorld
from traces.formats import read_trace_jobs

HERE = Path(__file__).resolve().parent
DEFAULT_TRACE = HERE.parents[1] / "shared/traces/pollux-adaptdl/traces/philly.csv"
CLUSTER = HERE / "data" / "philly-512.toml"
OVERLOADED = HERE / "data" / "philly-320.toml"


def bare_replay(jobs: list[Job], gpus: int) -> float:
    """Seconds for the bare SimPy replay of the same arrivals, sizes and durations."""
    env = simpy.Environment()
    pool = simpy.Container(env, capacity=gpus, init=gpus)

    def job_process(job: Job) -> simpy.events.ProcessGenerator:
        yield env.timeout(max(0.0, job.submit_s - env.now))
        need = min(gpus, job.request.gpus * job.replicas)
        yield pool.get(need)
        yield env.timeout(job.duration_s)
        yield pool.put(need)

    start = time.perf_counter()
    for job in jobs:
        env.process(job_process(job))
    with collector_spared():  # the same collector settings the simulator runs under
        env.run()
    return time.perf_counter() - start


class TimedScheduler(Scheduler):
    """A Scheduler that adds up the seconds its cycles spend deciding."""

    decide_s = 0.0
    cycles = 0

    def decide(self, observation: Observation, seed: int = 0) -> Decision:
        start = time.perf_counter()
        try:
            return super().decide(observation, seed)
        finally:
            self.decide_s += time.perf_counter() - start
            self.cycles += 1


@contextmanager
def timed_enact() -> Iterator[list[float]]:
    """Adds up, in the list it yields, the seconds `SimWorld.enact` takes while the context lasts."""
    spent = [0.0]
    enact = SimWorld.enact

    def timed(world: SimWorld, decision: Decision) -> None:  # the same signature as the method
        start = time.perf_counter()
        try:
            enact(world, decision)
        finally:
            spent[0] += time.perf_counter() - start

    SimWorld.enact = timed  # type: ignore[method-assign,assignment]
    try:
        yield spent
    finally:
        SimWorld.enact = enact  # type: ignore[method-assign]


PARTS = {"decide": "deciding", "enact": "enacting", "rest": "the rest (engine, arrivals, ends, ledger, records)"}


def split(jobs: int, wall_s: float, bare_s: float, spent_s: dict[str, float], cycles: int) -> dict[str, float]:
    """Where a replay's `wall_s` went (`spent_s`: deciding and enacting; the rest is what is left),
    in seconds, microseconds per job and multiples of the bare replay's `bare_s`."""
    seconds = {**spent_s, "rest": wall_s - sum(spent_s.values())}
    report: dict[str, float] = {"cycles": cycles, "bare_us_per_job": round(1e6 * bare_s / jobs, 1)}
    for name in PARTS:
        report[f"{name}_s"] = round(seconds[name], 2)
        report[f"{name}_us_per_job"] = round(1e6 * seconds[name] / jobs, 1)
        report[f"{name}_to_bare"] = round(seconds[name] / bare_s, 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--jobs", type=int, default=0, help="replay only the first N jobs (0: all)")
    parser.add_argument("--overloaded", action="store_true", help="on 320 GPUs, about 60 %% of what the load needs")
    parser.add_argument("--split", action="store_true", help="also time deciding and enacting apart from the rest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    jobs = sorted(read_trace_jobs(args.trace), key=lambda job: (job.submit_s, job.id))
    if args.jobs:
        jobs = jobs[: args.jobs]
    cluster = load_cluster(OVERLOADED if args.overloaded else CLUSTER)
    gpus = sum(pool.nodes * pool.gpus_per_node for pool in cluster.pools.values())
    bare_s = bare_replay(jobs, gpus)
    scheduler = (TimedScheduler if args.split else Scheduler)(policies.profile(args.profile), explain=False)
    with timed_enact() if args.split else nullcontext([0.0]) as enact_s:
        start = time.perf_counter()
        result = simulate(jobs, cluster, scheduler, SimOptions(seed=0))
        wall_s = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finished = sum(1 for run in result.world.runs.values() if run.outcome)
    report = {
        "machine": machine(), "trace": str(args.trace), "profile": args.profile, "jobs": len(jobs),
        "cluster": (OVERLOADED if args.overloaded else CLUSTER).name,
        "finished": finished, "gpus": gpus, "wall_s": round(wall_s, 2), "jobs_per_s": round(len(jobs) / wall_s),
        "bare_simpy_s": round(bare_s, 2), "ratio_to_bare": round(wall_s / bare_s, 2), "peak_rss_mib": round(peak_mib),
        "simulated_days": round(result.end_ms / 86_400_000, 1),
    }
    if isinstance(scheduler, TimedScheduler):
        spent = {"decide": scheduler.decide_s, "enact": enact_s[0]}
        report["split"] = split(len(jobs), wall_s, bare_s, spent, scheduler.cycles)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe())
    print(f"{report['jobs']:,} jobs ({finished:,} finished) on {gpus} GPUs ({report['cluster']}), "
          f"profile {args.profile}, {report['simulated_days']} simulated days")
    print(f"fleetsched: {wall_s:.2f} s ({report['jobs_per_s']:,} jobs/s); bare SimPy replay: {bare_s:.2f} s; "
          f"ratio {report['ratio_to_bare']}x; peak RSS {report['peak_rss_mib']} MiB")
    if isinstance(scheduler, TimedScheduler):
        parts = report["split"]
        print(f"where the time went ({parts['cycles']:,} cycles; bare replay {parts['bare_us_per_job']} µs a job):")
        for name, what in PARTS.items():
            print(f"  {what}: {parts[f'{name}_s']} s, {parts[f'{name}_us_per_job']} µs a job, "
                  f"{parts[f'{name}_to_bare']}x the bare replay")  # fmt: skip


if __name__ == "__main__":
    main()
