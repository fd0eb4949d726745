"""The `fleetsched fill` verb: the FGD packing experiment (Weng et al., ATC'23) on an openb node and pod list.

Every input is read and checked before the run directory is made; the files are written into a
temporary folder and renamed into place only when all runs finished (`simulator.rundir`); SIGTERM
or SIGINT before that removes the temporary folder. The authors' figures (`--expected`) are over
the seeds run (`simulator.fill_authors`); a policy's 100 % figure is n/a, with the reason on
stderr, for a seed whose arrivals never land near 100 % (`simulator.fill.blank_reason`).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetsched.stopping import Stop, StopSignalError
from scheduler.errors import InputError
from scheduler.fill import FillNode, FillPod
from simulator.fill import POLICIES, blank_reason, read_nodes, read_pods, run_fill
from simulator.fill_authors import authors_medians, lookup
from simulator.fill_output import CurveRow, medians, plot, read_rows, summary, write_rows
from simulator.rundir import RunDirectory

Output = tuple[int, str]
log = logging.getLogger(__name__)


def add_fill_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `fill` under the command's verbs."""
    parser = verbs.add_parser("fill", help="FGD packing experiment: pods arrive onto a fixed cluster, none leaves")
    parser.add_argument("--nodes", required=True, help="openb node list (sn,cpu_milli,memory_mib,gpu,model)")
    parser.add_argument("--pods", required=True, help="openb pod list (openb_pod_list_*.csv)")
    parser.add_argument("--policy", required=True,
                        help=f"one policy or a comma list: {', '.join(POLICIES)}, or all")
    parser.add_argument("--tune", default="1.3", help="grow or prune the pods to this x the cluster's GPUs (1.3)")
    parser.add_argument("--seeds", default="42-51", help="seeds: 42-51 or 42,43 (default 42-51)")
    parser.add_argument("--expected", help="the authors' analysis_allo_discrete.csv, drawn dashed in the plot")
    parser.add_argument("--json", action="store_true", help="print the per-policy medians as JSON")
    parser.add_argument("--out", required=True, help="run directory to write (new or empty)")
    parser.add_argument("--force", action="store_true", help="replace a previous fleetsched run in --out")
    parser.set_defaults(run=run_fill_verb)


def parse_seeds(text: str) -> list[int]:
    """'42-51' or '42,43,50' as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise InputError(f"not a seed or seed range: {part!r}", field="--seeds")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        if last < first or last - first >= 1000:
            raise InputError(f"range {part.strip()!r} must run upwards over at most 1000 seeds", field="--seeds")
        seeds.extend(range(first, last + 1))
    twice = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if twice:  # the same seed gives the same curve: a repeat would only weigh it twice in the median
        raise InputError(f"seed{'s' if len(twice) > 1 else ''} {', '.join(map(str, twice))} named more than once",
                         field="--seeds")
    return seeds


def parse_policies(text: str) -> list[str]:
    """The named policies, in the authors' order; 'all' is every one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names == ["all"]:
        return list(POLICIES)
    unknown = [name for name in names if name not in POLICIES]
    if unknown or not names:
        raise InputError(f"unknown policy {', '.join(unknown) or repr(text)}; one of {', '.join(POLICIES)}, or all",
                         field="--policy")
    return [policy for policy in POLICIES if policy in names]


def parse_tune(text: str) -> float:
    try:
        tune = float(text)
    except ValueError:
        raise InputError(f"not a number: {text!r}", field="--tune") from None
    if not 0 < tune <= 10:
        raise InputError(f"must be in (0, 10], got {text}", field="--tune")
    return tune


