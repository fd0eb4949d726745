"""Profiles: which plugins run at which hook, with which weights and arguments, and the placer.

A profile is a TOML file, validated when it is loaded so that a mistake stops before the first
cycle: unknown plugin names, a plugin at a hook it does not implement, a weight that is not a
positive integer, arguments a plugin does not take.

```toml
placer = "greedy"
sort = "PriorityThenAge"
filter = ["GpuModelFit", "WholeGpuFit", "GpuShareFit", "MigFit", "SpotTolerance"]
score = [{ name = "CheapestPool", weight = 3 }, { name = "MostAllocated", weight = 1 }]
```

A plugin that takes arguments declares them as an `Args` dataclass on its class, and a profile
gives them in an `[args.PluginName]` table (no bundled plugin takes any).

A batch placer (`placer = "cpsat"`) takes its limits and objective weights from a `[solver]`
table; see `SolverOptions`.

`reserve = "EasyBackfill"` names the plugin whose run-time estimates turn on reservations for
blocked jobs (EASY backfilling, `scheduler.backfill`); only the greedy placer honours them, so
a profile naming both a reserve plugin and `placer = "cpsat"` is refused.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from scheduler.errors import InputError
from scheduler.plugin import (
    HOOKS,
    AdmitPlugin,
    FilterPlugin,
    Plugin,
    PostFilterPlugin,
    PreFilterPlugin,
    ProvisionPlugin,
    QueueSortPlugin,
    ReservePlugin,
    ScorePlugin,
)
from scheduler.tomlfile import TomlDocument

PLACERS = ("greedy", "cpsat")
_LIST_HOOKS = ("admit", "prefilter", "filter", "postfilter", "provision")
_KEYS = {"description", "placer", "sort", "score", "reserve", "args", "solver", *_LIST_HOOKS}


@dataclass(frozen=True, slots=True, kw_only=True)
class SolverOptions:
    """Limits and objective weights of the batch (CP-SAT) placer, from a profile's `[solver]`.

    `deterministic_time` > 0 stops the search after that much deterministic work (CP-SAT's
    own unit, about a second of one core) instead of wall time, and makes parallel workers
    interleave, so the same input gives the same decision on any machine: simulations use it.
    With 0, `time_limit_s` of wall time bounds the whole placement, the greedy answer it starts
    from included (the extender, the benchmarks).
    The weights scale the objective's terms next to the dollars per hour a placement commits:
    `fragmentation_weight` is charged per node or GPU left partly used, as a fraction of its
    price per hour; `spot_risk_weight` scales the expected cost of work lost to spot take-backs;
    `idle_weight` is the share of an opened node's idle GPUs charged to the placement that opens
    it (1: the whole node is committed at once; less: later jobs are expected to fill it).
    The cost phase stops once its answer is within `gap_limit` of the proven bound.
    """

    time_limit_s: float = 1.0
    deterministic_time: float = 0.0
    workers: int = 2
    seed: int = 0
    fragmentation_weight: float = 0.1
    spot_risk_weight: float = 1.0
    idle_weight: float = 1.0
    gap_limit: float = 0.005


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A validated profile: plugin instances per hook, score weights and the placer."""

    name: str
    sort: QueueSortPlugin
    placer: str = "greedy"
    description: str = ""
    admit: tuple[AdmitPlugin, ...] = ()
    prefilter: tuple[PreFilterPlugin, ...] = ()
    filter: tuple[FilterPlugin, ...] = ()
    postfilter: tuple[PostFilterPlugin, ...] = ()
    score: tuple[tuple[ScorePlugin, int], ...] = ()
    provision: tuple[ProvisionPlugin, ...] = ()
    reserve: ReservePlugin | None = None
    solver: SolverOptions = SolverOptions()


def load_profile(path: str | Path, registry: Mapping[str, type[Plugin]]) -> Profile:
    """Reads and validates a profile file against `registry` (name -> plugin class)."""
    return parse_profile(TomlDocument.read(path), registry)


