"""Comparing profiles: the same trace and cluster under several profiles and seeds, in parallel.

Each run is a separate process that reads its inputs itself and writes its own run directory
(`runs/<name>-seed<N>/`); the parent gathers the summaries into `comparison.csv`, a table,
and the plots `cost_vs_queue.png` and `jct_cdf.png`. Each profile gets a run name of its own
(`run_names`): two profile files that share a file name are told apart by their folders.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import policies
from scheduler.cluster import load_cluster
from scheduler.errors import InputError
from scheduler.governance_file import load_governance
from scheduler.model import Job
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.outputs import run_into
from traces.formats import read_trace_jobs

#: Each seed is a whole replay and a run directory; a thousand already narrows a mean far more
#: than the differences between profiles need, and a larger count is most likely a typo that
#: would fill the disk with run directories.
MAX_SEEDS = 1000
COLUMNS = (
    "profile", "seed", "jobs", "completed", "unfinished", "cost_usd", "idle_usd", "lost_work_usd", "queue_mean_s",
    "queue_p95_s", "jct_mean_s", "jct_p95_s", "utilisation", "preemptions", "job_interruptions", "lost_gpu_hours",
)


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of a comparison (plain paths and names, so it crosses process boundaries)."""

    trace: str
    trace_format: str | None
    cluster: str
    profile: str
    seed: int
    out: str
    round_s: float = 0.0
    name: str = ""  # the run name (the profile's column in comparison.csv); the profile's when empty
    in_order: bool = True  # the trace comes in submit order: it is streamed, not held
    governance: str | None = None  # a governance file (each run reads it itself)


def run_one(spec: RunSpec) -> tuple[dict[str, Any], list[float]]:
    """Runs one replay, writing its run directory as it goes; returns its summary and its jobs' JCTs."""
    jobs = read_trace_jobs(spec.trace, spec.trace_format)
    cluster = load_cluster(spec.cluster)
    scheduler = Scheduler(policies.profile(spec.profile), explain=False)
    rules = load_governance(spec.governance) if spec.governance is not None else None
    options = SimOptions(seed=spec.seed, round_s=spec.round_s, governance=rules)
    info = {"trace": Path(spec.trace).name, "cluster": Path(spec.cluster).name}
    arriving: Iterable[Job] = jobs if spec.in_order else list(jobs)  # a list is sorted by the replay
    result, document = run_into(lambda sink: simulate(arriving, cluster, scheduler, options, sink), spec.out,
                                cluster.pools, info)  # fmt: skip
    return document, result.world.tally.jct_s.sample()  # for the CDF plot: at most 100,000 values


def row(document: dict[str, Any], name: str = "") -> dict[str, Any]:
    """One comparison.csv row from a run's summary, named `name` (else the summary's profile)."""
    jobs, cost = document["jobs"], document["cost_usd"]
    return {
        "profile": name or document["run"]["profile"], "seed": document["run"]["seed"], "jobs": jobs["total"],
        "completed": jobs["completed"], "unfinished": jobs["unfinished"], "cost_usd": cost["total"],
        "idle_usd": cost["idle"], "lost_work_usd": cost["lost_work"], "queue_mean_s": document["queue_s"]["mean"],
        "queue_p95_s": document["queue_s"]["p95"], "jct_mean_s": document["jct_s"]["mean"],
        "jct_p95_s": document["jct_s"]["p95"], "utilisation": document["utilisation"],
        "preemptions": document["preemptions"], "job_interruptions": document["job_interruptions"],
        "lost_gpu_hours": document["gpu_hours"]["lost"],
    }


def run_names(profiles: Sequence[str]) -> list[str]:
    """A distinct run name per profile: a bundled name as it is, a .toml file by its stem, and
    files whose names would clash by as many of their folders as tell them apart
    (`default`, `mine/default.toml` -> `default`, `mine-default`); InputError when nothing can.

    >>> run_names(["default", "mine/default.toml", "theirs/default.toml", "binpack"])
    ['default', 'mine-default', 'theirs-default', 'binpack']
    """
    keys = [str(Path(profile).resolve()) if _is_file(profile) else profile for profile in profiles]
    for index, key in enumerate(keys):
        if key in keys[:index]:
            raise InputError(f"{profiles[index]!r} is named twice", field="profiles")
    names = [_name(profile, 1) for profile in profiles]
    depth = 1
    while len(set(names)) < len(names):
        depth += 1
        clashing = [index for index, name in enumerate(names) if names.count(name) > 1]
        longer = [_name(profile, depth) if index in clashing else name for index, (profile, name) in
                  enumerate(zip(profiles, names, strict=True))]
        if longer == names:
            first, second = (profiles[index] for index in clashing if names[index] == names[clashing[0]])
            raise InputError(f"{first!r} and {second!r} would both run as {names[clashing[0]]!r}; "
                             "copy one to a file of another name", field="profiles")
        names = longer
    return names


