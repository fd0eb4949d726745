"""Benchmark: a streaming replay's peak memory does not grow with the trace's length.

Replays synthetic traces of 1 million and 10 million jobs (written by `fleetsched trace synth
--jobs-per-hour 100`, about 110 bytes a job) on a 512-GPU cluster sized for their load
(benchmarks/data/synth-512.toml), each in a process of its own writing its run directory as
it goes, and prints per trace: jobs, wall seconds, jobs per second and peak RSS; then the
ratio of the peak RSS. Targets: peak RSS under 1 GiB at 10 million jobs, and the two peaks
within 25 % of each other.

    python benchmarks/bench_stream.py --traces DIR [--jobs 1000000,10000000] [--profile default]
        (writes DIR/synth-<N>.jsonl when missing: 10 million jobs take about 5 minutes and 1.1 GB)
    python benchmarks/bench_stream.py --trace PATH   (one replay, in this process)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe, machine

import fleetsched

HERE = Path(__file__).resolve().parent
CLUSTER = HERE / "data" / "synth-512.toml"
JOBS_PER_HOUR = 100


def replay(trace: Path, profile: str) -> dict[str, object]:
    """One streamed replay of `trace` in this process: its figures."""
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as folder:
        start = time.perf_counter()
        result = fleetsched.simulate(trace, CLUSTER, profile, out=Path(folder) / "run")
        wall_s = time.perf_counter() - start
        jobs = result.world.tally.jobs
        completed = result.world.tally.outcomes["completed"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"trace": str(trace), "jobs": jobs, "completed": completed, "wall_s": round(wall_s, 1),
            "jobs_per_s": round(jobs / wall_s), "peak_rss_mib": round(peak_mib)}  # fmt: skip


def ensure_trace(folder: Path, jobs: int) -> Path:
    path = folder / f"synth-{jobs}.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "fleetsched", "trace", "synth", "--out", str(path), "--jobs", str(jobs),
                        "--jobs-per-hour", str(JOBS_PER_HOUR)], check=True)  # fmt: skip
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, help="replay this trace in this process")
    parser.add_argument("--traces", type=Path, help="folder of the synthetic traces (written when missing)")
    parser.add_argument("--jobs", default="1000000,10000000", help="trace lengths to compare")
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    if args.trace is not None:
        print(json.dumps(replay(args.trace, args.profile)))
        return
    if args.traces is None:
        parser.error("give --trace or --traces")
    args.traces.mkdir(parents=True, exist_ok=True)
    print(describe())
    reports = []
    for jobs in (int(n) for n in args.jobs.split(",")):
        trace = ensure_trace(args.traces, jobs)
        done = subprocess.run([sys.executable, __file__, "--trace", str(trace), "--profile", args.profile],
                              check=True, capture_output=True, text=True)  # fmt: skip
        report = json.loads(done.stdout.strip().splitlines()[-1])
        reports.append(report)
        print(f"{report['jobs']:>11,} jobs ({report['completed']:,} completed): {report['wall_s']:,} s, "
              f"{report['jobs_per_s']:,} jobs/s, peak RSS {report['peak_rss_mib']:,} MiB")
    if len(reports) > 1:
        peaks = [report["peak_rss_mib"] for report in reports]
        print(f"peak RSS, longest trace against shortest: {peaks[-1] / peaks[0]:.2f}x")
    print(json.dumps({"machine": machine(), "runs": reports}))


if __name__ == "__main__":
    main()
