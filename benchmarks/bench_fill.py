"""Benchmark: the FGD packing experiment (Weng et al., ATC'23) on an openb trace, ours beside the authors'.

Replays the pod list onto the node list once per policy and seed (tune-up to 1.3x the cluster's
GPUs, as `fleetsched fill` does) and prints per policy: the median over seeds of unallocated GPU %
at 100 % arrived, the authors' median from their cached results (`analysis_allo_discrete.csv`)
with their min..max over the same seeds, ours min..max, the widest gap between our curve and theirs of
the same seed, and the seconds per seed (wall mean and max; CPU mean, which a shared machine's
load does not inflate), with the machine it ran on. The authors' Go simulator took 3 to 30 minutes per policy and seed.

    python benchmarks/bench_fill.py --openb ../shared/traces/alibaba-gpu-v2023
        [--trace default] [--policies all] [--seeds 42-51] [--expected FILE] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from machine import describe, machine

from fleetsched.fill_verbs import parse_policies, parse_seeds
from simulator.fill import discrete_curve, read_nodes, read_pods, run_fill, unallocated_at
from simulator.fill_output import read_rows

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openb", default=str(SHARED / "alibaba-gpu-v2023"), help="folder of the openb CSVs")
    parser.add_argument("--trace", default="default", help="pod list openb_pod_list_<trace>.csv")
    parser.add_argument("--policies", default="all")
    parser.add_argument("--seeds", default="42-51")
    parser.add_argument("--expected", default=str(SHARED / "fgd-atc23-expected-results" / "analysis_allo_discrete.csv"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(args.openb)
    nodes = read_nodes(folder / "openb_node_list_gpu_node.csv")
    pods = read_pods(folder / f"openb_pod_list_{args.trace}.csv")
    workload = f"openb_pod_list_{args.trace}"
    seeds = parse_seeds(args.seeds)  # the authors' figures are over the same seeds as ours
    expected = read_rows(Path(args.expected)) if Path(args.expected).exists() else []
    theirs = [row for row in expected if row.workload == workload and row.tune == 1.3 and row.seed in seeds]
    results: dict[str, dict[str, Any]] = {}
    for policy in parse_policies(args.policies):
        values, seconds, cpu_seconds, gaps = [], [], [], []
        same_policy = {row.seed: row.cells for row in theirs if row.policy == policy}
        for seed in seeds:
            started, cpu_started = time.perf_counter(), time.process_time()
            run = run_fill(nodes, pods, policy, seed, 1.3)
            seconds.append(time.perf_counter() - started)
            cpu_seconds.append(time.process_time() - cpu_started)
            curve = discrete_curve(run.arrived_milli, run.allocated_milli, run.cluster_gpus)
            values.append(unallocated_at(curve))
            if seed in same_policy:  # the widest gap to the authors' curve of the same seed, 0..130 % arrived
                pairs = zip(curve, same_policy[seed], strict=True)
                gaps.append(max(abs(a - b) for a, b in pairs if a is not None and b is not None))
        authors = [unallocated_at(row.cells) for row in theirs if row.policy == policy]
        results[policy] = {
            "ours_median": round(statistics.median(v for v in values if v is not None), 2),
            "ours_range": [min(v for v in values if v is not None), max(v for v in values if v is not None)],
            "authors_median": round(statistics.median(v for v in authors if v is not None), 2) if authors else None,
            "authors_range": [min(a for a in authors if a is not None), max(a for a in authors if a is not None)]
            if authors else None,
            "same_seed_curve_gap_max": round(max(gaps), 2) if gaps else None,
            "same_seed_curve_gap_median": round(statistics.median(gaps), 2) if gaps else None,
            "seconds_per_seed_mean": round(statistics.mean(seconds), 2),
            "seconds_per_seed_max": round(max(seconds), 2),
            "cpu_seconds_per_seed_mean": round(statistics.mean(cpu_seconds), 2),
        }
    if args.json:
        print(json.dumps({"trace": args.trace, "machine": machine(), "policies": results}, indent=2))
        return
    print(f"openb {args.trace}, tune 1.3, seeds {args.seeds}: unallocated GPU % at 100 % arrived (median over seeds)")
    columns = (("ours", 6), ("authors", 8), ("ours min..max", 15), ("authors min..max", 17), ("gap p50/max", 12),
               ("s/seed", 7), ("max s", 6), ("cpu s", 6))
    print(f"{'policy':<14} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for policy, row in results.items():
        authors = "-" if row["authors_median"] is None else f"{row['authors_median']:.2f}"
        band = "-" if row["authors_range"] is None else "{:.2f}..{:.2f}".format(*row["authors_range"])
        print(f"{policy:<14} {row['ours_median']:>6.2f} {authors:>8} {'{:.2f}..{:.2f}'.format(*row['ours_range']):>15}"
              f" {band:>17} {_gap(row):>12} {row['seconds_per_seed_mean']:>7.2f} {row['seconds_per_seed_max']:>6.2f}"
              f" {row['cpu_seconds_per_seed_mean']:>6.2f}")
    print("gap: widest |ours - authors| over 0..130 % arrived between the curves of the same seed (points)")
    print(describe())


def _gap(row: dict[str, Any]) -> str:
    if row["same_seed_curve_gap_max"] is None:
        return "-"
    return f"{row['same_seed_curve_gap_median']:.2f}/{row['same_seed_curve_gap_max']:.2f}"


if __name__ == "__main__":
    main()
