"""The Python API: what the command does, as functions that take paths or values and return values.

The command line (`fleetsched.cli`) is a thin layer over these: it parses arguments, calls
one of them and prints. Every function reads and checks its inputs before it starts, and
raises `scheduler.errors.InputError` (file, line, field) on a mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.decision import Decision
from scheduler.errors import InputError
from scheduler.fairshare import make_view
from scheduler.feasibility import Survey, surveys
from scheduler.governance import Governance
from scheduler.governance_file import check_against_cluster, load_governance
from scheduler.model import ClusterSnapshot, Job
from scheduler.profile import Profile
from scheduler.world import Scheduler
from simulator import compare as comparison
from simulator.engine import SimOptions, SimResult
from simulator.engine import simulate as replay
from simulator.outputs import run_into
from simulator.rundir import RunDirectory
from traces.base import replayed
from traces.canonical import read_jobs
from traces.formats import read_trace, read_trace_jobs

PathLike = str | Path
#: Seeds are written into summary.json, which JSON readers may parse as doubles (exact up to
#: 2**53); the 32-bit range most random generators are seeded with is plenty.
MAX_SEED = 2**32 - 1
#: A scheduling round longer than a year is a typo (the clock is integer milliseconds).
MAX_ROUND_S = 365 * 24 * 3600.0
#: The shortest round: the replay's clock counts whole milliseconds.
MIN_ROUND_S = 0.001


def load_profile(name_or_path: str | Profile) -> Profile:
    """A bundled profile by name (`default`, `cost-cpsat`, ...), a profile file by path, or `profile` itself."""
    return name_or_path if isinstance(name_or_path, Profile) else policies.profile(name_or_path)


def _governance(governance: PathLike | Governance | None, cluster: Cluster | None = None) -> Governance | None:
    """A governance file read (InputError naming file, line and key), or the rules as given;
    checked against `cluster`'s pools when given."""
    if governance is None:
        return None
    rules = governance if isinstance(governance, Governance) else load_governance(governance)
    if cluster is not None and rules.source:
        check_against_cluster(rules, cluster.pools)
    return rules


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
    cluster: PathLike | Cluster,
    jobs: PathLike | Sequence[Job],
    profile: str | Profile = "default",
    *,
    seed: int = 0,
    governance: PathLike | Governance | None = None,
) -> Plan:
    """Places `jobs` (a canonical job file, or jobs) on `cluster` in one cycle of `profile`,
    explaining every job left pending. With `governance`, the cycle sees its rules at the
    start of its epoch with nothing spent and nothing approved."""
    check_seed(seed)
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    rules = _governance(governance, loaded)
    given = tuple(read_jobs(jobs)) if isinstance(jobs, str | Path) else tuple(given_jobs(jobs))
    snapshot = loaded.snapshot()
    if rules is not None:
        snapshot = replace(snapshot, governance=make_view(rules, snapshot, rules.epoch_s, {}, given))
    decision = Scheduler(chosen).schedule(snapshot, given, now_s=0.0, seed=seed)
    return Plan(chosen.name, snapshot, given, decision)


#: What one pass over a trace file found (jobs, in submit order?), by file, size, time and
#: format: the command surveys a trace before replaying it, and a trace of ten million jobs
#: takes a minute a pass.
_ORDERS: dict[tuple[str, int, int, str | None], tuple[int, bool]] = {}


def _file_key(trace: PathLike, trace_format: str | None) -> tuple[str, int, int, str | None]:
    path = Path(trace)
    if not path.exists():
        raise InputError("no such file", source=str(trace))
    found = path.stat()
    return str(path.resolve()), found.st_size, found.st_mtime_ns, trace_format


def _noting_order(jobs: Iterable[Job], key: tuple[str, int, int, str | None]) -> Iterator[Job]:
    """`jobs`, noting once they have all passed how many there were and whether in submit order."""
    count, in_order, last_s = 0, True, -math.inf
    for job in jobs:
        count += 1
        in_order = in_order and job.submit_s >= last_s
        last_s = max(last_s, job.submit_s)
        yield job
    if len(_ORDERS) > 64:
        _ORDERS.clear()
    _ORDERS[key] = (count, in_order)