def run_fill_verb(args: argparse.Namespace) -> Output:
    policies, seeds, tune = parse_policies(args.policy), parse_seeds(args.seeds), parse_tune(args.tune)
    nodes, pods = read_nodes(Path(args.nodes)), read_pods(Path(args.pods))
    workload = Path(args.pods).stem
    authors = authors_medians(read_rows(Path(args.expected)), workload, tune, policies, seeds) \
        if args.expected else None
    theirs_at_100, theirs = lookup(authors)
    stop = Stop()
    try:
        with stop.armed(), RunDirectory.prepare(args.out, force=args.force) as run:
            replayed = _replay(nodes, pods, policies, seeds, tune, workload)
            write_rows(replayed.rows, run.path / "allo_discrete.csv")
            document = summary(replayed.rows, workload, tune, seeds, replayed.blank,
                               authors.as_json() if authors else None)
            text = json.dumps(document, indent=2, sort_keys=True) + "\n"
            (run.path / "summary.json").write_text(text, encoding="utf-8")
            plot(replayed.rows, theirs, run.path / "unallocated.png")
            stop.disarm()  # the commit is two renames: a signal between them must not abandon a finished run
            run.commit()
    except StopSignalError as stopped:  # leaving the block abandoned the run: its temporary folder is gone
        _note([stopped.describe(args.out)])
        return stopped.exit_code, ""
    _note([*(f"seed {seed}: unallocated GPU % at 100 % arrived is n/a: {why}" for seed, why in replayed.blank.items()),
           *(authors.notes() if authors else [])])
    if args.json:
        return 0, json.dumps(document["unallocated_gpu_pct_at_100_median"], sort_keys=True)
    table = render(medians(replayed.rows), theirs_at_100, replayed.timings)
    footer = f"\n{authors.footer(seeds)}" if authors else ""
    return 0, table + f"\nwrote {args.out}/allo_discrete.csv, summary.json, unallocated.png" + footer


@dataclass(frozen=True, slots=True)
class _Replayed:
    """Every policy and seed's curve, the seconds each took, and the seeds whose cell at 100 % is blank (why)."""

    rows: Sequence[CurveRow]
    timings: Mapping[str, Sequence[float]]
    blank: Mapping[int, str]  # arrivals depend on the seed alone, so a blank cell is one seed's, for every policy


def _replay(
    nodes: Sequence[FillNode], pods: Sequence[FillPod], policies: Sequence[str], seeds: Sequence[int], tune: float,
    workload: str,
) -> _Replayed:
    rows: list[CurveRow] = []
    timings: dict[str, list[float]] = {}
    blank: dict[int, str] = {}
    for policy in policies:
        for seed in seeds:
            started = time.perf_counter()
            result = run_fill(nodes, pods, policy, seed, tune)
            timings.setdefault(policy, []).append(time.perf_counter() - started)
            rows.append(CurveRow.of(workload, tune, result))
            reason = blank_reason(result.arrived_milli, result.cluster_gpus)
            if reason is not None:
                blank[seed] = reason
            log.info("%s seed %d: %d pods, %d dropped", policy, seed, len(result.arrived_milli), result.failed)
    return _Replayed(rows, timings, blank)


def _note(lines: Sequence[str]) -> None:
    """Lines on stderr beside the table: what the figures leave out and why."""
    for line in lines:
        sys.stderr.write(f"fleetsched: {line}\n")


def render(
    found: Mapping[str, float | None], theirs: Mapping[str, float | None], timings: Mapping[str, Sequence[float]]
) -> str:
    """A table: policy, our median unallocated GPU % at 100 % arrived, the authors' (with --expected), s per seed.

    n/a: no seed's curve has a cell at 100 % arrived (the reason is on stderr); -: no authors' row.
    """
    lines = [f"{'policy':<14} {'unalloc% @100':>13} {'authors':>8} {'s/seed':>7}"]
    for policy, value in found.items():
        seconds = sum(timings[policy]) / len(timings[policy])
        authors = _cell(theirs[policy]) if policy in theirs else "-"
        lines.append(f"{policy:<14} {_cell(value):>13} {authors:>8} {seconds:>7.2f}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
