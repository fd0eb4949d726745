"""Sweep cells: the replays a grid asks for, each keyed by a hash of everything that makes its result.

A cell is one replay: a profile, a seed and one value of each axis that applies to the profile
(solver options only to CP-SAT profiles, a score weight only to profiles scoring with that
plugin; elsewhere the axis is None and grid points that differ only there are one cell).
Its key is the sha256 of a canonical JSON document (`CellSpec.inputs`): the code version
(`code_version`), the bytes of the trace, cluster and profile files (by their own sha256), the
profile's name, the overrides, the seed and the round length. File paths are not part of it:
moving the inputs keeps the cache, changing a byte of them or of the code does not.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

import policies
from fleetsched import api
from fleetsched.sweep_grid import Grid, Value, score_names, spot_pairs
from scheduler.cluster import Cluster, load_cluster
from scheduler.errors import InputError
from scheduler.model import Job, Pool
from scheduler.profile import Profile
from simulator.compare import run_names
from simulator.metrics import summary
from simulator.rundir import fleetsched_version
from traces.formats import read_trace_jobs

ROOT = Path(__file__).resolve().parent.parent
#: The sources whose bytes make a cell's result: the core, the policies and their bundled
#: profiles, the simulator, the trace readers, and the code here that applies a cell's
#: overrides (the rest of the entry package, the extender and the tests do not touch it).
CODE = ("scheduler/**/*.py", "scheduler/data/*.json", "policies/**/*.py", "policies/profiles/*.toml",
        "simulator/**/*.py", "traces/**/*.py", "fleetsched/api.py", "fleetsched/sweep_cells.py")  # fmt: skip


@functools.cache
def code_version() -> str:
    """fleetsched's version and the first 16 hex digits of the sha256 of its result-making sources (`CODE`)."""
    digest = hashlib.sha256()
    paths = sorted({path for pattern in CODE for path in ROOT.glob(pattern) if path.is_file()})
    for path in paths:
        data = path.read_bytes()
        digest.update(f"{path.relative_to(ROOT).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return f"{fleetsched_version()}+{digest.hexdigest()[:16]}"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class CellSpec:
    """One cell, in plain values so that it crosses process and machine boundaries."""

    key: str
    inputs: Mapping[str, Any]  # what the key hashes
    profile_name: str  # the profile's column in the results (`simulator.compare.run_names`)
    profile: str  # a bundled profile's name or a profile file's path
    seed: int
    axes: tuple[tuple[str, Value | None], ...]  # every axis of the grid; None where it does not apply
    trace: str
    trace_format: str | None
    cluster: str
    round_s: float

    def overrides(self) -> dict[str, Value]:
        return {name: value for name, value in self.axes if value is not None}


def _applies(axis: str, profile: Profile) -> bool:
    if axis.startswith("solver."):
        return profile.placer == "cpsat"
    if axis.startswith("score."):
        return axis.removeprefix("score.") in score_names(profile)
    return True


def points(grid: Grid) -> Iterator[tuple[int, int, int, tuple[Value, ...]]]:
    """The grid's points, or its sample's, in grid order: (index, profile number, seed, axis values).
    The index counts in the order of a cartesian product (the last axis changes fastest)."""
    radices = [len(grid.profiles), len(grid.seeds), *(len(axis.values) for axis in grid.axes)]
    size = math.prod(radices)
    if grid.sample:
        indices: Sequence[int] = sorted(random.Random(grid.sample_seed).sample(range(size), min(grid.sample, size)))
    else:
        indices = range(size)
    for index in indices:
        digits, rest = [], index
        for radix in reversed(radices):
            rest, digit = divmod(rest, radix)
            digits.append(digit)
        digits.reverse()
        values = tuple(axis.values[digit] for axis, digit in zip(grid.axes, digits[2:], strict=True))
        yield index, digits[0], grid.seeds[digits[1]], values


def plan_cells(grid: Grid) -> list[tuple[int, CellSpec]]:
    """Every distinct cell of the grid with the index of its first point, in grid order;
    InputError at the grid's key when a cell's pool sizes clash or a trace axis asks too much."""
    count, _ = api.trace_order(grid.trace, grid.trace_format)
    for axis in grid.axes:
        if axis.name == "trace.jobs" and max(axis.values) > count:
            grid.file.fail(["axes", "trace", "jobs"], f"the trace has {count:,} jobs, fewer than {max(axis.values):,}")
    names = run_names(grid.profiles)
    profile_sha = [file_sha256(_profile_path(reference)) for reference in grid.profiles]
    common = {"code": code_version(), "trace_sha256": file_sha256(grid.trace), "trace_format": grid.trace_format,
              "cluster_sha256": file_sha256(grid.cluster_path), "round_s": grid.round_s}  # fmt: skip
    checked: set[tuple[tuple[str, Value], ...]] = set()
    cells: dict[str, tuple[int, CellSpec]] = {}
    for index, number, seed, values in points(grid):
        profile = grid.loaded[number]
        axes = tuple((axis.name, value if _applies(axis.name, profile) else None)
                     for axis, value in zip(grid.axes, values, strict=True))  # fmt: skip
        sizes = tuple((name, value) for name, value in axes
                      if name.startswith(("pool.", "cluster.")) and value is not None)  # fmt: skip
        if sizes not in checked:
            try:
                apply_cluster(grid.cluster, dict(sizes))
            except ClashError as clash:
                grid.file.fail(["axes", *clash.axis.split(".", 2)], clash.problem)
            checked.add(sizes)
        inputs = {**common, "profile": {"name": names[number], "sha256": profile_sha[number]}, "seed": seed,
                  "overrides": {name: value for name, value in axes if value is not None}}  # fmt: skip
        text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
        key = hashlib.sha256(text.encode()).hexdigest()
        spec = CellSpec(key, inputs, names[number], grid.profiles[number], seed, axes, str(grid.trace),
                        grid.trace_format, str(grid.cluster_path), grid.round_s)  # fmt: skip
        cells.setdefault(key, (index, spec))
    return list(cells.values())


def _profile_path(reference: str) -> Path:
    return Path(reference) if Path(reference).suffix == ".toml" else policies.PROFILES_DIR / f"{reference}.toml"


class ClashError(Exception):
    """Node counts a cell sets that contradict each other (`apply_cluster`), at the axis `axis`."""

    def __init__(self, axis: str, problem: str) -> None:
        super().__init__(problem)
        self.axis = axis
        self.problem = problem


def apply_cluster(cluster: Cluster, overrides: Mapping[str, Value]) -> Cluster:
    """`cluster` with a cell's cluster and pool axes applied: `cluster.spot_share` first, then
    each `pool.<name>.<setting>`. Node counts a cell does not set follow the ones it does
    (a fixed-size pool given `nodes` stays fixed at that size; otherwise min_nodes is lowered
    and max_nodes raised as needed); counts the cell sets that contradict each other raise ClashError."""
    pools = dict(cluster.pools)
    share = overrides.get("cluster.spot_share")
    if share is not None:
        for spot, on_demand in spot_pairs(cluster).values():
            pools[spot], pools[on_demand] = _split(pools[spot], pools[on_demand], float(share))
    for name, pool in cluster.pools.items():
        given = {key.rsplit(".", 1)[1]: value for key, value in overrides.items() if key.startswith(f"pool.{name}.")}
        if given:
            pools[name] = _pool(pools[name], pool, given, name)
    return Cluster(cluster.source, MappingProxyType(pools))


def _split(spot: Pool, on_demand: Pool, share: float) -> tuple[Pool, Pool]:
    """The two pools' node counts added up, `share` of each total (rounded half up) made spot.
    Rounding each count the same way keeps min_nodes <= nodes <= max_nodes in both pools."""
    counts = {}
    for key in ("nodes", "min_nodes", "max_nodes"):
        total = getattr(spot, key) + getattr(on_demand, key)
        counts[key] = (math.floor(share * total + 0.5), total - math.floor(share * total + 0.5))
    return (replace(spot, **{key: pair[0] for key, pair in counts.items()}),
            replace(on_demand, **{key: pair[1] for key, pair in counts.items()}))  # fmt: skip


def _pool(pool: Pool, original: Pool, given: Mapping[str, Value], name: str) -> Pool:
    counts = {key: int(value) for key, value in given.items() if key in ("nodes", "min_nodes", "max_nodes")}
    values = {"nodes": pool.nodes, "min_nodes": pool.min_nodes, "max_nodes": pool.max_nodes}
    if set(counts) == {"nodes"} and original.min_nodes == original.nodes == original.max_nodes:
        values = dict.fromkeys(values, counts["nodes"])
    values.update(counts)
    if "max_nodes" not in counts:
        values["max_nodes"] = max(values["max_nodes"], values["nodes"], values["min_nodes"])
    if "min_nodes" not in counts:
        values["min_nodes"] = min(values["min_nodes"], values["nodes"], values["max_nodes"])
    if "nodes" not in counts:
        values["nodes"] = min(max(values["nodes"], values["min_nodes"]), values["max_nodes"])
    if not values["min_nodes"] <= values["nodes"] <= values["max_nodes"]:
        shown = ", ".join(f"{key} = {value}" for key, value in sorted(counts.items()))
        got = f"{values['min_nodes']} <= {values['nodes']} <= {values['max_nodes']}"
        raise ClashError(f"pool.{name}.{sorted(counts)[0]}",
                         f"need min_nodes <= nodes <= max_nodes, got {got} in the cell with {shown}")
    changed = replace(pool, nodes=values["nodes"], min_nodes=values["min_nodes"], max_nodes=values["max_nodes"])
    if "usd_per_node_hour" in given:
        changed = replace(changed, usd_per_node_hour=float(given["usd_per_node_hour"]), price_source="sweep grid")
    if "interruptions_per_node_hour" in given:
        changed = replace(changed, interruptions_per_node_hour=float(given["interruptions_per_node_hour"]))
    return changed


def apply_profile(profile: Profile, overrides: Mapping[str, Value]) -> Profile:
    """`profile` with a cell's solver options and score weights."""
    solver = {key.removeprefix("solver."): value for key, value in overrides.items() if key.startswith("solver.")}
    weights = {key.removeprefix("score."): int(value) for key, value in overrides.items() if key.startswith("score.")}
    score = tuple((plugin, weights.get(str(getattr(plugin, "name", "")), weight)) for plugin, weight in profile.score)
    return replace(profile, solver=replace(profile.solver, **cast(dict[str, Any], solver)), score=score)


def apply_trace(jobs: Sequence[Job], overrides: Mapping[str, Value]) -> list[Job]:
    """The first `trace.jobs` jobs in submit order, arriving `trace.arrival_rate` times as fast
    (the gaps after the first arrival divided by it; durations and everything else as they are)."""
    ordered = sorted(jobs, key=lambda job: (job.submit_s, job.id))
    if "trace.jobs" in overrides:
        ordered = ordered[: int(overrides["trace.jobs"])]
    rate = float(overrides.get("trace.arrival_rate", 1.0))
    if rate == 1.0 or not ordered:
        return ordered
    first_s = ordered[0].submit_s
    return [replace(job, submit_s=first_s + (job.submit_s - first_s) / rate) for job in ordered]


def run_cell(spec: CellSpec) -> dict[str, Any]:
    """Replays one cell and returns its summary.json document (`simulator.metrics.summary`)."""
    mine = code_version()
    if spec.inputs["code"] != mine:  # a Ray node running other code would poison the cache
        raise InputError(f"this worker runs fleetsched {mine}, the sweep {spec.inputs['code']}; "
                         "install the same fleetsched on every node", field="--address")  # fmt: skip
    overrides = spec.overrides()
    jobs = apply_trace(list(read_trace_jobs(spec.trace, spec.trace_format)), overrides)
    cluster = apply_cluster(load_cluster(spec.cluster), overrides)
    profile = apply_profile(policies.profile(spec.profile), overrides)
    result = api.simulate(jobs, cluster, profile, seed=spec.seed, round_s=spec.round_s)
    return summary(result, {"cell": spec.key})
