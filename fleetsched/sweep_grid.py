"""Sweep grid files: the trace, the cluster and the axes a sweep varies, checked key by key.

A grid file (docs/sweep.md) names a trace and a cluster, relative to itself, and under
`[axes]` the values to try: profiles, seeds, CP-SAT solver options (`[axes.solver]`), score
plugin weights (`[axes.score]`), per-pool sizes, prices and interruption rates
(`[axes.pool.<name>]`), the spot share of each GPU model's nodes (`[axes.cluster]`) and the
trace's arrival rate and length (`[axes.trace]`). Each list is one axis; the sweep runs the
cartesian product of all of them, or `sample` cells of it drawn with `sample_seed`.

Every mistake raises InputError naming the grid file, the line and the key, before anything
runs or is written.
"""

from __future__ import annotations

import math
import re
import tomllib
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import policies
from scheduler.cluster import MAX_NODES, MAX_NUMBER, Cluster, load_cluster
from scheduler.errors import InputError
from scheduler.model import Capacity
from scheduler.profile import Profile, SolverOptions
from scheduler.tomlfile import TomlDocument
from simulator.compare import MAX_SEEDS
from traces.formats import FORMATS

Value = int | float
#: A grid larger than this is most likely a typo (each cell is a whole replay); `sample` draws fewer.
MAX_CELLS = 100_000
MAX_SEED = 2**32 - 1
#: Score weights are small integers (the bundled profiles use 1 to 3); a million is a typo.
MAX_WEIGHT = 1_000_000
#: Jobs arrive at most this many times faster or slower than the trace says: past it, a
#: replay of a day becomes seconds or years, which no question about a cluster needs.
MAX_ARRIVAL_RATE = 1000.0
POOL_COUNTS = ("nodes", "min_nodes", "max_nodes")
POOL_NUMBERS = ("usd_per_node_hour", "interruptions_per_node_hour")
_TOP = {"trace", "cluster", "format", "round_s", "sample", "sample_seed", "axes"}
_AXES = {"profiles", "seeds", "solver", "score", "pool", "cluster", "trace"}
_HEADER = re.compile(r"\s*\[\[?(?P<name>[^\]]+)\]\]?\s*(#.*)?$")
_ASSIGN = re.compile(r"\s*(?P<key>[^=#\[]+?)\s*=")


@dataclass(frozen=True, slots=True)
class Axis:
    """One varied setting: its column name (`solver.spot_risk_weight`, `pool.h100-spot.max_nodes`,
    `cluster.spot_share`, `trace.arrival_rate`, ...) and the values to try, in file order."""

    name: str
    values: tuple[Value, ...]


@dataclass(frozen=True, slots=True)
class GridFile:
    """A grid document being checked: errors name its file, the key's line and the key's path."""

    document: TomlDocument

    def fail(self, path: Sequence[str], message: str) -> NoReturn:
        raise InputError(message, source=self.document.source, line=self.line(path), field=".".join(path))

    def line(self, path: Sequence[str]) -> int | None:
        """The line that sets `path` (a key, or the table holding it), else that of its longest set prefix."""
        best: tuple[int, int] | None = None  # (matched parts, line)
        table: tuple[str, ...] = ()
        for number, text in enumerate(self.document.text.splitlines(), start=1):
            header = _HEADER.match(text)
            if header:
                table = _key_path(header.group("name")) or ()
                found = table
            else:
                assign = _ASSIGN.match(text)
                keys = _key_path(assign.group("key")) if assign else None
                if keys is None:
                    continue
                found = table + keys
            matched = _common(found, path)
            if matched == len(found) and (best is None or matched > best[0]):
                best = (matched, number)
        return best[1] if best else None


@dataclass(frozen=True, slots=True)
class Grid:
    """A checked grid file: the inputs, the profiles (references and loaded), seeds and axes;
    `file` names the grid's lines in errors found later (a cell whose pool sizes clash)."""

    file: GridFile
    trace: Path
    trace_format: str | None
    cluster_path: Path
    cluster: Cluster
    round_s: float
    profiles: tuple[str, ...]
    loaded: tuple[Profile, ...]
    seeds: tuple[int, ...]
    axes: tuple[Axis, ...]
    sample: int = 0
    sample_seed: int = 0

    def size(self) -> int:
        """How many points the full grid has (before any sample)."""
        return len(self.profiles) * len(self.seeds) * math.prod(len(axis.values) for axis in self.axes)