def _is_file(profile: str) -> bool:
    return Path(profile).suffix == ".toml"  # as policies.profile tells a file from a bundled name


def _name(profile: str, depth: int) -> str:
    """A profile's run name: a bundled name, or the last `depth` parts of a file's full path."""
    if not _is_file(profile):
        return profile
    path = Path(profile).resolve().with_suffix("")
    return "-".join(path.parts[1:][-depth:])


def plan_runs(  # noqa: PLR0913 - the comparison's options, one keyword each
    trace: str, cluster: str, profiles: Sequence[str], seeds: int, out: Path, *, trace_format: str | None = None,
    round_s: float = 0.0, in_order: bool = True, governance: str | None = None,
) -> list[RunSpec]:
    """Every (profile, seed) run of a comparison, writing `out/runs/<run name>-seed<N>/`."""
    return [
        RunSpec(trace, trace_format, cluster, profile, seed, str(out / "runs" / f"{name}-seed{seed}"), round_s, name,
                in_order, governance)
        for profile, name in zip(profiles, run_names(profiles), strict=True) for seed in range(seeds)
    ]


def compare(
    trace: str, cluster: str, profiles: Sequence[str], seeds: int, out: Path, *, trace_format: str | None = None,
    workers: int | None = None, round_s: float = 0.0,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Runs every (profile, seed) into `out/runs/`; returns the comparison rows and each profile's
    JCTs (all seeds), both under the profiles' run names."""
    specs = plan_runs(trace, cluster, profiles, seeds, out, trace_format=trace_format, round_s=round_s)
    return run_all(specs, workers=workers)


def run_all(
    specs: Sequence[RunSpec], *, workers: int | None = None, progress: Callable[[int, int], None] | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Runs every spec, in parallel processes, calling `progress(done, total)` after each run;
    returns the comparison rows and each run name's JCTs (all its seeds)."""
    workers = max(1, min(len(specs), workers or os.cpu_count() or 1))
    if workers == 1:
        results = []
        for spec in specs:
            results.append(run_one(spec))
            if progress is not None:
                progress(len(results), len(specs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_one, spec) for spec in specs]
            for done, _ in enumerate(as_completed(futures), start=1):
                if progress is not None:
                    progress(done, len(specs))
            results = [future.result() for future in futures]
    rows = [row(document, spec.name) for spec, (document, _) in zip(specs, results, strict=True)]
    jcts: dict[str, list[float]] = {}
    for spec, (_, values) in zip(specs, results, strict=True):
        jcts.setdefault(spec.name or spec.profile, []).extend(values)
    return rows, jcts


def write_comparison(rows: Sequence[dict[str, Any]], out: Path) -> None:
    temporary = out / ".comparison.csv.partial"
    with temporary.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    temporary.replace(out / "comparison.csv")


def render_comparison(rows: Sequence[dict[str, Any]]) -> str:
    """Mean over seeds per profile, as a table."""
    lines = [f"{'profile':<14} {'runs':>4} {'cost $':>12} {'idle $':>10} {'lost $':>9} {'p95 queue s':>12} "
             f"{'mean JCT s':>11} {'util':>6} {'preempt':>8} {'interrupt':>9} {'unfinished':>10}"]
    for profile in dict.fromkeys(row["profile"] for row in rows):
        mine = [row for row in rows if row["profile"] == profile]

        def mean(key: str, runs: list[dict[str, Any]] = mine) -> float:
            return sum(float(run[key]) for run in runs) / len(runs)

        def seconds(key: str, width: int, runs: list[dict[str, Any]] = mine) -> str:
            known = [float(run[key]) for run in runs if run[key] is not None]  # None: no job started (ended)
            return f"{sum(known) / len(known):>{width},.0f}" if known else f"{'-':>{width}}"

        lines.append(
            f"{profile:<14} {len(mine):>4} {mean('cost_usd'):>12,.2f} {mean('idle_usd'):>10,.2f} "
            f"{mean('lost_work_usd'):>9,.2f} {seconds('queue_p95_s', 12)} {seconds('jct_mean_s', 11)} "
            f"{mean('utilisation'):>6.1%} {mean('preemptions'):>8.1f} {mean('job_interruptions'):>9.1f} "
            f"{mean('unfinished'):>10.1f}"
        )
    return "\n".join(lines)
