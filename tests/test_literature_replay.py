"""The literature's profiles replayed on the bundled Gavel cluster in 360 s rounds: no error, every job
done, the same ends twice; and once through the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from traces.synth import gavel_jobs

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "traces" / "samples" / "gavel-cluster.toml"
GCP = {"v100": 0.74, "p100": 0.43, "k80": 0.135}  # Gavel's GCP prices per GPU-hour (scheduler/utils.py)
PROFILES = ("gavel-cost", "tiresias", "drf")


def priced(cluster: Cluster) -> Cluster:
    """The Gavel cluster with Gavel's GCP prices, so that a cost policy has something to weigh."""
    pools = {name: dataclasses.replace(pool, usd_per_node_hour=GCP[name] * pool.gpus_per_node)
             for name, pool in cluster.pools.items()}  # fmt: skip
    return dataclasses.replace(cluster, pools=MappingProxyType(pools))


@pytest.mark.parametrize(("profile", "with_prices"),
                         [("gavel-cost", True), ("gavel-cost", False), ("tiresias", False), ("drf", False)])
def test_each_profile_replays_gavel_jobs_in_rounds_deterministically(profile: str, with_prices: bool) -> None:
    # 150 single-GPU jobs arriving at 300 an hour: more than the 108 GPUs, so rounds preempt;
    # three teams in turn, for DRF.
    cluster = load_cluster(CLUSTER)
    cluster = priced(cluster) if with_prices else cluster
    jobs = [dataclasses.replace(job, labels=dataclasses.replace(job.labels, team=f"team-{n % 3}"))
            for n, job in enumerate(gavel_jobs(150, 5, 300.0, multi_gpu=False))]  # fmt: skip

    def ends() -> tuple[dict[str, int | None], int]:
        result = simulate(jobs, cluster, Scheduler(policies.profile(profile)), SimOptions(round_s=360.0, check=True))
        runs = result.world.runs
        return {job_id: run.end_ms for job_id, run in runs.items()}, sum(run.preemptions for run in runs.values())

    first, preemptions = ends()
    assert len(first) == len(jobs) and all(end is not None for end in first.values())
    assert (preemptions > 0) == (profile != "drf")  # the round profiles preempt; DRF only orders
    assert ends() == (first, preemptions)


@pytest.mark.parametrize("profile", PROFILES)
def test_the_cli_replays_each_profile_byte_for_byte(tmp_path: Path, profile: str) -> None:
    trace = tmp_path / "jobs.jsonl"
    subprocess.run([sys.executable, "-m", "fleetsched", "trace", "synth", "--generator", "gavel", "--jobs", "40",
                    "--seed", "2", "--out", str(trace)], check=True, cwd=ROOT, capture_output=True)  # fmt: skip
    outputs = []
    for run in ("a", "b"):
        done = subprocess.run(
            [sys.executable, "-m", "fleetsched", "simulate", "--trace", str(trace), "--cluster", str(CLUSTER),
             "--profile", profile, "--round-s", "360", "--out", str(tmp_path / run)],
            capture_output=True, text=True, cwd=ROOT, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs.append((tmp_path / run / "jobs.csv").read_bytes())
    assert outputs[0] == outputs[1]
    summary = json.loads((tmp_path / "a" / "summary.json").read_text(encoding="utf-8"))
    assert summary["jobs"]["completed"] == 40 and summary["run"]["profile"] == profile


def test_bench_rounds_tables_each_profile_with_its_cost() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_rounds.py"), "--seeds", "0", "--jobs-per-hour", "30",
         "--jobs", "80", "--warmup", "10", "--window", "40", "--table", "gavel-las,gavel-cost", "--gcp-prices"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    rows = [json.loads(line) for line in lines[:2]]
    assert [(row["seed"], row["profile"]) for row in rows] == [(0, "gavel-las"), (0, "gavel-cost")]
    assert all(row["jct_h"] > 0 and row["attributed_usd"] > 0 for row in rows)
    # priced by the GPU-time used at Gavel's prices: the cost policy runs more of it on cheap K80s
    assert rows[1]["attributed_usd"] < rows[0]["attributed_usd"]
    assert lines[2].startswith("machine: ") and len(lines) == 3
