"""Benchmark: replay the 82,247-job Philly extract on a 512-GPU cluster, and a bare SimPy replay.

The cluster (benchmarks/data/philly-512.toml) is 64 nodes of 8 GPUs in two pools, room for
the load. With `--overloaded` it is benchmarks/data/philly-320.toml: 40 nodes, about 60 % of
the GPUs the load needs, so thousands of jobs wait at once (where a replay that showed every
cycle the whole queue would be quadratic). The bare replay is the floor any SimPy simulator
stands on: one process per job, one simpy.Container of the same GPUs, each job taking its
GPUs, holding them for its duration, giving them back (no nodes, no policy, no ledger).
Prints wall seconds, jobs per second, peak memory and the ratio.
Targets: under 15 s; within 3x of the bare replay, and 8x when overloaded.

    python benchmarks/bench_sim.py [--overloaded] [--trace PATH] [--profile default] [--jobs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import simpy
from machine import describe, machine

import policies
from scheduler.cluster import load_cluster
from scheduler.model import Job
from scheduler.world import Scheduler
from simulator.engine import SimOptions, collector_spared, simulate
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--jobs", type=int, default=0, help="replay only the first N jobs (0: all)")
    parser.add_argument("--overloaded", action="store_true", help="on 320 GPUs, about 60 %% of what the load needs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    jobs = sorted(read_trace_jobs(args.trace), key=lambda job: (job.submit_s, job.id))
    if args.jobs:
        jobs = jobs[: args.jobs]
    cluster = load_cluster(OVERLOADED if args.overloaded else CLUSTER)
    gpus = sum(pool.nodes * pool.gpus_per_node for pool in cluster.pools.values())
    bare_s = bare_replay(jobs, gpus)
    start = time.perf_counter()
    result = simulate(jobs, cluster, Scheduler(policies.profile(args.profile), explain=False), SimOptions(seed=0))
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
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe())
    print(f"{report['jobs']:,} jobs ({finished:,} finished) on {gpus} GPUs ({report['cluster']}), "
          f"profile {args.profile}, {report['simulated_days']} simulated days")
    print(f"fleetsched: {wall_s:.2f} s ({report['jobs_per_s']:,} jobs/s); bare SimPy replay: {bare_s:.2f} s; "
          f"ratio {report['ratio_to_bare']}x; peak RSS {report['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
