"""The `fleetsched trace` verbs: inspect, convert, synth, cluster. Each returns (exit code, text).

The command line (fleetsched/cli.py) registers these parsers and prints what they return;
nothing here prints. Outputs are written to a temporary name and renamed when complete, so a
failed conversion leaves no partial file behind; the folders above --out are made when missing
(`fleetsched.outfile`), and removed again when the command fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fleetsched import api
from fleetsched.outfile import parent_folders
from scheduler.cluster import load_cluster
from scheduler.errors import InputError
from scheduler.model import Job
from scheduler.tomlfile import TomlDocument
from traces.base import ReadReport, replayed
from traces.canonical import write_jsonl
from traces.formats import FORMATS, read_trace
from traces.inspect import render, summarise
from traces.nodes import cluster_from_nodes, write_cluster
from traces.parquet import write_parquet
from traces.synth import ARRIVALS, SynthSpec, gavel_jobs, generate

Output = tuple[int, str]
WRITERS: dict[str, Callable[[Iterable[Job], Path], int]] = {".jsonl": write_jsonl, ".parquet": write_parquet}
#: `trace synth`'s options that set a SynthSpec field: the field and the option's name.
SYNTH_OPTIONS = {"jobs": "--jobs", "jobs_per_hour": "--jobs-per-hour", "arrival": "--arrival"}
#: The SynthSpec fields Gavel's generator uses.
GAVEL_FIELDS = ("jobs", "jobs_per_hour")


def add_trace_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `trace inspect|convert|synth|cluster` under the command's verbs."""
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

    synth = trace_verbs.add_parser("synth", help="generate a seeded synthetic workload as canonical records")
    synth.add_argument("--out", required=True, help="output file: .jsonl or .parquet")
    synth.add_argument("--generator", choices=("spec", "gavel"), default="spec",
                       help="spec: the SynthSpec mix (default); gavel: Gavel's generated job stream")
    synth.add_argument("--spec", help="TOML file setting SynthSpec fields (see traces/synth.py)")
    synth.add_argument("--jobs", type=int, help="number of jobs (default: the spec's, or 1000)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--jobs-per-hour", type=float, help="mean arrival rate")
    synth.add_argument("--arrival", choices=ARRIVALS, help="arrival process (spec generator)")
    synth.add_argument("--multi-gpu", action="store_true", help="gavel generator: 1/2/4/8-GPU jobs")
    synth.set_defaults(run=run_synth)

    cluster = trace_verbs.add_parser("cluster", help="turn a node list (openb, Alibaba 2026 spot) into a cluster file")
    cluster.add_argument("file", help="node list CSV")
    cluster.add_argument("--out", required=True, help="cluster file to write: .toml (replaced if it exists)")
    cluster.set_defaults(run=run_cluster)


def _writer(out: Path) -> Callable[[Iterable[Job], Path], int]:
    writer = WRITERS.get(out.suffix)
    if writer is None:
        raise InputError(f"write .jsonl or .parquet, got {out.name!r}", field="--out")
    return writer


def run_inspect(args: argparse.Namespace) -> Output:
    report = ReadReport(args.file)
    summary = summarise(read_trace(args.file, args.format, skip_bad_rows=args.skip_bad_rows, report=report), report)
    if args.json:
        return 0, json.dumps(summary.as_dict(), indent=2, sort_keys=True)
    return 0, render(summary)


