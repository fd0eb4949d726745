"""Benchmark: one greedy scheduling cycle placing mixed jobs on a large four-pool cluster.

Default: 2,000 pending jobs (whole GPUs and gangs, GPU shares, MIG instances) on 2,000 empty
nodes in four pools (H100 on-demand, H100 spot, A100-40GB dynamic MIG, A10G shared). Prints
placements per second for each bundled profile, and the machine it ran on.
Target: at least 5,000 placements/s.

    python benchmarks/bench_plan.py [--nodes 2000] [--jobs 2000] [--seed 1] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from types import MappingProxyType

from machine import describe, machine

import policies
from scheduler.catalog import default_catalog
from scheduler.decision import validate
from scheduler.model import Capacity, ClusterSnapshot, GpuRequest, Job, MigMode, Pool, RequestKind, empty_node
from scheduler.world import Scheduler


def cluster(nodes: int) -> ClusterSnapshot:
    catalog = default_catalog()
    shares = {"h100-od": 0.30, "h100-spot": 0.30, "a100-mig": 0.15, "a10g-shared": 0.25}
    pools = {
        "h100-od": Pool(name="h100-od", gpu=catalog.resolve("H100-80GB"), gpus_per_node=8,
                        usd_per_node_hour=55.04),
        "h100-spot": Pool(name="h100-spot", gpu=catalog.resolve("H100-80GB"), gpus_per_node=8,
                          capacity=Capacity.SPOT, usd_per_node_hour=20.99),
        "a100-mig": Pool(name="a100-mig", gpu=catalog.resolve("A100-40GB"), gpus_per_node=8,
                         usd_per_node_hour=21.96, mig_mode=MigMode.DYNAMIC),
        "a10g-shared": Pool(name="a10g-shared", gpu=catalog.resolve("A10G"), gpus_per_node=4,
                            usd_per_node_hour=5.67, sharing=True),
    }
    all_nodes = {}
    for name, pool in pools.items():
        for index in range(round(nodes * shares[name])):
            node = empty_node(pool, f"{name}-{index:05d}")
            all_nodes[node.name] = node
    return ClusterSnapshot(MappingProxyType(pools), MappingProxyType(all_nodes))


def jobs(count: int, seed: int) -> list[Job]:
    rng = random.Random(seed)
    made = []
    for index in range(count):
        roll = rng.random()
        preemptible = rng.random() < 0.4
        if roll < 0.45:
            request = GpuRequest(gpus=rng.choice((1, 1, 2, 4, 8)))
            replicas = rng.choice((1, 1, 1, 2, 4)) if request.gpus == 8 else 1
        elif roll < 0.75:
            request = GpuRequest(kind=RequestKind.SHARE, milli=rng.choice((100, 200, 250, 300, 500, 700)),
                                 memory_mib=1024 * rng.choice((1, 2, 4, 8)))
            replicas = 1
        else:
            profile = rng.choice(("1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"))
            request = GpuRequest(kind=RequestKind.MIG, mig_profile=profile)
            replicas = 1
        made.append(Job(id=f"job-{index:05d}", request=request, submit_s=float(index), duration_s=3600.0,
                        replicas=replicas, preemptible=preemptible, priority=rng.choice((0, 0, 0, 1, 2))))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profiles", default="default,binpack,cost-greedy")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    snapshot = cluster(args.nodes)
    pending = jobs(args.jobs, args.seed)
    results = []
    for name in args.profiles.split(","):
        profile = policies.profile(name)
        times = []
        for _ in range(args.repeat):
            scheduler = Scheduler(profile)  # a cold scheduler: no index or verdicts from earlier runs
            start = time.perf_counter()
            decision = scheduler.schedule(snapshot, pending)
            times.append(time.perf_counter() - start)
        validate(snapshot, decision)
        placed = len(decision.placements)
        replicas = sum(len(p.replicas) for p in decision.placements)
        median = statistics.median(times)
        results.append({"profile": name, "nodes": len(snapshot.nodes), "jobs": len(pending), "placed": placed,
                        "replicas": replicas, "wall_s_median": round(median, 4), "wall_s_max": round(max(times), 4),
                        "placements_per_s": round(placed / median)})
    if args.json:
        print(json.dumps({"machine": machine(), "results": results}, indent=2))
        return
    print(describe())
    print(f"{'profile':<12} {'nodes':>6} {'jobs':>6} {'placed':>7} {'median s':>9} {'max s':>7} {'placements/s':>13}")
    for row in results:
        print(f"{row['profile']:<12} {row['nodes']:>6} {row['jobs']:>6} {row['placed']:>7} "
              f"{row['wall_s_median']:>9.3f} {row['wall_s_max']:>7.3f} {row['placements_per_s']:>13,}")


if __name__ == "__main__":
    main()
