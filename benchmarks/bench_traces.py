"""Benchmark: read the 82,247-row Philly extract into canonical jobs; rows/s and peak memory.

Time is measured without tracing; peak memory is measured in a second, traced pass that
streams the jobs without keeping them, on the file and on a copy four times as long: streaming
memory must not grow with the file. Target: the whole file in under 1 s.

    python benchmarks/bench_traces.py [--trace PATH] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

from machine import describe, machine

from traces.formats import read_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared/traces/pollux-adaptdl/traces/philly.csv"


def read_all(path: Path) -> int:
    return sum(1 for row in read_trace(path) if row.job is not None)


def streaming_peak_bytes(path: Path) -> int:
    tracemalloc.start()
    try:
        read_all(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def longer_copy(path: Path, times: int, folder: Path) -> Path:
    """The trace with its data rows repeated `times` times (same header), as a new file."""
    copy = folder / f"x{times}-{path.name}"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    with copy.open("w", encoding="utf-8") as handle:
        handle.write(lines[0])
        for _ in range(times):
            handle.writelines(lines[1:])
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        rows = read_all(args.trace)
        times.append(time.perf_counter() - start)
    folder = Path(tempfile.mkdtemp(prefix="bench-traces-"))
    try:
        peak = streaming_peak_bytes(args.trace)
        peak_4x = streaming_peak_bytes(longer_copy(args.trace, 4, folder))
    finally:
        shutil.rmtree(folder)
    median = statistics.median(times)
    result = {
        "machine": machine(),
        "trace": str(args.trace), "jobs": rows, "wall_s_median": round(median, 3), "wall_s_max": round(max(times), 3),
        "rows_per_s": round(rows / median), "peak_mib_streaming": round(peak / 2**20, 2),
        "peak_mib_streaming_4x_file": round(peak_4x / 2**20, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(describe())
    print(f"{rows:,} jobs in {median:.3f} s median (max {max(times):.3f} s): {result['rows_per_s']:,} rows/s")
    print(f"peak traced memory while streaming: {result['peak_mib_streaming']} MiB for the file, "
          f"{result['peak_mib_streaming_4x_file']} MiB for a copy 4x as long")


if __name__ == "__main__":
    main()
