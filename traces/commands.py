"""The `fleetsched trace` verbs: inspect, convert, synth, cluster. Each returns (exit code, text).

The command line (scheduler/cli.py) registers these parsers and prints what they return;
nothing here prints. Outputs are written to a temporary name and renamed when complete, so a
failed conversion leaves no partial file behind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scheduler.errors import InputError
from traces.base import ReadReport, replayed
from traces.canonical import write_jsonl
from traces.formats import FORMATS, read_trace
from traces.inspect import render, summarise
from traces.parquet import write_parquet

Output = tuple[int, str]
WRITERS = {".jsonl": write_jsonl, ".parquet": write_parquet}


def add_trace_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `trace inspect|convert` under the command's verbs."""
    trace = verbs.add_parser("trace", help="inspect, convert and generate workload traces")
    trace_verbs = trace.add_subparsers(dest="trace_verb", required=True, metavar="VERB")
    formats = ", ".join(FORMATS)

    inspect = trace_verbs.add_parser("inspect", help="jobs, time span, GPU demand, teams and drops of a trace")
    inspect.add_argument("file", help="trace file")
    inspect.add_argument("--format", help=f"input format (detected when left out): {formats}")
    inspect.add_argument("--skip-bad-rows", action="store_true", help="count and skip bad rows instead of stopping")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=run_inspect)

    convert = trace_verbs.add_parser("convert", help="convert a trace to canonical JSON lines or Parquet")
    convert.add_argument("file", help="trace file")
    convert.add_argument("--format", help=f"input format (detected when left out): {formats}")
    convert.add_argument("--out", required=True, help="output file: .jsonl or .parquet")
    convert.add_argument("--skip-bad-rows", action="store_true", help="count and skip bad rows instead of stopping")
    convert.set_defaults(run=run_convert)


def run_inspect(args: argparse.Namespace) -> Output:
    report = ReadReport(args.file)
    summary = summarise(read_trace(args.file, args.format, skip_bad_rows=args.skip_bad_rows, report=report), report)
    if args.json:
        return 0, json.dumps(summary.as_dict(), indent=2, sort_keys=True)
    return 0, render(summary)


def run_convert(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    writer = WRITERS.get(out.suffix)
    if writer is None:
        raise InputError(f"write .jsonl or .parquet, got {out.name!r}", field="--out")
    if out.resolve() == Path(args.file).resolve():
        raise InputError("the output would overwrite the input", field="--out")
    report = ReadReport(args.file)
    count = writer(replayed(read_trace(args.file, args.format, skip_bad_rows=args.skip_bad_rows, report=report)), out)
    dropped = ", ".join(f"{n:,} {reason}" for reason, n in sorted(report.dropped.items())) or "none"
    return 0, (f"wrote {count:,} jobs to {out} from {report.rows:,} rows ({report.format}); dropped: {dropped};"
               f" bad rows skipped: {len(report.skipped):,}")