def run_convert(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    writer = _writer(out)
    if out.resolve() == Path(args.file).resolve():
        raise InputError("the output would overwrite the input", field="--out")
    report = ReadReport(args.file)
    with parent_folders(out):
        count = writer(replayed(read_trace(args.file, args.format, skip_bad_rows=args.skip_bad_rows, report=report)),
                       out)  # fmt: skip
    dropped = ", ".join(f"{n:,} {reason}" for reason, n in sorted(report.dropped.items())) or "none"
    return 0, (f"wrote {count:,} jobs to {out} from {report.rows:,} rows ({report.format}); dropped: {dropped};"
               f" bad rows skipped: {len(report.skipped):,}")


def load_spec(path: str | Path, *, generator: str = "spec") -> SynthSpec:
    """A SynthSpec from TOML: each key a SynthSpec field; mixes keyed by GPUs or priority as text.
    For the gavel generator only the fields it uses (GAVEL_FIELDS) may be set: others would be ignored."""
    document = TomlDocument.read(path)
    known = {f.name: f for f in dataclasses.fields(SynthSpec)}
    values: dict[str, Any] = {}
    for key, raw in document.data.items():
        if key not in known:
            document.fail(key, f"unknown field; a spec has {', '.join(known)}")
        if generator == "gavel" and key not in GAVEL_FIELDS:
            document.fail(key, f"has no effect with --generator gavel: it uses {' and '.join(GAVEL_FIELDS)} only")
        values[key] = raw
        if key in ("gpu_mix", "priority_mix") and isinstance(raw, dict):
            try:
                values[key] = {int(k): v for k, v in raw.items()}
            except ValueError:
                document.fail(key, "keys must be whole numbers, e.g. { 1 = 0.6, 8 = 0.4 }")
        if key in ("share_milli", "gang_replicas") and isinstance(raw, list):
            values[key] = tuple(raw)
    try:
        return SynthSpec(**values)
    except InputError as error:
        document.fail(error.field, error.problem)
    except TypeError as error:  # a value of the wrong shape, e.g. a number where a table belongs
        raise InputError(str(error), source=str(path)) from None


def _check_synth_options(args: argparse.Namespace) -> None:
    """InputError naming the option: a seed out of range (as simulate's), or an option that the
    chosen generator would ignore."""
    api.check_seed(args.seed, "--seed")
    if args.generator == "gavel" and args.arrival is not None:
        raise InputError("has no effect with --generator gavel: its arrivals are Poisson", field="--arrival")
    if args.generator == "spec" and args.multi_gpu:
        raise InputError("has no effect with --generator spec: set gpu_mix in a --spec file", field="--multi-gpu")


def _synth_spec(args: argparse.Namespace) -> SynthSpec:
    """The spec file's SynthSpec (or the default) with the options given; a bad value from an
    option is named by the option (`--jobs`), one from the file by the file's field."""
    spec = load_spec(args.spec, generator=args.generator) if args.spec else SynthSpec()
    given = {name: value for name in SYNTH_OPTIONS if (value := getattr(args, name)) is not None}
    try:
        return dataclasses.replace(spec, **given)
    except InputError as error:
        if error.field in given:
            raise InputError(error.problem, field=SYNTH_OPTIONS[error.field]) from None
        raise


def run_synth(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    writer = _writer(out)
    _check_synth_options(args)
    spec = _synth_spec(args)
    if args.generator == "gavel":
        jobs = gavel_jobs(spec.jobs, args.seed, spec.jobs_per_hour, args.multi_gpu)
    else:
        jobs = generate(spec, args.seed)
    with parent_folders(out):
        count = writer(jobs, out)
    return 0, f"wrote {count:,} {args.generator} jobs (seed {args.seed}) to {out}"


def run_cluster(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    if out.suffix != ".toml":  # as convert: never replace a trace or another data file given by mistake
        raise InputError(f"write a .toml cluster file, got {out.name!r}", field="--out")
    if out.resolve() == Path(args.file).resolve():
        raise InputError("the output would overwrite the input", field="--out")
    with parent_folders(out):
        write_cluster(cluster_from_nodes(args.file), out)
    cluster = load_cluster(args.out)
    gpus = sum(pool.nodes * pool.gpus_per_node for pool in cluster.pools.values())
    nodes = sum(pool.nodes for pool in cluster.pools.values())
    return 0, f"wrote {args.out}: {len(cluster.pools)} pools, {nodes:,} nodes, {gpus:,} GPUs"
