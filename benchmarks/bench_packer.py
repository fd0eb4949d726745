"""Benchmark: one cycle's batch placement, CP-SAT against greedy, on a busy mixed cluster.

Generates a cluster of five pools (H100 on-demand and spot, A100-80GB on-demand, A100-40GB
with dynamic MIG, A10G with shared GPUs) already running jobs of varied shapes on about 60 %
of its GPUs, so that nodes differ in what is free, and M pending jobs (whole GPUs, gangs of
8-GPU replicas, GPU shares, MIG instances; three priorities; 40 % preemptible). Places them
with the `cost-greedy` profile and with `cost-cpsat` (under a wall-clock limit, two workers)
several times, checks every decision with `validate`, and prints per placer: wall seconds
p50 and max, solver status, objective, bound, relative gap, dollars per hour committed, the
expected cost of spot take-backs, and jobs placed. Targets on a 2-core machine: 1,000 nodes
and 500 jobs in under 1 s p50 with a gap under 2 %; 5,000 nodes and 2,000 jobs in under 5 s.

    python benchmarks/bench_packer.py [--nodes 1000] [--jobs 500] [--seed 1] [--repeat 5]
                                      [--time-limit 0.6] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

from machine import describe, machine

import policies
from scheduler import capacity, costing
from scheduler.batch.solve import CpSatPlacer
from scheduler.catalog import default_catalog
from scheduler.decision import validate
from scheduler.model import (
    Capacity,
    ClusterSnapshot,
    GpuRequest,
    Job,
    MigMode,
    Placement,
    Pool,
    ReplicaPlacement,
    RequestKind,
    empty_node,
)
from scheduler.profile import SolverOptions
from scheduler.world import Scheduler

SHARES = {"h100-od": 0.25, "h100-spot": 0.25, "a100-od": 0.2, "a100-mig": 0.1, "a10g-shared": 0.2}
MIG_PROFILES = ("1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb")


def pools() -> dict[str, Pool]:
    catalog = default_catalog()
    return {
        "h100-od": Pool(name="h100-od", gpu=catalog.resolve("H100-80GB"), gpus_per_node=8, usd_per_node_hour=55.04),
        "h100-spot": Pool(name="h100-spot", gpu=catalog.resolve("H100-80GB"), gpus_per_node=8,
                          capacity=Capacity.SPOT, usd_per_node_hour=20.99, interruptions_per_node_hour=0.05,
                          notice_s=120.0),
        "a100-od": Pool(name="a100-od", gpu=catalog.resolve("A100-80GB"), gpus_per_node=8, usd_per_node_hour=40.97),
        "a100-mig": Pool(name="a100-mig", gpu=catalog.resolve("A100-40GB"), gpus_per_node=8,
                         usd_per_node_hour=32.77, mig_mode=MigMode.DYNAMIC),
        "a10g-shared": Pool(name="a10g-shared", gpu=catalog.resolve("A10G"), gpus_per_node=4,
                            usd_per_node_hour=5.67, sharing=True),
    }


def random_request(rng: random.Random, pool: Pool) -> GpuRequest:
    if pool.mig_mode is MigMode.DYNAMIC:
        return GpuRequest(kind=RequestKind.MIG, mig_profile=rng.choice(MIG_PROFILES))
    if pool.sharing and rng.random() < 0.6:
        milli, memory_gb = rng.choice((250, 500, 750)), rng.choice((2, 4, 8))
        return GpuRequest(kind=RequestKind.SHARE, milli=milli, memory_mib=1024 * memory_gb)
    return GpuRequest(gpus=rng.choice((1, 1, 2, 2, 4)))


def cluster(nodes: int, seed: int) -> ClusterSnapshot:
    """The cluster, each node filled by running jobs to a random level averaging about 60 %."""
    rng = random.Random(seed)
    by_name = pools()
    snapshot = ClusterSnapshot(MappingProxyType(by_name), MappingProxyType({}))
    running = 0
    for name, pool in by_name.items():
        for index in range(round(nodes * SHARES[name])):
            node = empty_node(pool, f"{name}-{index:05d}")
            snapshot = snapshot.with_node(node)
            target = rng.choice((0.0, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0)) * pool.gpus_per_node
            for _ in range(4 * pool.gpus_per_node):
                if capacity.gpus_used(pool, node) >= target - 0.2:
                    break
                job = Job(id=f"run-{running:06d}", request=random_request(rng, pool), duration_s=3600.0)
                grants = capacity.find_grants(pool, node, job.request)
                if grants is None:
                    continue
                snapshot = snapshot.assume(Placement(job, (ReplicaPlacement(node.name, grants),)))
                node = snapshot.nodes[node.name]
                running += 1
    return snapshot


def pending(count: int, seed: int) -> list[Job]:
    rng = random.Random(seed + 1)
    made = []
    for index in range(count):
        roll = rng.random()
        replicas = 1
        models: frozenset[str] = frozenset()
        if roll < 0.5:
            request = GpuRequest(gpus=rng.choice((1, 1, 2, 2, 4, 8)))
            replicas = rng.choice((1, 1, 2, 4)) if request.gpus == 8 else 1
            if rng.random() < 0.2:
                models = frozenset({"H100-80GB"})
        elif roll < 0.75:
            request = GpuRequest(kind=RequestKind.SHARE, milli=rng.choice((250, 500, 750)),
                                 memory_mib=1024 * rng.choice((2, 4, 8)))
        else:
            request = GpuRequest(kind=RequestKind.MIG, mig_profile=rng.choice(MIG_PROFILES))
        checkpoint = rng.choice((0.0, 0.0, 600.0, 1800.0))
        made.append(Job(
            id=f"job-{index:05d}", request=request, submit_s=float(index), replicas=replicas, gpu_models=models,
            duration_s=rng.choice((1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0)), priority=rng.choice((0, 0, 0, 1, 2)),
            preemptible=rng.random() < 0.4, checkpoint_interval_s=checkpoint,
            checkpoint_overhead_s=60.0 if checkpoint else 0.0,
        ))
    return made


def measure(snapshot: ClusterSnapshot, jobs: Sequence[Job], scheduler_of: Any, repeat: int) -> dict[str, Any]:
    walls = []
    decision = None
    for _ in range(repeat):
        scheduler = scheduler_of()  # cold: no verdicts from an earlier run
        started = time.perf_counter()
        decision = scheduler.schedule(snapshot, jobs)
        walls.append(time.perf_counter() - started)
        validate(snapshot, decision)
    assert decision is not None
    report = decision.solver
    placements = decision.placements
    return {
        "wall_s_p50": round(statistics.median(walls), 4),
        "wall_s_max": round(max(walls), 4),
        "status": report.status if report else "-",
        "used": report.used if report else "greedy",
        "objective": report.objective if report else None,
        "bound": report.bound if report else None,
        "gap": round(report.gap, 5) if report else None,
        "usd_per_hour_committed": round(costing.committed_usd_per_hour(snapshot.pools, snapshot.nodes, placements), 2),
        "spot_risk_usd_per_hour": round(costing.spot_risk_total(snapshot.pools, snapshot.nodes, placements), 2),
        "jobs_placed": len(placements),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=0.6, help="CP-SAT's wall-clock limit per solve (s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    snapshot = cluster(args.nodes, args.seed)
    jobs = pending(args.jobs, args.seed)
    greedy = policies.profile("cost-greedy")
    cpsat = policies.profile("cost-cpsat")
    options = SolverOptions(time_limit_s=args.time_limit, workers=2, seed=args.seed, gap_limit=cpsat.solver.gap_limit,
                            idle_weight=cpsat.solver.idle_weight,
                            fragmentation_weight=cpsat.solver.fragmentation_weight,
                            spot_risk_weight=cpsat.solver.spot_risk_weight)
    gpus = sum(len(node.gpus) for node in snapshot.nodes.values())
    busy = sum(capacity.gpus_used(snapshot.pools[n.pool], n) for n in snapshot.nodes.values())
    results = {
        "greedy": measure(snapshot, jobs, lambda: Scheduler(greedy, explain=False), args.repeat),
        "cpsat": measure(snapshot, jobs, lambda: Scheduler(cpsat, CpSatPlacer(options), explain=False), args.repeat),
    }
    report = {
        "machine": machine(), "nodes": len(snapshot.nodes), "gpus": gpus, "gpus_busy": round(busy / gpus, 3),
        "jobs": len(jobs), "seed": args.seed, "time_limit_s": args.time_limit, "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe())
    print(f"{len(snapshot.nodes)} nodes, {gpus} GPUs ({busy / gpus:.0%} busy), {len(jobs)} pending jobs, "
          f"seed {args.seed}, CP-SAT limit {args.time_limit} s")
    print(f"{'placer':8} {'p50 s':>7} {'max s':>7} {'status':>9} {'gap':>8} {'$/h committed':>14} "
          f"{'spot risk $/h':>14} {'placed':>7}")
    for name, row in results.items():
        gap = "-" if row["gap"] is None else f"{row['gap']:.2%}"
        print(f"{name:8} {row['wall_s_p50']:7.3f} {row['wall_s_max']:7.3f} {row['status']:>9} {gap:>8} "
              f"{row['usd_per_hour_committed']:14.2f} {row['spot_risk_usd_per_hour']:14.2f} {row['jobs_placed']:7d}")


if __name__ == "__main__":
    main()
