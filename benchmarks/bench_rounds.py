"""Gavel's heterogeneity-aware LAS against the agnostic one, in 6-minute rounds (OSDI'20, Fig. 9 setup).

Gavel's generated job stream (single-GPU jobs, Poisson arrivals; `traces.synth.gavel_jobs`) on
the bundled 36:36:36 V100/P100/K80 cluster, rounds of 360 s, profiles gavel-las and
gavel-las-agnostic. The average JCT is taken over a steady-state window of jobs (by arrival
index, after a warm-up; jobs keep arriving after the window, as in Gavel's simulator, until the
trace ends). Prints, per seed, both averages and their ratio (agnostic / aware), and the machine.

    python benchmarks/bench_rounds.py --seeds 0 1 2 --jobs-per-hour 6 --warmup 250 --window 1000 --jobs 1750
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from machine import describe

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import policies
from scheduler.cluster import load_cluster
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from traces.synth import gavel_jobs

CLUSTER = Path(__file__).resolve().parent.parent / "traces" / "samples" / "gavel-cluster.toml"
PROFILES = ("gavel-las", "gavel-las-agnostic")


def window_jct_s(profile: str, seed: int, args: argparse.Namespace) -> tuple[float, float]:
    """Mean JCT (s) of the window's jobs under `profile`, and the replay's wall time (s)."""
    jobs = list(gavel_jobs(args.jobs, seed, args.jobs_per_hour, multi_gpu=False))
    window = {job.id for job in jobs[args.warmup:args.warmup + args.window]}
    started = time.perf_counter()
    result = simulate(jobs, load_cluster(CLUSTER), Scheduler(policies.profile(profile)),
                      SimOptions(seed=seed, round_s=360.0))
    wall_s = time.perf_counter() - started
    runs = result.world.runs
    unfinished = [job_id for job_id in window if runs[job_id].end_ms is None]
    if unfinished:
        raise SystemExit(f"{len(unfinished)} window jobs did not finish under {profile}, seed {seed}")
    jct = [(runs[job_id].end_ms or 0) / 1000 - runs[job_id].job.submit_s for job_id in sorted(window)]
    return statistics.fmean(jct), wall_s


# --table: one row per seed and profile, for the literature's profiles beside the LAS pair
# (policies/literature.py). --gcp-prices prices the cluster at Gavel's GCP prices per GPU-hour
# (gavel scheduler/utils.py), so that gavel-cost has prices to weigh and every row a cost:
# attributed_usd is the GPU-time jobs held (idle GPUs not counted) over the whole replay.
GCP_USD_PER_GPU_HOUR = {"v100": 0.74, "p100": 0.43, "k80": 0.135}


def table(args: argparse.Namespace) -> None:
    """Prints, per seed and profile, the window's mean JCT, the attributed cost and the preemptions."""
    import dataclasses
    from types import MappingProxyType

    from simulator.metrics import summary

    cluster = load_cluster(CLUSTER)
    if args.gcp_prices:
        cluster = dataclasses.replace(cluster, pools=MappingProxyType({
            name: dataclasses.replace(pool, usd_per_node_hour=GCP_USD_PER_GPU_HOUR[name] * pool.gpus_per_node)
            for name, pool in cluster.pools.items()}))  # fmt: skip
    for seed in args.seeds:
        jobs = list(gavel_jobs(args.jobs, seed, args.jobs_per_hour, multi_gpu=False))
        window = sorted(job.id for job in jobs[args.warmup:args.warmup + args.window])
        for profile in args.table.split(","):
            started = time.perf_counter()
            result = simulate(jobs, cluster, Scheduler(policies.profile(profile)), SimOptions(seed=seed, round_s=360.0))
            wall_s = time.perf_counter() - started
            runs = result.world.runs
            if any(runs[job_id].end_ms is None for job_id in window):
                raise SystemExit(f"window jobs did not finish under {profile}, seed {seed}")
            jct = statistics.fmean((runs[job_id].end_ms or 0) / 1000 - runs[job_id].job.submit_s for job_id in window)
            print(json.dumps({"seed": seed, "profile": profile, "jct_h": round(jct / 3600, 2),
                              "attributed_usd": summary(result)["cost_usd"]["attributed"],
                              "preemptions": sum(run.preemptions for run in runs.values()),
                              "replay_s": round(wall_s, 1)}), flush=True)  # fmt: skip
    print(describe())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs-per-hour", type=float, default=6.0)
    parser.add_argument("--jobs", type=int, default=1750)
    parser.add_argument("--warmup", type=int, default=250)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--table", help="comma-separated profiles: one row each per seed instead of the ratio")
    parser.add_argument("--gcp-prices", action="store_true", help="with --table: Gavel's GCP prices per GPU-hour")
    args = parser.parse_args()
    if args.table:
        table(args)
        return
    rows = []
    for seed in args.seeds:
        (aware, aware_s), (agnostic, agnostic_s) = (window_jct_s(p, seed, args) for p in PROFILES)
        rows.append({"seed": seed, "aware_jct_h": round(aware / 3600, 2), "agnostic_jct_h": round(agnostic / 3600, 2),
                     "ratio": round(agnostic / aware, 3), "replay_s": [round(aware_s, 1), round(agnostic_s, 1)]})
        print(json.dumps(rows[-1]), flush=True)
    ratios = [row["ratio"] for row in rows]
    print(f"agnostic / aware mean JCT over jobs {args.warmup}..{args.warmup + args.window - 1} of {args.jobs}, "
          f"{args.jobs_per_hour} jobs/h, seeds {args.seeds}: ratio mean {statistics.fmean(ratios):.3f}, "
          f"min {min(ratios):.3f}, max {max(ratios):.3f}")
    print(describe())


if __name__ == "__main__":
    main()
