"""The Python API: what the command does, as functions that take paths or values and return values.

The command line (`fleetsched.cli`) is a thin layer over these: it parses arguments, calls
one of them and prints. Every function reads and checks its inputs before it starts, and
raises `scheduler.errors.InputError` (file, line, field) on a mistake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.decision import Decision
from scheduler.errors import InputError
from scheduler.model import ClusterSnapshot, Job
from scheduler.profile import Profile
from scheduler.world import Scheduler
from simulator import compare as comparison
from simulator.engine import SimOptions, SimResult
from simulator.engine import simulate as replay
from simulator.outputs import run_into
from traces.base import replayed
from traces.canonical import read_jobs
from traces.formats import read_trace

PathLike = str | Path


def load_profile(name_or_path: str | Profile) -> Profile:
    """A bundled profile by name (`default`, `cost-cpsat`, ...), a profile file by path, or `profile` itself."""
    return name_or_path if isinstance(name_or_path, Profile) else policies.profile(name_or_path)


def _cluster(cluster: PathLike | Cluster) -> Cluster:
    return cluster if isinstance(cluster, Cluster) else load_cluster(cluster)


@dataclass(frozen=True, slots=True)
class Plan:
    """One scheduling cycle on an empty cluster: the profile, what it saw and what it decided."""

    profile: str
    snapshot: ClusterSnapshot
    jobs: tuple[Job, ...]
    decision: Decision


def plan(
    cluster: PathLike | Cluster, jobs: PathLike | Sequence[Job], profile: str | Profile = "default", *, seed: int = 0
) -> Plan:
    """Places `jobs` (a canonical job file, or jobs) on `cluster` in one cycle of `profile`,
    explaining every job left pending."""
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    given = tuple(read_jobs(jobs)) if isinstance(jobs, str | Path) else tuple(jobs)
    snapshot = loaded.snapshot()
    decision = Scheduler(chosen).schedule(snapshot, given, now_s=0.0, seed=seed)
    return Plan(chosen.name, snapshot, given, decision)


def trace_order(trace: PathLike, trace_format: str | None = None) -> tuple[int, bool]:
    """How many jobs a trace file has and whether they come in submit order (one pass, in
    constant memory); InputError when it has none."""
    count, in_order, last_s = 0, True, -math.inf
    for job in replayed(read_trace(trace, trace_format)):
        count += 1
        in_order = in_order and job.submit_s >= last_s
        last_s = max(last_s, job.submit_s)
    if not count:
        raise InputError("the trace has no job to replay", source=str(trace))
    return count, in_order


def arrivals(trace: PathLike, trace_format: str | None = None) -> tuple[Iterable[Job], int]:
    """The jobs of a trace file for a replay, and how many there are. A trace in submit order
    (most are) is read again as the replay goes, so memory does not grow with its length;
    one that is not is read into memory (and the replay sorts it)."""
    count, in_order = trace_order(trace, trace_format)
    jobs = replayed(read_trace(trace, trace_format))
    return (jobs, count) if in_order else (list(jobs), count)


def simulate(
    trace: PathLike | Sequence[Job],
    cluster: PathLike | Cluster,
    profile: str | Profile = "default",
    *,
    seed: int = 0,
    round_s: float = 0.0,
    trace_format: str | None = None,
    out: PathLike | None = None,
    options: SimOptions | None = None,
) -> SimResult:
    """Replays `trace` (a trace file in any format fleetsched reads, or jobs) on `cluster` under
    `profile`; `options` sets the rest (invariant checks, progress reports), `seed` and
    `round_s` win over its own.

    Without `out`, the result holds the whole history (runs, events, timeline: `write_run`
    writes it as a run directory). With `out`, the replay writes the run directory `out` as it
    goes and forgets each job once it has ended: the way to replay a trace of millions of jobs."""
    if not math.isfinite(round_s) or round_s < 0:
        raise InputError("must be a finite number >= 0", field="round_s")
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    if isinstance(trace, str | Path):
        jobs, count = arrivals(trace, trace_format)
    else:
        jobs, count = list(trace), len(trace)
        if not jobs:
            raise InputError("the trace has no job to replay")
    options = replace(options or SimOptions(), seed=seed, round_s=round_s, total_jobs=count)
    scheduler = Scheduler(chosen, explain=False)
    if out is None:
        return replay(jobs, loaded, scheduler, options)
    info = {name: Path(value).name for name, value in (("trace", trace), ("cluster", cluster))
            if isinstance(value, str | Path)}  # fmt: skip
    result, _ = run_into(lambda sink: replay(jobs, loaded, scheduler, options, sink), out, loaded.pools, info)
    return result


def compare(
    trace: PathLike,
    cluster: PathLike,
    profiles: Sequence[str],
    seeds: int,
    out: PathLike,
    *,
    trace_format: str | None = None,
    workers: int | None = None,
    round_s: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Replays `trace` under every profile with seeds 0..seeds-1, in parallel processes, each
    writing `out/runs/<profile>-seed<N>/`; returns one row per run (the `comparison.csv`
    columns) and each profile's job completion times over all its seeds."""
    if not profiles:
        raise InputError("name at least one profile", field="profiles")
    if seeds < 1:
        raise InputError("must be at least 1", field="seeds")
    if round_s < 0:
        raise InputError("must be >= 0", field="round_s")
    for name in profiles:
        policies.profile(name)
    load_cluster(cluster)
    _, in_order = trace_order(trace, trace_format)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    template = comparison.RunSpec(str(trace), trace_format, str(cluster), round_s=round_s, in_order=in_order)
    return comparison.compare(template, profiles, seeds, folder, workers=workers)