def _key_path(text: str) -> tuple[str, ...] | None:
    """The parts of a TOML key (`pool."h100-spot".nodes`), or None when `text` is not one."""
    try:
        data: Any = tomllib.loads(f"{text} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(data, dict) and len(data) == 1:
        key = next(iter(data))
        parts.append(key)
        data = data[key]
    return tuple(parts)


def _common(found: Sequence[str], path: Sequence[str]) -> int:
    count = 0
    for mine, theirs in zip(found, path, strict=False):
        if mine != theirs:
            break
        count += 1
    return count


def load_grid(path: str | Path) -> Grid:
    """Reads and checks a grid file; InputError naming the file, line and key on any mistake."""
    document = TomlDocument.read(path)
    file = GridFile(document)
    data = document.data
    for key in data:
        if key not in _TOP:
            file.fail([key], f"unknown key; a grid has {', '.join(sorted(_TOP))}")
    folder = Path(path).parent
    trace = _input_file(file, folder, "trace")
    cluster_path = _input_file(file, folder, "cluster")
    trace_format = data.get("format")
    if trace_format is not None and trace_format not in FORMATS:
        file.fail(["format"], f"unknown format {trace_format!r}; known: {', '.join(FORMATS)} (or leave it out)")
    cluster = load_cluster(cluster_path)  # a mistake in the cluster file names that file
    round_s = _number(file, ["round_s"], data.get("round_s", 0.0), most=365 * 24 * 3600.0)
    axes_table = data.get("axes")
    if not isinstance(axes_table, dict):
        file.fail(["axes"], "required table: [axes] with profiles = [...] (and seeds, solver, score, pool, ...)")
    for key in axes_table:
        if key not in _AXES:
            file.fail(["axes", key], f"unknown axis; [axes] has {', '.join(sorted(_AXES))}")
    profiles, loaded = _profiles(file, folder, axes_table.get("profiles"))
    seeds = _seeds(file, axes_table.get("seeds", 1))
    axes = [
        *_solver_axes(file, axes_table.get("solver", {}), loaded),
        *_score_axes(file, axes_table.get("score", {}), loaded),
        *_pool_axes(file, axes_table.get("pool", {}), cluster),
        *_cluster_axes(file, axes_table.get("cluster", {}), cluster),
        *_trace_axes(file, axes_table.get("trace", {})),
    ]
    grid = Grid(file, trace, trace_format, cluster_path, cluster, round_s, profiles, loaded, seeds, tuple(axes))
    sample = _whole(file, ["sample"], data.get("sample", 0), least=1) if "sample" in data else 0
    sample_seed = _whole(file, ["sample_seed"], data.get("sample_seed", 0), most=MAX_SEED)
    if "sample_seed" in data and not sample:
        file.fail(["sample_seed"], "seeds a random sample: give sample = N (cells) too")
    if not sample and grid.size() > MAX_CELLS:
        file.fail(["axes"], f"the full grid has {grid.size():,} cells, over {MAX_CELLS:,}; draw some with sample = N")
    return replace(grid, sample=sample, sample_seed=sample_seed)


def _input_file(file: GridFile, folder: Path, key: str) -> Path:
    value = file.document.data.get(key)
    if not isinstance(value, str) or not value.strip():
        file.fail([key], f"required: the {key} file's path, relative to the grid file" if value is None
                  else f"must be a path, got {value!r}")  # fmt: skip
    path = folder / value
    if not path.is_file():
        file.fail([key], f"no such file: {path}")
    return path


def _values(file: GridFile, path: Sequence[str], raw: object) -> list[Any]:
    """An axis' values: a non-empty list without repeats."""
    if not isinstance(raw, list) or not raw:
        file.fail(path, f"must be a non-empty list of values to try, got {raw!r}")
    for index, value in enumerate(raw):
        if value in raw[:index]:
            file.fail(path, f"{value!r} is listed twice")
    return raw


def _number(file: GridFile, path: Sequence[str], value: object, *, most: float = MAX_NUMBER,
            positive: bool = False) -> float:  # fmt: skip
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        file.fail(path, f"must be a number, got {value!r}")
    if value < 0 or (positive and value == 0) or value > most:
        low = "above 0" if positive else "from 0"
        file.fail(path, f"must be a number {low} up to {most:g}, got {value!r}")
    return float(value)


def _whole(file: GridFile, path: Sequence[str], value: object, *, least: int = 0, most: int = MAX_SEED) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        file.fail(path, f"must be a whole number from {least} to {most:,}, got {value!r}")
    return value


def _profiles(file: GridFile, folder: Path, raw: object) -> tuple[tuple[str, ...], tuple[Profile, ...]]:
    """The profiles' references (bundled names, or .toml paths made relative to the grid's folder) and the profiles."""
    path = ["axes", "profiles"]
    if raw is None:
        file.fail(path, 'required: the profiles to sweep, e.g. profiles = ["default", "cost-greedy"]')
    references: list[str] = []
    for value in _values(file, path, raw):
        if not isinstance(value, str) or not value.strip():
            file.fail(path, f"must name bundled profiles or .toml files, got {value!r}")
        if Path(value).suffix == ".toml":
            reference = folder / value
            if not reference.is_file():
                file.fail(path, f"no such profile file: {reference}")
            references.append(str(reference))
        elif value not in policies.bundled_profiles():
            file.fail(path, f"no bundled profile {value!r}; bundled: {', '.join(policies.bundled_profiles())}")
        else:
            references.append(value)
    loaded = tuple(policies.profile(reference) for reference in references)  # a profile file's mistake names it
    return tuple(references), loaded


def _seeds(file: GridFile, raw: object) -> tuple[int, ...]:
    path = ["axes", "seeds"]
    if isinstance(raw, int) and not isinstance(raw, bool):
        return tuple(range(_whole(file, path, raw, least=1, most=MAX_SEEDS)))
    return tuple(_whole(file, path, value) for value in _values(file, path, raw))


def _table(file: GridFile, path: Sequence[str], raw: object) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        file.fail(path, f"must be a table of axes, e.g. [{'.'.join(path)}]")
    return raw


def _solver_axes(file: GridFile, raw: object, loaded: Sequence[Profile]) -> list[Axis]:
    """`[axes.solver]`: CP-SAT options (`scheduler.profile.SolverOptions`), for profiles with placer = "cpsat"."""
    hints = typing.get_type_hints(SolverOptions)
    axes = []
    for key, values in _table(file, ["axes", "solver"], raw).items():
        path = ["axes", "solver", key]
        if key not in hints:
            file.fail(path, f"unknown solver option; known: {', '.join(sorted(hints))}")
        if not any(profile.placer == "cpsat" for profile in loaded):
            file.fail(path, 'no profile of the grid has placer = "cpsat"; solver options change nothing')
        positive = key in ("workers", "time_limit_s")
        checked: list[Value] = []
        for value in _values(file, path, values):
            if hints[key] is int:
                checked.append(_whole(file, path, value, least=1 if positive else 0))
            else:
                checked.append(_number(file, path, value, positive=positive))
        axes.append(Axis(f"solver.{key}", tuple(checked)))
    return axes


def _score_axes(file: GridFile, raw: object, loaded: Sequence[Profile]) -> list[Axis]:
    """`[axes.score]`: the weight of a score plugin, in the profiles that use it."""
    axes = []
    for name, values in _table(file, ["axes", "score"], raw).items():
        path = ["axes", "score", name]
        if not any(name in score_names(profile) for profile in loaded):
            used = sorted({used for profile in loaded for used in score_names(profile)})
            file.fail(path, f"no profile of the grid scores with {name}; they use {', '.join(used) or 'none'}")
        weights = tuple(_whole(file, path, value, least=1, most=MAX_WEIGHT) for value in _values(file, path, values))
        axes.append(Axis(f"score.{name}", weights))
    return axes


def score_names(profile: Profile) -> set[str]:
    """The names of the score plugins `profile` weighs."""
    return {str(getattr(plugin, "name", "")) for plugin, _ in profile.score}


def _pool_axes(file: GridFile, raw: object, cluster: Cluster) -> list[Axis]:
    """`[axes.pool.<name>]`: node counts, price per node-hour and interruption rate of a pool."""
    axes = []
    for pool_name, table in _table(file, ["axes", "pool"], raw).items():
        if pool_name not in cluster.pools:
            file.fail(["axes", "pool", pool_name], f"no pool {pool_name!r} in {Path(cluster.source).name}; "
                      f"pools: {', '.join(cluster.pools)}")  # fmt: skip
        pool = cluster.pools[pool_name]
        for key, values in _table(file, ["axes", "pool", pool_name], table).items():
            path = ["axes", "pool", pool_name, key]
            if key in POOL_COUNTS:
                checked: tuple[Value, ...] = tuple(_whole(file, path, value, most=MAX_NODES)
                                                   for value in _values(file, path, values))
            elif key in POOL_NUMBERS:
                checked = tuple(_number(file, path, value) for value in _values(file, path, values))
            else:
                file.fail(path, f"unknown pool setting; a pool axis is one of {', '.join(POOL_COUNTS + POOL_NUMBERS)}")
            if key == "interruptions_per_node_hour" and pool.capacity is not Capacity.SPOT:
                file.fail(path, f"only spot pools are interrupted; {pool_name} is {pool.capacity}")
            axes.append(Axis(f"pool.{pool_name}.{key}", checked))
    return axes


def spot_pairs(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """Per GPU model with exactly one spot pool and one on-demand pool: their names (reserved
    pools, bought ahead, are not part of the share)."""
    pairs: dict[str, tuple[str, str]] = {}
    for model in dict.fromkeys(pool.gpu.name for pool in cluster.pools.values()):
        mine = [pool for pool in cluster.pools.values() if pool.gpu.name == model]
        spot = [pool.name for pool in mine if pool.capacity is Capacity.SPOT]
        on_demand = [pool.name for pool in mine if pool.capacity is Capacity.ON_DEMAND]
        if len(spot) == 1 and len(on_demand) == 1:
            pairs[model] = (spot[0], on_demand[0])
    return pairs


def _cluster_axes(file: GridFile, raw: object, cluster: Cluster) -> list[Axis]:
    """`[axes.cluster]`: `spot_share`, the share of each GPU model's node limit that is spot."""
    axes = []
    for key, values in _table(file, ["axes", "cluster"], raw).items():
        path = ["axes", "cluster", key]
        if key != "spot_share":
            file.fail(path, "unknown cluster setting; [axes.cluster] has spot_share")
        if not spot_pairs(cluster):
            file.fail(path, f"no GPU model of {Path(cluster.source).name} has one spot pool and one on-demand pool")
        axes.append(Axis("cluster.spot_share", tuple(_number(file, path, value, most=1.0)
                                                     for value in _values(file, path, values))))  # fmt: skip
    return axes


def _trace_axes(file: GridFile, raw: object) -> list[Axis]:
    """`[axes.trace]`: `arrival_rate` (how many times faster jobs arrive) and `jobs` (the first N)."""
    axes = []
    for key, values in _table(file, ["axes", "trace"], raw).items():
        path = ["axes", "trace", key]
        if key == "arrival_rate":
            rates = tuple(_number(file, path, value, most=MAX_ARRIVAL_RATE, positive=True)
                          for value in _values(file, path, values))
            axes.append(Axis("trace.arrival_rate", rates))
        elif key == "jobs":
            counts = tuple(_whole(file, path, value, least=1) for value in _values(file, path, values))
            axes.append(Axis("trace.jobs", counts))
        else:
            file.fail(path, "unknown trace setting; [axes.trace] has arrival_rate, jobs")
    return axes