def trace_order(trace: PathLike, trace_format: str | None = None) -> tuple[int, bool]:
    """How many jobs a trace file has and whether they come in submit order (one pass, in
    constant memory, unless a survey of the same file made it); InputError when it has none."""
    key = _file_key(trace, trace_format)
    if key not in _ORDERS:
        for _ in _noting_order(replayed(read_trace(trace, trace_format)), key):
            pass
    count, in_order = _ORDERS[key]
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
    if isinstance(trace, str | Path):
        jobs = _noting_order(read_trace_jobs(trace, trace_format), _file_key(trace, trace_format))
        return surveys(jobs, loaded, chosen)
    return surveys(trace, loaded, chosen)


def simulate(  # noqa: PLR0913 - the command's options, one keyword each
    trace: PathLike | Sequence[Job],
    cluster: PathLike | Cluster,
    profile: str | Profile = "default",
    *,
    seed: int = 0,
    round_s: float = 0.0,
    trace_format: str | None = None,
    out: PathLike | RunDirectory | None = None,
    options: SimOptions | None = None,
    governance: PathLike | Governance | None = None,
    force: bool = False,
) -> SimResult:
    """Replays `trace` (a trace file in any format fleetsched reads, or jobs) on `cluster` under
    `profile`; `options` sets the rest (invariant checks, progress reports), `seed` and
    `round_s` win over its own.

    Without `out`, the result holds the whole history (runs, events, timeline: `write_run`
    writes it as a run directory). With `out` (a new or empty directory, or a prepared
    `RunDirectory` its caller commits), the replay writes the run directory as it goes and
    forgets each job once it has ended: the way to replay a trace of millions of jobs. `force`
    lets `out` be a previous run, which the new one replaces (never a directory of other files).

    `governance` (a governance file, or its rules) turns on the guardrails' bookkeeping; the
    profile's guardrail plugins (the `governed` profile) enforce them."""
    check_seed(seed)
    check_round(round_s)
    chosen = load_profile(profile)
    loaded = _cluster(cluster)
    rules = _governance(governance, loaded)
    if isinstance(trace, str | Path):
        jobs, count = arrivals(trace, trace_format)
    else:
        jobs = given_jobs(trace, "trace")
        count = len(jobs)
        if not jobs:
            raise InputError("the trace has no job to replay")
    options = replace(options or SimOptions(), seed=seed, round_s=round_s, total_jobs=count)
    if rules is not None:
        options = replace(options, governance=rules)
    scheduler = Scheduler(chosen, explain=False)
    if out is None:
        return replay(jobs, loaded, scheduler, options)
    info = {name: Path(value).name for name, value in (("trace", trace), ("cluster", cluster))
            if isinstance(value, str | Path)}  # fmt: skip
    if isinstance(out, RunDirectory) or not force:
        return run_into(lambda sink: replay(jobs, loaded, scheduler, options, sink), out, loaded.pools, info)[0]
    with RunDirectory.prepare(out, force=True) as run:  # abandoned on leaving, unless committed
        result, _ = run_into(lambda sink: replay(jobs, loaded, scheduler, options, sink), run, loaded.pools, info)
        run.commit()
    return result


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
    governance: PathLike | None = None,
    force: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Replays `trace` under every profile with seeds 0..seeds-1, in parallel processes, each
    writing `out/runs/<name>-seed<N>/`; returns one row per run (the `comparison.csv`
    columns) and each profile's job completion times over all its seeds, under the profiles'
    run names (`simulator.compare.run_names`).

    `out` is a new or empty directory (committed when every run is written), or a prepared
    `RunDirectory` its caller commits (`RunDirectory.prepare(out, force=True)` replaces a
    previous run, as `force` does); `progress(done, total)` is called after each run."""
    check_compare(profiles, seeds, workers, round_s)
    for name in profiles:
        policies.profile(name)
    _governance(governance, load_cluster(cluster))  # a mistake stops here, before any run starts
    _, in_order = trace_order(trace, trace_format)
    run = out if isinstance(out, RunDirectory) else RunDirectory.prepare(out, force=force)
    try:
        specs = comparison.plan_runs(str(trace), str(cluster), profiles, seeds, run.path, trace_format=trace_format,
                                     round_s=round_s, in_order=in_order,
                                     governance=str(governance) if governance is not None else None)
        found = comparison.run_all(specs, workers=workers, progress=progress)
        if run is not out:
            run.commit()
    finally:
        if run is not out:
            run.abandon()  # nothing left to do after a commit
    return found


def given_jobs(jobs: object, field: str = "jobs") -> list[Job]:
    """`jobs` (jobs a caller hands the API) as a list; InputError naming the first item that is
    not a `Job`, or whose id an earlier one has (a trace file's reader checks its own)."""
    if isinstance(jobs, str | bytes | Mapping) or not isinstance(jobs, Iterable):
        raise InputError(f"give a trace file's path or jobs (scheduler.model.Job), got a {type(jobs).__name__}",
                         field=field)  # fmt: skip
    listed: list[Job] = []
    first: dict[str, int] = {}
    for index, job in enumerate(jobs):
        if not isinstance(job, Job):
            raise InputError(f"must be a scheduler.model.Job, got a {type(job).__name__}", field=f"{field}[{index}]")
        seen = first.setdefault(job.id, index)
        if seen != index:
            raise InputError(f"{job.id!r} is given twice (first as {field}[{seen}])", field=f"{field}[{index}].id")
        listed.append(job)
    return listed


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(seed: int, field: str = "seed") -> None:
    """InputError unless `seed` is a whole number from 0 to MAX_SEED."""
    if not _whole(seed) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"must be a whole number from 0 to {MAX_SEED}, got {seed!r}", field=field)


