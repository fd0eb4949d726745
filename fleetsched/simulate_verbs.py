"""The `fleetsched simulate` and `fleetsched compare` verbs. Each returns (exit code, text).

Arguments, the output directory and the inputs are checked before the simulation starts, so
a bad cluster, profile, trace or `--out` stops with one line and writes nothing. The run is
written into a temporary folder beside `--out` and renamed into place when complete
(`simulator.rundir`); `--force` lets it replace a previous run, never other files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import policies
from fleetsched import api
from fleetsched.stopping import Stop
from scheduler.cluster import load_cluster
from scheduler.enforcement import SIMULATED, warn_unenforced
from scheduler.errors import InputError
from scheduler.feasibility import Group, Survey
from scheduler.governance import Governance
from scheduler.governance_file import check_against_cluster, load_governance
from simulator.compare import render_comparison, write_comparison
from simulator.engine import SimOptions
from simulator.outputs import render_summary
from simulator.rundir import RunDirectory

Output = tuple[int, str]
FORCE_HELP = "replace --out when it is a previous fleetsched run (never a directory holding other files)"


def add_simulation_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate_parser = verbs.add_parser("simulate", help="replay a trace on a cluster with a profile")
    _inputs(simulate_parser)
    simulate_parser.add_argument("--profile", default="default", help="bundled profile name or a .toml path")
    simulate_parser.add_argument("--seed", type=int, default=0, help="seed of spot interruptions (default 0)")
    simulate_parser.add_argument("--round-s", type=float, default=0.0,
                                 help="schedule in fixed rounds of this many seconds (default: on every event)")
    simulate_parser.add_argument("--check", action="store_true",
                                 help="prove the ledger matches the GPUs held after every decision (slower)")
    simulate_parser.add_argument("--out", required=True, help="run directory to write (new or empty)")
    simulate_parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    simulate_parser.set_defaults(run=run_simulate)

    compare_parser = verbs.add_parser("compare", help="replay a trace under several profiles and seeds, in parallel")
    _inputs(compare_parser)
    compare_parser.add_argument("--profiles", default="default,binpack,cost-greedy", help="comma-separated profiles")
    compare_parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per profile (default 1)")
    compare_parser.add_argument("--workers", type=int, help="parallel processes (default: one per core)")
    compare_parser.add_argument("--round-s", type=float, default=0.0,
                                help="schedule in fixed rounds of this many seconds (default: on every event)")
    compare_parser.add_argument("--out", required=True,
                                help="directory for comparison.csv, the plots and runs/ (new or empty)")
    compare_parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    compare_parser.set_defaults(run=run_compare)


def _inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True, help="trace file (any format fleetsched reads)")
    parser.add_argument("--format", help="trace format (detected when left out)")
    parser.add_argument("--cluster", required=True, help="cluster file (TOML)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a trace with jobs no pool of the cluster can ever take (exit 2)")
    parser.add_argument("--governance", help="governance file (TOML): teams, quotas, budgets, approvals; the "
                        "governed profile enforces it, any profile reports spend against it")


def _progress(done: int, total: int) -> None:
    step = max(1, total // 100)
    if done % step == 0 or done == total:
        sys.stderr.write(f"\rreplayed {done:,}/{total:,} jobs ({done / total:.0%})")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def compare_progress(stream: TextIO) -> Callable[[int, int], None] | None:
    """A callback that shows `ran D/T runs` on `stream` when it is a terminal, else None."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        stream.write(f"\rran {done}/{total} runs" + ("\n" if done == total else ""))
        stream.flush()

    return show


def _jobs(count: int) -> str:
    return "1 job" if count == 1 else f"{count:,} jobs"


def _examples(group: Group) -> str:
    return ", ".join(group.examples) + (", ..." if group.count > len(group.examples) else "")


