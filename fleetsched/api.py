"""The Python API: what the command does, as functions that take paths or values and return values.

The command line (`fleetsched.cli`) is a thin layer over these: it parses arguments, calls
one of them and prints. Every function reads and checks its inputs before it starts, and
raises `scheduler.errors.InputError` (file, line, field) on a mistake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.decision import Decision
from scheduler.errors import InputError
from scheduler.feasibility import Survey, surveys
from scheduler.model import ClusterSnapshot, Job
from scheduler.profile import Profile
from scheduler.world import Scheduler
from simulator import compare as comparison
from simulator.engine import SimOptions, SimResult
from simulator.engine import simulate as replay
from traces.base import replayed
from traces.canonical import read_jobs
from traces.formats import read_trace, read_trace_jobs

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


def survey(
    trace: PathLike | Iterable[Job],
    cluster: PathLike | Cluster,
    profile: str | Profile = "default",
    *,
    trace_format: str | None = None,
) -> Survey:
    """The jobs of `trace` (a trace file, or jobs) that no pool of `cluster` can ever take under
    `profile`, grouped by reason, and how many jobs it holds (`scheduler.feasibility`).

    The trace is streamed: a survey of ten million jobs keeps counts and a few ids per reason.
    """
    return survey_profiles(trace, cluster, [profile], trace_format=trace_format)[0]


def survey_profiles(
    trace: PathLike | Iterable[Job],
    cluster: PathLike | Cluster,
    profiles: Sequence[str | Profile],
    *,
    trace_format: str | None = None,
) -> tuple[Survey, ...]:
    """`survey` under each of `profiles` (their filters may differ), in one pass over the trace."""
    chosen = [load_profile(profile) for profile in profiles]
    loaded = _cluster(cluster)
    jobs = read_trace_jobs(trace, trace_format) if isinstance(trace, str | Path) else trace
    return surveys(jobs, loaded, chosen)


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
    if round_s < 0:
        raise InputError("must be >= 0", field="round_s")
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    jobs = list(replayed(read_trace(trace, trace_format))) if isinstance(trace, str | Path) else list(trace)
    if not jobs:
        raise InputError("the trace has no job to replay", source=str(trace) if isinstance(trace, str | Path) else "")
    options = SimOptions(seed=seed, round_s=round_s, check=check, progress=progress)
    return replay(jobs, loaded, Scheduler(chosen, explain=False), options)


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
    if not any(True for _ in replayed(read_trace(trace, trace_format))):
        raise InputError("the trace has no job to replay", source=str(trace))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    return comparison.compare(str(trace), str(cluster), profiles, seeds, folder, trace_format=trace_format,
                              workers=workers, round_s=round_s)
