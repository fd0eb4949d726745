"""The Python API: what the command does, as functions that take paths or values and return values.

The command line (`fleetsched.cli`) is a thin layer over these: it parses arguments, calls
one of them and prints. Every function reads and checks its inputs before it starts, and
raises `scheduler.errors.InputError` (file, line, field) on a mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from simulator.rundir import RunDirectory
from traces.base import replayed
from traces.canonical import read_jobs
from traces.formats import read_trace

PathLike = str | Path
#: Seeds are written into summary.json, which JSON readers may parse as doubles (exact up to
#: 2**53); the 32-bit range most random generators are seeded with is plenty.
MAX_SEED = 2**32 - 1
#: A scheduling round longer than a year is a typo (the clock is integer milliseconds).
MAX_ROUND_S = 365 * 24 * 3600.0


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


def simulate(
    trace: PathLike | Sequence[Job],
    cluster: PathLike | Cluster,
    profile: str | Profile = "default",
    *,
    seed: int = 0,
    round_s: float = 0.0,
    check: bool = False,
    trace_format: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimResult:
    """Replays `trace` (a trace file in any format fleetsched reads, or jobs) on `cluster` under
    `profile`; the result holds the finished world: runs, ledger, events and timeline
    (`simulator.outputs.write_run` writes it as a run directory)."""
    check_seed(seed)
    check_round(round_s)
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    jobs = list(replayed(read_trace(trace, trace_format))) if isinstance(trace, str | Path) else list(trace)
    if not jobs:
        raise InputError("the trace has no job to replay", source=str(trace) if isinstance(trace, str | Path) else "")
    options = SimOptions(seed=seed, round_s=round_s, check=check, progress=progress)
    return replay(jobs, loaded, Scheduler(chosen, explain=False), options)


def compare(  # noqa: PLR0913 - the command's options, one keyword each, as simulate takes them
    trace: PathLike,
    cluster: PathLike,
    profiles: Sequence[str],
    seeds: int,
    out: PathLike | RunDirectory,
    *,
    trace_format: str | None = None,
    workers: int | None = None,
    round_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Replays `trace` under every profile with seeds 0..seeds-1, in parallel processes, each
    writing `out/runs/<name>-seed<N>/`; returns one row per run (the `comparison.csv`
    columns) and each profile's job completion times over all its seeds, under the profiles'
    run names (`simulator.compare.run_names`).

    `out` is a new or empty directory (committed when every run is written), or a prepared
    `RunDirectory` its caller commits (`RunDirectory.prepare(out, force=True)` replaces a
    previous run); `progress(done, total)` is called after each run."""
    check_compare(profiles, seeds, workers, round_s)
    for name in profiles:
        policies.profile(name)
    load_cluster(cluster)
    if not any(True for _ in replayed(read_trace(trace, trace_format))):
        raise InputError("the trace has no job to replay", source=str(trace))
    run = out if isinstance(out, RunDirectory) else RunDirectory.prepare(out)
    try:
        specs = comparison.plan_runs(str(trace), str(cluster), profiles, seeds, run.path, trace_format=trace_format,
                                     round_s=round_s)
        found = comparison.run_all(specs, workers=workers, progress=progress)
        if run is not out:
            run.commit()
    finally:
        if run is not out:
            run.abandon()  # nothing left to do after a commit
    return found


def check_seed(seed: int, field: str = "seed") -> None:
    """InputError unless `seed` is a whole number from 0 to MAX_SEED."""
    if not 0 <= seed <= MAX_SEED:
        raise InputError(f"must be a whole number from 0 to {MAX_SEED}, got {seed}", field=field)


def check_round(round_s: float, field: str = "round_s") -> None:
    """InputError unless `round_s` is a finite number of seconds from 0 to MAX_ROUND_S."""
    if not math.isfinite(round_s) or not 0 <= round_s <= MAX_ROUND_S:
        raise InputError(f"must be a number of seconds from 0 to {MAX_ROUND_S:.0f}, got {round_s:g}", field=field)


def check_compare(
    profiles: Sequence[str], seeds: int, workers: int | None, round_s: float, *, option: bool = False
) -> None:
    """InputError for comparison arguments out of range, naming the parameter (the command's
    option, `--round-s`, when `option`)."""

    def field(name: str) -> str:
        return "--" + name.replace("_", "-") if option else name

    if not profiles:
        raise InputError("name at least one profile", field=field("profiles"))
    try:
        comparison.run_names(profiles)
    except InputError as error:
        raise InputError(error.problem, field=field("profiles")) from None
    if not 1 <= seeds <= comparison.MAX_SEEDS:
        raise InputError(f"must be from 1 to {comparison.MAX_SEEDS}, got {seeds}", field=field("seeds"))
    if workers is not None and workers < 1:
        raise InputError(f"must be at least 1 (leave it out for one per core), got {workers}", field=field("workers"))
    check_round(round_s, field("round_s"))