def survey_first(args: argparse.Namespace, profiles: Sequence[str]) -> None:
    """Lists on stderr the jobs no pool of the cluster can ever take, by reason, before any run;
    with --strict any such job is an error (one line, nothing written)."""
    found = api.survey_profiles(args.trace, args.cluster, profiles, trace_format=args.format)
    alike: dict[tuple[Group, ...], list[tuple[str, Survey]]] = {}
    for name, survey in zip(profiles, found, strict=True):
        alike.setdefault(survey.groups, []).append((name, survey))
    for name, survey in zip(profiles, found, strict=True):
        label = f"under {name}: " if len(profiles) > 1 else ""
        for group in survey.risky:  # they run, so --strict lets them through; the user should know
            sys.stderr.write(f"fleetsched: {label}{_jobs(group.count)} may never finish: {group.reason}: "
                             f"{_examples(group)}\n")
    for groups, named in alike.items():
        if not groups:
            continue
        label = "" if len(alike) == 1 else f"under {', '.join(name for name, _ in named)}: "
        survey = named[0][1]
        head = f"{label}{survey.unplaceable:,} of {survey.jobs:,} jobs can never run on {Path(args.cluster).name}"
        if args.strict:
            first, others = groups[0], len(groups) - 1
            more = f"; and {others} other reason{'s' if others > 1 else ''}" if others else ""
            raise InputError(f"{head} (--strict); {_jobs(first.count)}: {first.reason}: {_examples(first)}{more}",
                             source=args.trace)
        for group in groups:
            sys.stderr.write(f"fleetsched: {label}{_jobs(group.count)} can never run: {group.reason}: "
                             f"{_examples(group)}\n")
        sys.stderr.write(f"fleetsched: {head}; they will end unfinished (--strict makes this an error)\n")


def governance_for(args: argparse.Namespace) -> Governance | None:
    """The `--governance` file read and checked against the cluster, or None."""
    if not args.governance:
        return None
    rules = load_governance(args.governance)
    check_against_cluster(rules, load_cluster(args.cluster).pools)
    return rules


def run_simulate(args: argparse.Namespace) -> Output:
    api.check_seed(args.seed, "--seed")
    api.check_round(args.round_s, "--round-s")
    progress = _progress if sys.stderr.isatty() else None
    rules = governance_for(args)
    warn_unenforced(args.governance, [args.profile], policies.profile, SIMULATED)  # a profile without guardrails
    stop = Stop()
    with stop.armed(), RunDirectory.prepare(args.out, force=args.force) as run:
        survey_first(args, [args.profile])
        api.simulate(args.trace, args.cluster, args.profile, seed=args.seed, round_s=args.round_s,
                     trace_format=args.format, out=run, options=SimOptions(check=args.check, progress=progress),
                     governance=rules)
        document = json.loads((run.path / "summary.json").read_text(encoding="utf-8"))
        stop.disarm()  # the commit is two renames: a signal between them must not abandon a finished run
        run.commit()
    return 0, render_summary(document) + f"\nwrote {args.out}/summary.json, jobs.csv, events.jsonl, timeline.csv"


def run_compare(args: argparse.Namespace) -> Output:
    profiles = [name.strip() for name in args.profiles.split(",") if name.strip()]
    api.check_compare(profiles, args.seeds, args.workers, args.round_s, option=True)
    governance_for(args)  # a mistake stops here, before the run directory is made
    warn_unenforced(args.governance, profiles, policies.profile, SIMULATED)  # profiles without guardrails
    stop = Stop()
    with stop.armed(), RunDirectory.prepare(args.out, force=args.force) as run:
        survey_first(args, profiles)
        rows, jcts = api.compare(args.trace, args.cluster, profiles, args.seeds, run, trace_format=args.format,
                                 workers=args.workers, round_s=args.round_s, progress=compare_progress(sys.stderr),
                                 governance=args.governance)
        write_comparison(rows, run.path)
        # Imported here, not at the top: matplotlib wants a writable cache folder when imported,
        # and every other verb (`fleetsched extender` under a read-only root) must start without one.
        from simulator.plots import cost_vs_queue, jct_cdf

        cost_vs_queue(rows, run.path / "cost_vs_queue.png")
        jct_cdf(jcts, run.path / "jct_cdf.png")
        stop.disarm()
        run.commit()
    out = args.out
    return 0, render_comparison(rows) + f"\nwrote {out}/comparison.csv, cost_vs_queue.png, jct_cdf.png, runs/"
