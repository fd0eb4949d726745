"""The CP-SAT model of a batch problem: data, variables, constraints, objective terms.

Stated over the classes of `scheduler.batch.problem` (counts, not job-by-node booleans), in the
OR-Tools samples' order; each section opens with its maths. `scheduler.batch.solve` sets the
objectives phase by phase and solves.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from scheduler.batch import objective
from scheduler.batch.expansion import Solution
from scheduler.batch.problem import MigGpuClass, Problem, ShareShape, share_shape
from scheduler.catalog import MigGeometry
from scheduler.model import MigMode, RequestKind
from scheduler.profile import SolverOptions

_units = objective.units


@dataclass(slots=True)
class Model:
    """The CP-SAT model of one Problem, with its variables kept by meaning."""

    problem: Problem
    options: SolverOptions
    model: cp_model.CpModel = field(default_factory=cp_model.CpModel)
    placed: dict[int, cp_model.IntVar] = field(default_factory=dict)
    all_placed: cp_model.IntVar = field(init=False)  # true: every group's jobs all run
    node_replicas: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    pool_replicas: dict[tuple[int, str], cp_model.IntVar] = field(default_factory=dict)
    configs: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    share_configs: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    mig_starts: dict[tuple[int, int, str, int], cp_model.IntVar] = field(default_factory=dict)
    splits: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    cost: list[tuple[cp_model.IntVar, int]] = field(default_factory=list)
    rewards: dict[int, int] = field(default_factory=dict)
    blocks: list[list[int]] = field(default_factory=list)


def build_model(problem: Problem, options: SolverOptions) -> Model:
    """The model for `problem`: variables and constraints; the objectives are set by `solve`."""
    m = Model(problem, options)
    model = m.model
    groups = problem.groups
    # Variables. placed[g] in 0..|jobs of g|: how many of group g's jobs run (its oldest).
    # node_replicas[g, c]: replicas of g on whole-GPU class c; pool_replicas[g, p]: share and MIG
    # replicas of g in pool p. configs[c, k]: nodes of c loaded with config k.
    for group in groups:
        most = len(group.jobs) * group.job.replicas
        m.placed[group.index] = model.new_int_var(0, len(group.jobs), f"placed_{group.index}")
        for c in group.whole_classes:
            m.node_replicas[group.index, c] = model.new_int_var(0, most, f"x_{group.index}_{c}")
        for pool in group.pools:
            m.pool_replicas[group.index, pool] = model.new_int_var(0, most, f"y_{group.index}_{pool}")
        # Gangs are all or nothing: sum_c x[g,c] + sum_p y[g,p] = replicas(g) * placed[g].
        model.add(
            sum(m.node_replicas[group.index, c] for c in group.whole_classes)
            + sum(m.pool_replicas[group.index, p] for p in group.pools)
            == group.job.replicas * m.placed[group.index]
        )
    # all_placed => placed[g] = |jobs of g| for every g: the phases fix it or leave it free.
    m.all_placed = model.new_bool_var("all_placed")
    for group in groups:
        model.add(m.placed[group.index] == len(group.jobs)).only_enforce_if(m.all_placed)
    _whole_classes(m)
    _shares(m)
    _mig(m)
    m.rewards, m.blocks = objective.tier_weights(problem.groups)
    return m


def _whole_classes(m: Model) -> None:
    """Whole GPUs, exactly per node: for every whole-GPU class c and replica size s,
    sum_g x[g,c] (size s) = sum_k count_s(k) * configs[c,k] and sum_k configs[c,k] <= |c|."""
    problem, model = m.problem, m.model
    for whole_class in problem.whole_classes:
        c = whole_class.index
        for number in range(len(whole_class.configs)):
            m.configs[c, number] = model.new_int_var(0, len(whole_class.nodes), f"z_{c}_{number}")
        model.add(sum(m.configs[c, k] for k in range(len(whole_class.configs))) <= len(whole_class.nodes))
        sizes = {size for config in whole_class.configs for size in config.whole}
        for group in problem.groups:
            if c in group.whole_classes:
                sizes.add(group.job.request.gpus)
        for size in sorted(sizes):
            model.add(
                sum(m.node_replicas[g.index, c] for g in problem.groups
                    if c in g.whole_classes and g.job.request.gpus == size)
                == sum(config.whole.count(size) * m.configs[c, k] for k, config in enumerate(whole_class.configs))
            )
        for k, config in enumerate(whole_class.configs):
            m.cost.append((m.configs[c, k], _units(objective.config_usd(whole_class, config, m.options))))
        for group in problem.groups:
            if c in group.whole_classes:
                usd = objective.node_replica_usd(whole_class, group.job, m.options)
                m.cost.append((m.node_replicas[group.index, c], _units(usd)))


def _pool_costs(m: Model) -> None:
    for (g, pool_name), variable in m.pool_replicas.items():
        usd = objective.pool_replica_usd(m.problem.pools[pool_name], m.problem.groups[g].job, m.options)
        m.cost.append((variable, _units(usd)))


def _shares(m: Model) -> None:
    """GPU shares, exactly per GPU: share GPU class k with configs q,
    sum_q share_configs[k,q] <= GPUs of k when they are partly shared GPUs, and for the free
    GPUs of whole-GPU class c, = sum_k share_gpus(k) * configs[c,k], what its node configs give,
    and per pool and share shape, sum_g y[g,p] = sum_{k,q} count(q) * share_configs[k,q]."""
    problem, model = m.problem, m.model
    _pool_costs(m)
    supply: dict[tuple[str, ShareShape], list[tuple[cp_model.IntVar, int]]] = {}
    for share_class in problem.share_classes:
        k = share_class.index
        pool = share_class.pool
        room = len(share_class.gpus)
        given_by_nodes: cp_model.LinearExprT = 0
        if share_class.whole_class is not None:
            whole_class = problem.whole_classes[share_class.whole_class]
            room = len(whole_class.nodes) * whole_class.free
            given_by_nodes = sum(
                config.share_gpus * m.configs[whole_class.index, n] for n, config in enumerate(whole_class.configs)
            )
        for number, config in enumerate(share_class.configs):
            variable = m.share_configs[k, number] = model.new_int_var(0, room, f"w_{k}_{number}")
            for shape in sorted(set(config)):
                supply.setdefault((pool.name, shape), []).append((variable, config.count(shape)))
            m.cost.append((variable, _units(objective.share_config_usd(share_class, config, m.options))))
        given = sum(m.share_configs[k, n] for n in range(len(share_class.configs)))
        if share_class.whole_class is None:
            model.add(given <= len(share_class.gpus))
        else:  # every GPU a node config gives to shares takes some: the node's free count stays exact
            model.add(given == given_by_nodes)
    for group in problem.groups:
        if group.job.request.kind is RequestKind.SHARE:
            for pool_name in group.pools:
                supply.setdefault((pool_name, share_shape(group.job)), [])
    for (pool_name, shape), terms in sorted(supply.items()):
        wanted = [
            m.pool_replicas[g.index, pool_name]
            for g in problem.groups
            if g.job.request.kind is RequestKind.SHARE and pool_name in g.pools and share_shape(g.job) == shape
        ]
        model.add(sum(wanted) == sum(count * variable for variable, count in terms))


def _mig(m: Model) -> None:
    """MIG. Dynamic pools: bin b of GPU class k has an optional interval of length
    memory_slices(p) at each legal free start t of each profile p asked for; the intervals of a
    bin never overlap (NoOverlap on the memory-slice axis), their compute slices fit what the
    layout leaves, and profile limits hold. Per pool and profile, sum_g y[g,p] = instances made.
    Fixed layouts: per pool and profile, sum_g y[g,p] <= free instances of p."""
    problem, model = m.problem, m.model
    made: dict[tuple[str, str], list[cp_model.IntVar]] = {}
    for mig_class in problem.mig_classes:
        geometry = mig_class.pool.gpu.mig
        assert geometry is not None  # MigGpuClass are only read off MIG pools
        held = [geometry.profiles[i.profile] for i in mig_class.layout]
        compute_left = geometry.compute_slices - sum(spec.compute_slices for spec in held)
        media_left = 0 if any(spec.media_extensions for spec in held) else 1
        loads: list[object] = []
        for b in range(mig_class.bins):
            intervals, compute, media = _mig_instances(m, mig_class, geometry, b, made)
            model.add_no_overlap(intervals)
            if media:
                model.add(sum(media) <= media_left)
            loads.append(sum(compute))
            if mig_class.layout:
                model.add(sum(compute) <= compute_left)
            else:  # splitting a whole GPU leaves it partly used; the capacity form keeps the LP tight
                opened = m.splits[mig_class.index, b] = model.new_bool_var(f"split_{mig_class.index}_{b}")
                model.add(sum(compute) <= compute_left * opened)
                m.cost.append((opened, _units(objective.split_usd(mig_class.pool, m.options))))
        # Bins of a class are interchangeable: order them by load to cut symmetric search.
        for first, second in itertools.pairwise(loads):
            model.add(first >= second)  # type: ignore[operator]
    _mig_supply(m, made)


def _mig_instances(
    m: Model, mig_class: MigGpuClass, geometry: MigGeometry, b: int, made: dict[tuple[str, str], list[cp_model.IntVar]]
) -> tuple[list[cp_model.IntervalVar], list[cp_model.LinearExpr], list[cp_model.IntVar]]:
    """Bin b's instances (also kept in `made`) within their profile limits: intervals, compute terms, media users."""
    model = m.model
    intervals = []
    compute = []
    media = []
    for profile, starts in mig_class.starts.items():
        spec = geometry.profiles[profile]
        per_profile = []
        for start in starts:
            present = model.new_bool_var(f"a_{mig_class.index}_{b}_{profile}_{start}")
            m.mig_starts[mig_class.index, b, profile, start] = present
            size = spec.memory_slices
            interval = model.new_optional_fixed_size_interval_var(start, size, present, f"i_{present.name}")
            intervals.append(interval)
            compute.append(spec.compute_slices * present)
            per_profile.append(present)
            if spec.media_extensions:
                media.append(present)
            made.setdefault((mig_class.pool.name, profile), []).append(present)
        limit = spec.max_count - sum(1 for i in mig_class.layout if i.profile == profile)
        model.add(sum(per_profile) <= limit)
    return intervals, compute, media