def parse_profile(document: TomlDocument, registry: Mapping[str, type[Plugin]]) -> Profile:
    """Validates a parsed profile document; InputError naming the key when it is wrong."""
    data = document.data
    for key in data:
        if key not in _KEYS:
            document.fail(key, f"unknown key; a profile has {', '.join(sorted(_KEYS))}")
    placer = data.get("placer", "greedy")
    if placer not in PLACERS:
        document.fail("placer", f"unknown placer {placer!r}; known: {', '.join(PLACERS)}")
    raw_args = data.get("args", {})
    if not isinstance(raw_args, dict):
        document.fail("args", "must be a table of plugin arguments, e.g. [args.CheapestPool]")
    plugins = _Plugins(document, registry, raw_args)
    if "sort" not in data:
        document.fail("sort", "a profile names exactly one sort plugin, e.g. sort = \"PriorityThenAge\"")
    sort = cast(QueueSortPlugin, plugins.at("sort", data["sort"], "sort"))  # before [args] is checked: it may take some
    lists = _hook_lists(document, plugins)
    scores = _scores(document, plugins)
    reserve = _reserve(document, plugins, placer)
    for name in raw_args:
        if name not in plugins.instances:
            document.fail(f"args.{name}", "arguments for a plugin the profile does not use", key=f"[args.{name}]")
    solver = _solver_options(document, data.get("solver", {}))
    if "solver" in data and placer != "cpsat":  # read by nothing: the greedy placer has no limits or weights
        document.fail("solver", f"the {placer} placer reads no [solver] table; it is for placer = \"cpsat\"")
    # _Plugins.at checked each instance against its hook's protocol, so the casts hold.
    return Profile(
        name=Path(document.source).stem,
        description=str(data.get("description", "")),
        placer=placer,
        sort=sort,
        admit=cast(tuple[AdmitPlugin, ...], lists["admit"]),
        prefilter=cast(tuple[PreFilterPlugin, ...], lists["prefilter"]),
        filter=cast(tuple[FilterPlugin, ...], lists["filter"]),
        postfilter=cast(tuple[PostFilterPlugin, ...], lists["postfilter"]),
        score=cast(tuple[tuple[ScorePlugin, int], ...], tuple(scores)),
        provision=cast(tuple[ProvisionPlugin, ...], lists["provision"]),
        reserve=reserve,
        solver=solver,
    )


@dataclass(frozen=True, slots=True)
class _Plugins:
    """A profile's plugin instances, one per name, made when a hook first names it."""

    document: TomlDocument
    registry: Mapping[str, type[Plugin]]
    raw_args: Mapping[str, object]
    instances: dict[str, Plugin] = field(default_factory=dict)

    def at(self, hook: str, name: object, where: str) -> Plugin:
        """The plugin `name` for `hook`; InputError at `where` when it is unknown or lacks the hook."""
        document, registry, instances = self.document, self.registry, self.instances
        if not isinstance(name, str) or name not in registry:
            document.fail(where, f"unknown plugin {name!r}; known: {', '.join(sorted(registry))}", key=hook)
        if name not in instances:
            instances[name] = _instantiate(document, registry[name], self.raw_args.get(name))
        if not isinstance(instances[name], HOOKS[hook]):
            document.fail(where, f"plugin {name} does not implement the {hook} hook", key=hook)
        return instances[name]


def _hook_lists(document: TomlDocument, plugins: _Plugins) -> dict[str, tuple[Plugin, ...]]:
    """The plugins of each list hook (admit, prefilter, filter, postfilter, provision), in profile order."""
    lists: dict[str, tuple[Plugin, ...]] = {}
    for hook in _LIST_HOOKS:
        names = document.data.get(hook, [])
        if not isinstance(names, list):
            document.fail(hook, "must be a list of plugin names")
        for n, name in enumerate(names):
            if name in names[:n]:  # run twice, a filter asks the same question twice; a score counts double
                document.fail(f"{hook}[{n}]", f"names {name} a second time (first as {hook}[{names.index(name)}])",
                              key=hook)  # fmt: skip
        lists[hook] = tuple(plugins.at(hook, name, f"{hook}[{n}]") for n, name in enumerate(names))
    return lists