def check_round(round_s: float, field: str = "round_s") -> None:
    """InputError unless `round_s` is a finite number of seconds from 0 to MAX_ROUND_S."""
    number = isinstance(round_s, int | float) and not isinstance(round_s, bool)
    if not number or not math.isfinite(round_s) or not 0 <= round_s <= MAX_ROUND_S:
        shown = f"{round_s:g}" if number else repr(round_s)
        raise InputError(f"must be a number of seconds from 0 to {MAX_ROUND_S:.0f}, got {shown}", field=field)
    if 0 < round_s < MIN_ROUND_S:  # it would round to rounds of 0 ms: a replay that never advances
        raise InputError(f"must be 0 (a cycle on every change) or at least {MIN_ROUND_S:g} s: the clock counts "
                         f"milliseconds, got {round_s:g}", field=field)  # fmt: skip


def check_compare(
    profiles: Sequence[str], seeds: int, workers: int | None, round_s: float, *, option: bool = False
) -> None:
    """InputError for comparison arguments out of range, naming the parameter (the command's
    option, `--round-s`, when `option`)."""

    def field(name: str) -> str:
        return "--" + name.replace("_", "-") if option else name

    if isinstance(profiles, str):
        raise InputError(f"give a list of profile names, not one string ({profiles!r})", field=field("profiles"))
    if not profiles:
        raise InputError("name at least one profile", field=field("profiles"))
    try:
        comparison.run_names(profiles)
    except InputError as error:
        raise InputError(error.problem, field=field("profiles")) from None
    if not _whole(seeds) or not 1 <= seeds <= comparison.MAX_SEEDS:
        raise InputError(f"must be a whole number from 1 to {comparison.MAX_SEEDS}, got {seeds!r}",
                         field=field("seeds"))  # fmt: skip
    check_workers(workers, field("workers"))
    check_round(round_s, field("round_s"))


def check_workers(workers: int | None, field: str = "workers") -> None:
    """InputError unless `workers` is None (one per core) or a whole number, at least 1."""
    if workers is not None and (not _whole(workers) or workers < 1):
        raise InputError(f"must be a whole number, at least 1 (leave it out for one per core), got {workers!r}",
                         field=field)  # fmt: skip