def _mig_supply(m: Model, made: dict[tuple[str, str], list[cp_model.IntVar]]) -> None:
    """Per pool and profile, the MIG replicas asked for equal the instances made (fixed layouts: fit the free)."""
    problem, model = m.problem, m.model
    fixed = {(f.pool.name, profile): len(slots) for f in problem.fixed_mig for profile, slots in f.free.items()}
    for group in problem.groups:
        if group.job.request.kind is RequestKind.MIG:
            for pool_name in group.pools:
                made.setdefault((pool_name, group.job.request.mig_profile), [])
    for (pool_name, profile), instances in sorted(made.items()):
        wanted = sum(
            m.pool_replicas[g.index, pool_name]
            for g in problem.groups
            if g.job.request.kind is RequestKind.MIG and pool_name in g.pools and g.job.request.mig_profile == profile
        )
        if problem.pools[pool_name].mig_mode is MigMode.FIXED:
            model.add(wanted <= fixed.get((pool_name, profile), 0))
        else:
            model.add(wanted == sum(instances))


def hint_values(m: Model, solution: Solution | None) -> dict[cp_model.IntVar, int] | None:
    """A value for every variable from `solution`, or None when the model cannot express it."""
    if solution is None:
        return None
    values: dict[cp_model.IntVar, int] = {}
    for group, variable in m.placed.items():
        values[variable] = solution.jobs_placed.get(group, 0)
    values[m.all_placed] = int(all(values[m.placed[g.index]] == len(g.jobs) for g in m.problem.groups))
    counted: list[tuple[Mapping[Any, cp_model.IntVar], Mapping[Any, int]]] = [
        (m.node_replicas, solution.node_replicas),
        (m.pool_replicas, solution.pool_replicas),
        (m.configs, solution.configs),
        (m.share_configs, solution.share_configs),
    ]
    for keyed, given in counted:
        if not set(given) <= set(keyed):
            return None
        for key, variable in keyed.items():
            values[variable] = given.get(key, 0)
    values.update(dict.fromkeys([*m.mig_starts.values(), *m.splits.values()], 0))
    for (k, b), instances in solution.mig_instances.items():
        for instance in instances:
            start = m.mig_starts.get((k, b, instance.profile, instance.start))
            if start is None:
                return None
            values[start] = 1
        if (k, b) in m.splits:
            values[m.splits[k, b]] = 1
    return values
