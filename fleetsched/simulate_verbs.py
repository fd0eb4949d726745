"""The `fleetsched simulate` and `fleetsched compare` verbs. Each returns (exit code, text).

Inputs are read and checked before the simulation starts, so a bad cluster, profile or trace
stops with one line and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fleetsched import api
from scheduler.errors import InputError
from simulator.compare import render_comparison, write_comparison
from simulator.engine import SimOptions
from simulator.outputs import render_summary
from simulator.plots import cost_vs_queue, jct_cdf

Output = tuple[int, str]


def add_simulation_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate_parser = verbs.add_parser("simulate", help="replay a trace on a cluster with a profile")
    _inputs(simulate_parser)
    simulate_parser.add_argument("--profile", default="default", help="bundled profile name or a .toml path")
    simulate_parser.add_argument("--seed", type=int, default=0, help="seed of spot interruptions (default 0)")
    simulate_parser.add_argument("--round-s", type=float, default=0.0,
                                 help="schedule in fixed rounds of this many seconds (default: on every event)")
    simulate_parser.add_argument("--check", action="store_true",
                                 help="prove the ledger matches the GPUs held after every decision (slower)")
    simulate_parser.add_argument("--out", required=True, help="run directory to write")
    simulate_parser.set_defaults(run=run_simulate)

    compare_parser = verbs.add_parser("compare", help="replay a trace under several profiles and seeds, in parallel")
    _inputs(compare_parser)
    compare_parser.add_argument("--profiles", default="default,binpack,cost-greedy", help="comma-separated profiles")
    compare_parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per profile (default 1)")
    compare_parser.add_argument("--workers", type=int, default=0, help="parallel processes (default: one per core)")
    compare_parser.add_argument("--round-s", type=float, default=0.0,
                                help="schedule in fixed rounds of this many seconds (default: on every event)")
    compare_parser.add_argument("--out", required=True, help="directory for comparison.csv, the plots and runs/")
    compare_parser.set_defaults(run=run_compare)


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help="trace file (any format fleetsched reads)")
    parser.add_argument("--format", help="trace format (detected when left out)")
    parser.add_argument("--cluster", required=True, help="cluster file (TOML)")


def _progress(done: int, total: int) -> None:
    step = max(1, total // 100)
    if done % step == 0 or done == total:
        sys.stderr.write(f"\rreplayed {done:,}/{total:,} jobs ({done / total:.0%})")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_simulate(args: argparse.Namespace) -> Output:
    if args.round_s < 0:
        raise InputError("must be >= 0", field="--round-s")
    progress = _progress if sys.stderr.isatty() else None
    api.simulate(args.trace, args.cluster, args.profile, seed=args.seed, round_s=args.round_s, trace_format=args.format,
                 out=args.out, options=SimOptions(check=args.check, progress=progress))
    document = json.loads((Path(args.out) / "summary.json").read_text(encoding="utf-8"))
    return 0, render_summary(document) + f"\nwrote {args.out}/summary.json, jobs.csv, events.jsonl, timeline.csv"


def run_compare(args: argparse.Namespace) -> Output:
    profiles = [name.strip() for name in args.profiles.split(",") if name.strip()]
    if not profiles:
        raise InputError("name at least one profile", field="--profiles")
    if args.seeds < 1:
        raise InputError("must be at least 1", field="--seeds")
    if args.round_s < 0:
        raise InputError("must be >= 0", field="--round-s")
    out = Path(args.out)
    rows, jcts = api.compare(args.trace, args.cluster, profiles, args.seeds, out, trace_format=args.format,
                             workers=args.workers or None, round_s=args.round_s)
    write_comparison(rows, out)
    cost_vs_queue(rows, out / "cost_vs_queue.png")
    jct_cdf(jcts, out / "jct_cdf.png")
    return 0, render_comparison(rows) + f"\nwrote {out}/comparison.csv, cost_vs_queue.png, jct_cdf.png, runs/"