def _scores(document: TomlDocument, plugins: _Plugins) -> list[tuple[Plugin, int]]:
    """The score plugins with their weights (a bare name weighs 1)."""
    scores: list[tuple[Plugin, int]] = []
    for n, raw in enumerate(document.data.get("score", [])):
        where = f"score[{n}]"
        entry = raw if isinstance(raw, dict) else {"name": raw}
        weight = entry.get("weight", 1)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 1:
            document.fail(where, f"weight must be a positive integer, got {weight!r}", key="score")
        plugin = plugins.at("score", entry.get("name"), where)
        if any(plugin is earlier for earlier, _ in scores):
            document.fail(where, f"names {entry.get('name')} a second time; give it one weight", key="score")
        scores.append((plugin, weight))
    return scores


def _reserve(document: TomlDocument, plugins: _Plugins, placer: str) -> ReservePlugin | None:
    """The reserve plugin, when the profile names one (one name, not a list)."""
    name = document.data.get("reserve")
    if name is None:
        return None
    if placer != "greedy":
        document.fail("reserve", f"the {placer} placer does not honour reservations; use placer = \"greedy\"")
    return cast(ReservePlugin, plugins.at("reserve", name, "reserve"))


def _solver_options(document: TomlDocument, raw: object) -> SolverOptions:
    """The `[solver]` table checked key by key: known names, numbers, sensible ranges."""
    if not isinstance(raw, dict):
        document.fail("solver", "must be a table, e.g. [solver] with time_limit_s = 1.0")
    hints = typing.get_type_hints(SolverOptions)
    values: dict[str, float | int] = {}
    for key, value in raw.items():
        where = f"solver.{key}"
        if key not in hints:
            known = ", ".join(sorted(hints))
            document.fail(where, f"unknown solver option; known: {known}", key=key)
        if not _fits(value, hints[key]):
            document.fail(where, f"must be {hints[key].__name__}, got {value!r}", key=key)
        positive = key in ("workers", "time_limit_s")
        if value < 0 or (positive and value <= 0):
            document.fail(where, f"must be {'positive' if positive else 'zero or more'}, got {value!r}", key=key)
        values[key] = value
    return SolverOptions(**values)  # type: ignore[arg-type]


def _instantiate(document: TomlDocument, cls: type[Plugin], raw: object) -> Plugin:
    """The plugin built with its Args parsed from the profile's `[args.Name]` table."""
    where = f"args.{cls.name}"
    if cls.Args is None:
        if raw is not None:
            document.fail(where, f"plugin {cls.name} takes no arguments", key=f"[args.{cls.name}]")
        return cls()
    values = raw if isinstance(raw, dict) else {}
    hints = typing.get_type_hints(cls.Args)
    known = {f.name for f in dataclasses.fields(cls.Args)}
    for key, value in values.items():
        if key not in known:
            document.fail(f"{where}.{key}", f"unknown argument; {cls.name} takes {', '.join(sorted(known))}", key=key)
        expected = hints[key]
        origin = typing.get_origin(expected) or expected
        if isinstance(origin, type) and not _fits(value, origin):
            document.fail(f"{where}.{key}", f"must be {origin.__name__}, got {value!r}", key=key)
    try:
        return cls(cls.Args(**values))
    except (InputError, ValueError) as error:  # a value its Args refuse: name the profile's line
        named = error.field if isinstance(error, InputError) and error.field else where
        problem = error.problem if isinstance(error, InputError) else str(error)
        key = named.rsplit(".", 1)[-1] if named != where else f"[args.{cls.name}]"
        document.fail(named, problem, key=key)


def _fits(value: object, expected: type) -> bool:
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if issubclass(expected, Mapping):
        return isinstance(value, dict)
    return isinstance(value, expected)
