"""Benchmark: cost per million tokens of an Azure LLM inference trace served on A100 or on H100.

Replays the Azure LLM conversation trace (../shared/traces/azure-llm-inference-2023, not
shipped; `--trace` names another, e.g. the bundled traces/samples/azure-llm-conv.csv) as a
Llama-2-70B service whose replicas scale with load (traces.azure_llm), once sized for and run
on an A100-80GB-only cluster and once on an H100-80GB-only one
(traces/samples/azure-llm-{a100,h100}-cluster.toml), under each profile (default: spread, and
cost-greedy: bin-pack in the cheapest pool), with replicas on on-demand nodes only and then
with replicas that may run on spot (preemptible). Prints the throughput assumptions, then per
GPU model, profile and capacity: replicas, GPU-hours, cost, and the unit costs of summary.json's `inference`
key (the replicas' attributed cost per million tokens, input + output and output only, and per
thousand requests) and the whole cluster's bill, idle included, per million tokens.

    python benchmarks/bench_inference.py [--trace PATH] [--profiles default cost-greedy]
        [--window-s 300] [--target-utilisation 0.7] [--scale-down-windows 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from machine import describe, machine

import policies
from scheduler.cluster import load_cluster
from scheduler.model import Job
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from traces.azure_llm import AzureLlmServices, Scaling
from traces.base import read_rows, replayed

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "traces" / "samples"
DEFAULT_TRACE = HERE.parents[1] / "shared/traces/azure-llm-inference-2023/AzureLLMInferenceTrace_conv.csv"
DEFAULTS = Scaling()
CLUSTERS = {"A100-80GB": SAMPLES / "azure-llm-a100-cluster.toml", "H100-80GB": SAMPLES / "azure-llm-h100-cluster.toml"}


def assumptions(reader: AzureLlmServices, cluster_path: Path) -> dict[str, Any]:
    """What one GPU model's figures rest on: the replica's rates and the pool's price, with sources."""
    rate = reader.rate
    pool = next(iter(load_cluster(cluster_path).pools.values()))
    return {
        "gpu_model": rate.gpu_model, "llm": reader.table.llm, "gpus_per_replica": rate.gpus_per_replica,
        "prefill_tokens_per_s": rate.prefill_tokens_per_s, "decode_tokens_per_s": rate.decode_tokens_per_s,
        "rate_source": rate.source, "usd_per_gpu_hour": round(pool.usd_per_gpu_hour, 4),
        "price_source": pool.price_source,
    }  # fmt: skip


def peak_replicas(jobs: Sequence[Job]) -> int:
    """The most replicas the plan runs at once (each starts at a window's start)."""
    return max(sum(1 for job in jobs if job.submit_s <= at.submit_s < job.submit_s + job.duration_s) for at in jobs)


def run(trace: Path, gpu_model: str, profile: str, scaling: Scaling, *, spot: bool) -> dict[str, Any]:
    """One replay: the service sized for `gpu_model` on its cluster under `profile`; `spot`:
    its replicas are preemptible, so they may run on the cluster's spot pool."""
    reader = AzureLlmServices(gpu_model, scaling, preemptible=spot)
    jobs = list(replayed(read_rows(trace, reader)))
    start = time.perf_counter()
    result = simulate(jobs, load_cluster(CLUSTERS[gpu_model]), Scheduler(policies.profile(profile), explain=False),
                      SimOptions(seed=0))  # fmt: skip
    wall_s = time.perf_counter() - start
    document = summary(result)
    inference = document["inference"]
    total = inference["total"]
    return {
        "gpu_model": gpu_model, "profile": profile, "replicas_on": "on-demand or spot" if spot else "on-demand",
        "replica_jobs": len(jobs),
        "peak_replicas": peak_replicas(jobs),
        "gpu_hours_busy": document["gpu_hours"]["busy"], "gpu_hours_idle": document["gpu_hours"]["idle"],
        "cost_usd": document["cost_usd"]["total"], "attributed_usd": total["cost_usd"],
        "requests": total["requests"], "requests_unserved": total["requests_unserved"],
        "input_tokens": total["input_tokens"], "output_tokens": total["output_tokens"],
        "usd_per_million_tokens": total["usd_per_million_tokens"],
        "usd_per_million_output_tokens": total["usd_per_million_output_tokens"],
        "usd_per_thousand_requests": total["usd_per_thousand_requests"],
        "cluster_usd_per_million_tokens": inference["cluster_usd_per_million_tokens"],
        "spot_interruptions": document["nodes"]["spot_interruptions"],
        "wall_s": round(wall_s, 3),
    }  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (for the README)."""
    lines = [
        "| GPU model | profile | replicas on | replica jobs (peak) | GPU-h busy / idle | cost $ | $/M tokens "
        "| $/M output tokens | $/1k requests | cluster $/M tokens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['gpu_model']} | {row['profile']} | {row['replicas_on']} "
            f"| {row['replica_jobs']} ({row['peak_replicas']}) "
            f"| {row['gpu_hours_busy']} / {row['gpu_hours_idle']} | {row['cost_usd']:.2f} "
            f"| {row['usd_per_million_tokens']:.4f} | {row['usd_per_million_output_tokens']:.4f} "
            f"| {row['usd_per_thousand_requests']:.4f} | {row['cluster_usd_per_million_tokens']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--profiles", nargs="+", default=["default", "cost-greedy"])
    parser.add_argument("--window-s", type=float, default=DEFAULTS.window_s)
    parser.add_argument("--target-utilisation", type=float, default=DEFAULTS.target_utilisation)
    parser.add_argument("--scale-down-windows", type=int, default=DEFAULTS.scale_down_windows)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    scaling = Scaling(window_s=args.window_s, target_utilisation=args.target_utilisation,
                      scale_down_windows=args.scale_down_windows)  # fmt: skip
    stated = [assumptions(AzureLlmServices(model, scaling), path) for model, path in CLUSTERS.items()]
    rows = [run(args.trace, model, profile, scaling, spot=spot)
            for spot in (False, True) for model in CLUSTERS for profile in args.profiles]  # fmt: skip
    report = {"machine": machine(), "trace": str(args.trace), "scaling": {
        "window_s": scaling.window_s, "target_utilisation": scaling.target_utilisation,
        "min_replicas": scaling.min_replicas, "scale_down_windows": scaling.scale_down_windows,
    }, "assumptions": stated, "results": rows}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(describe())
    print(f"trace {args.trace.name}: {rows[0]['requests'] + rows[0]['requests_unserved']:,} requests, "
          f"{rows[0]['input_tokens']:,} input and {rows[0]['output_tokens']:,} output tokens; windows of "
          f"{scaling.window_s:g} s at {scaling.target_utilisation:.0%} target utilisation, at least "
          f"{scaling.min_replicas} replica, scale-down after {scaling.scale_down_windows} windows")  # fmt: skip
    for each in stated:
        print(f"{each['gpu_model']}: {each['llm']} on {each['gpus_per_replica']} GPUs per replica, "
              f"{each['prefill_tokens_per_s']:,.0f} prefill and {each['decode_tokens_per_s']:,.0f} decode tokens/s "
              f"per replica ({each['rate_source']}); ${each['usd_per_gpu_hour']}/GPU-hour ({each['price_source']})")
    print(table(rows))


if __name__ == "__main__":
    main()
