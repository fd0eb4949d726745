"""CpSatPlacer: one OR-Tools CP-SAT model per cycle places every waiting job at once.

The only module that imports ortools. The model is stated over the classes of
`scheduler.batch` (counts, not job-by-node booleans) in the OR-Tools samples' order: data,
variables, constraints, objective; `scheduler.expansion` turns the answer into placements.

The placer first runs the greedy placer (without preemption) on the cycle. That answer is
the solver's hint (warm start) and its fallback: when the solver finds nothing at least as
good within its limit, the decision carries the greedy answer. Afterwards a greedy pass
offers what is still waiting (jobs the model leaves out, jobs a filter turned down on
expansion) the remaining capacity, with the profile's preemption, and explains every job
left pending. Every decision carries a `SolverReport`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ortools.sat.python import cp_model

from scheduler import batch, expansion, objective
from scheduler.batch import Hint, Problem
from scheduler.decision import SolverReport
from scheduler.expansion import Solution
from scheduler.mig import MigInstance
from scheduler.model import MigMode, RequestKind
from scheduler.placers import BatchPlacer
from scheduler.profile import SolverOptions

log = logging.getLogger(__name__)

#: Model units per dollar per hour: costs are integers in tenths of a cent per hour.
UNITS_PER_USD_HOUR = 1000
#: Share of the budget for the first probe: can every waiting job run at once?
OPTIMISTIC_SHARE = 0.3


@dataclass(slots=True)
class Model:
    """The CP-SAT model of one Problem, with its variables kept by meaning."""

    problem: Problem
    options: SolverOptions
    model: cp_model.CpModel = field(default_factory=cp_model.CpModel)
    placed: dict[int, cp_model.IntVar] = field(default_factory=dict)
    node_replicas: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    pool_replicas: dict[tuple[int, str], cp_model.IntVar] = field(default_factory=dict)
    configs: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    share_configs: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    mig_starts: dict[tuple[int, int, str, int], cp_model.IntVar] = field(default_factory=dict)
    splits: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)
    cost: list[tuple[cp_model.IntVar, int]] = field(default_factory=list)
    rewards: dict[int, int] = field(default_factory=dict)
    blocks: list[list[int]] = field(default_factory=list)


def _units(usd_per_hour: float) -> int:
    return round(usd_per_hour * UNITS_PER_USD_HOUR)


def build_model(problem: Problem, options: SolverOptions) -> Model:
    """The model for `problem`: variables and constraints; the objectives are set by `solve`."""
    m = Model(problem, options)
    model = m.model
    groups = problem.groups
    # Variables. placed[g] in 0..|jobs of g|: how many of group g's jobs run (its oldest).
    # node_replicas[g, c]: replicas of g on node group c; pool_replicas[g, p]: share and MIG
    # replicas of g in pool p. configs[c, k]: nodes of c loaded with config k.
    for group in groups:
        most = len(group.jobs) * group.job.replicas
        m.placed[group.index] = model.new_int_var(0, len(group.jobs), f"placed_{group.index}")
        for c in group.node_groups:
            m.node_replicas[group.index, c] = model.new_int_var(0, most, f"x_{group.index}_{c}")
        for pool in group.pools:
            m.pool_replicas[group.index, pool] = model.new_int_var(0, most, f"y_{group.index}_{pool}")
        # Gangs are all or nothing: sum_c x[g,c] + sum_p y[g,p] = replicas(g) * placed[g].
        model.add(
            sum(m.node_replicas[group.index, c] for c in group.node_groups)
            + sum(m.pool_replicas[group.index, p] for p in group.pools)
            == group.job.replicas * m.placed[group.index]
        )
    _node_groups(m)
    _shares(m)
    _mig(m)
    m.rewards, m.blocks = objective.tier_weights(problem.groups)
    return m


def _node_groups(m: Model) -> None:
    """Whole GPUs, exactly per node: for every node group c and replica size s,
    sum_g x[g,c] (size s) = sum_k count_s(k) * configs[c,k] and sum_k configs[c,k] <= |c|."""
    problem, model = m.problem, m.model
    for node_group in problem.node_groups:
        c = node_group.index
        for number in range(len(node_group.configs)):
            m.configs[c, number] = model.new_int_var(0, len(node_group.nodes), f"z_{c}_{number}")
        model.add(sum(m.configs[c, k] for k in range(len(node_group.configs))) <= len(node_group.nodes))
        sizes = {size for config in node_group.configs for size in config.whole}
        for group in problem.groups:
            if c in group.node_groups:
                sizes.add(group.job.request.gpus)
        for size in sorted(sizes):
            model.add(
                sum(m.node_replicas[g.index, c] for g in problem.groups
                    if c in g.node_groups and g.job.request.gpus == size)
                == sum(config.whole.count(size) * m.configs[c, k] for k, config in enumerate(node_group.configs))
            )
        for k, config in enumerate(node_group.configs):
            m.cost.append((m.configs[c, k], _units(objective.config_usd(node_group, config, m.options))))
        for group in problem.groups:
            if c in group.node_groups:
                usd = objective.node_replica_usd(node_group, group.job, m.options)
                m.cost.append((m.node_replicas[group.index, c], _units(usd)))


def _pool_costs(m: Model) -> None:
    for (g, pool_name), variable in m.pool_replicas.items():
        usd = objective.pool_replica_usd(m.problem.pools[pool_name], m.problem.groups[g].job, m.options)
        m.cost.append((variable, _units(usd)))


def _shares(m: Model) -> None:
    """GPU shares, exactly per GPU: share GPU class k with configs q,
    sum_q share_configs[k,q] <= GPUs of k when they are partly shared GPUs, and for the free
    GPUs of node group c, = sum_k share_gpus(k) * configs[c,k], what its node configs give,
    and per pool and share shape, sum_g y[g,p] = sum_{k,q} count(q) * share_configs[k,q]."""
    problem, model = m.problem, m.model
    _pool_costs(m)
    supply: dict[tuple[str, batch.ShareShape], list[tuple[cp_model.IntVar, int]]] = {}
    for share_class in problem.share_gpus:
        k = share_class.index
        pool = share_class.pool
        room = len(share_class.gpus)
        given_by_nodes: cp_model.LinearExprT = 0
        if share_class.node_group is not None:
            node_group = problem.node_groups[share_class.node_group]
            room = len(node_group.nodes) * node_group.free
            given_by_nodes = sum(
                config.share_gpus * m.configs[node_group.index, n] for n, config in enumerate(node_group.configs)
            )
        for number, config in enumerate(share_class.configs):
            variable = m.share_configs[k, number] = model.new_int_var(0, room, f"w_{k}_{number}")
            for shape in set(config):
                supply.setdefault((pool.name, shape), []).append((variable, config.count(shape)))
            m.cost.append((variable, _units(objective.share_config_usd(share_class, config, m.options))))
        given = sum(m.share_configs[k, n] for n in range(len(share_class.configs)))
        if share_class.node_group is None:
            model.add(given <= len(share_class.gpus))
        else:  # every GPU a node config gives to shares takes some: the node's free count stays exact
            model.add(given == given_by_nodes)
    for group in problem.groups:
        if group.job.request.kind is RequestKind.SHARE:
            for pool_name in group.pools:
                supply.setdefault((pool_name, batch.share_shape(group.job)), [])
    for (pool_name, shape), terms in sorted(supply.items()):
        wanted = [
            m.pool_replicas[g.index, pool_name]
            for g in problem.groups
            if g.job.request.kind is RequestKind.SHARE and pool_name in g.pools and batch.share_shape(g.job) == shape
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
    for mig_class in problem.mig_gpus:
        geometry = mig_class.pool.gpu.mig
        assert geometry is not None  # MigGpus are only read off MIG pools
        held = [geometry.profiles[i.profile] for i in mig_class.layout]
        compute_left = geometry.compute_slices - sum(spec.compute_slices for spec in held)
        media_left = 0 if any(spec.media_extensions for spec in held) else 1
        loads: list[object] = []
        for b in range(mig_class.bins):
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


def _values(m: Model, solution: Solution | None) -> dict[cp_model.IntVar, int] | None:
    """A value for every variable from `solution`, or None when the model cannot express it."""
    if solution is None:
        return None
    values: dict[cp_model.IntVar, int] = {}
    for group, variable in m.placed.items():
        values[variable] = solution.jobs_placed.get(group, 0)
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


def _cost(m: Model) -> cp_model.LinearExprT:
    return sum(coefficient * variable for variable, coefficient in m.cost)


def _placements(m: Model, tiers: Sequence[int]) -> cp_model.LinearExprT:
    return sum(m.rewards[g.tier] * m.placed[g.index] for g in m.problem.groups if g.tier in tiers)


def _evaluate(m: Model, values: Mapping[cp_model.IntVar, int]) -> tuple[tuple[int, ...], int]:
    """(jobs placed per tier, highest first; cost) of a full assignment, compared lexicographically."""
    tiers = sorted({g.tier for g in m.problem.groups})
    scores = tuple(sum(values[m.placed[g.index]] for g in m.problem.groups if g.tier == tier) for tier in tiers)
    return scores, sum(coefficient * values[variable] for variable, coefficient in m.cost)


class _Search:
    """Runs the phases of one solve under one budget of time or deterministic work."""

    def __init__(self, m: Model, options: SolverOptions) -> None:
        self.m = m
        self.options = options
        self.spent = 0.0
        self.statuses: list[str] = []

    def run(
        self,
        share: float,
        hint: Mapping[cp_model.IntVar, int] | None,
        *,
        probe: cp_model.CpModel | None = None,
        workers: int | None = None,
    ) -> cp_model.CpSolver | None:
        """One phase with `share` of what is left of the budget; None when it found nothing.

        A `probe` (a copy of the model asking a yes-or-no question) does not count towards the
        search's status: an answer is the optimum of its phase, no answer is no verdict.
        """
        model = self.m.model if probe is None else probe
        model.clear_hints()  # type: ignore[no-untyped-call]
        for variable, value in (hint or {}).items():
            model.add_hint(variable, value)
        solver = cp_model.CpSolver()
        parameters = solver.parameters
        parameters.num_workers = self.options.workers if workers is None else workers
        parameters.random_seed = self.options.seed
        # Presolve costs more than it saves here: the model is already small, and its
        # rewriting hides the configuration structure the LP bound relies on. Interleaved
        # search (CP-SAT's reproducible parallel mode) keeps it: OR-Tools 9.15 aborts the
        # process ("heuristics.fixed_search != nullptr") on interleaved search without presolve.
        parameters.cp_model_presolve = False
        if self.options.deterministic_time > 0:
            parameters.max_deterministic_time = max(1e-3, (self.options.deterministic_time - self.spent) * share)
            parameters.interleave_search = parameters.num_workers > 1
            parameters.cp_model_presolve = parameters.interleave_search
        else:
            parameters.max_time_in_seconds = max(1e-3, (self.options.time_limit_s - self.spent) * share)
        status = solver.solve(model)
        deterministic = self.options.deterministic_time > 0
        self.spent += solver.response_proto.deterministic_time if deterministic else solver.wall_time
        found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        log.debug(
            "phase %s: %s in %.3fs, objective %s, bound %s", "probe" if probe else "solve",
            solver.status_name(status), solver.wall_time,
            solver.objective_value if found else "-", solver.best_objective_bound if found else "-",
        )
        if probe is None:
            self.statuses.append(solver.status_name(status))
        return solver if found else None

    def values(self, solver: cp_model.CpSolver) -> dict[cp_model.IntVar, int]:
        m = self.m
        variables = [*m.placed.values(), *m.node_replicas.values(), *m.pool_replicas.values(), *m.configs.values(),
                     *m.share_configs.values(), *m.mig_starts.values(), *m.splits.values()]  # fmt: skip
        return {variable: solver.value(variable) for variable in variables}

    @property
    def status(self) -> str:
        """The weakest phase's status: OPTIMAL only when every phase proved its optimum."""
        for name in ("MODEL_INVALID", "INFEASIBLE", "UNKNOWN", "FEASIBLE"):
            if name in self.statuses:
                return name
        return "OPTIMAL"


def solve(problem: Problem, hint: Hint | None, options: SolverOptions) -> tuple[Solution | None, SolverReport]:
    """Solves the model in phases; the solution is None when the hint is at least as good.

    Lexicographic, as CP-SAT advises for objectives of different scales: first the most jobs
    placed, tier by tier (block by block); those counts are then fixed and the cost minimised,
    each phase hinted with the answer before it. The report's objective, bound and gap are the
    cost phase's, in model units (UNITS_PER_USD_HOUR per dollar per hour).
    """
    started = time.perf_counter()
    m = build_model(problem, options)
    search = _Search(m, options)
    if options.deterministic_time <= 0:
        search.spent = time.perf_counter() - started  # the wall-clock budget covers building too
    jobs = sum(len(g.jobs) for g in problem.groups)
    hinted = _values(m, expansion.solution_of(problem, hint)) if hint is not None else None
    current = hinted
    # Every job placed is the best any placement phase can do: try it first, briefly. When
    # some job cannot run (or no such answer turns up), solve the tiers as they come.
    all_placed = m.model.new_bool_var("all_placed")
    for g in problem.groups:
        m.model.add(m.placed[g.index] == len(g.jobs)).only_enforce_if(all_placed)
    m.model.minimize(_cost(m))
    if hinted is not None and all(hinted[m.placed[g.index]] == len(g.jobs) for g in problem.groups):
        m.blocks = []
    else:
        probe = m.model.clone()  # a feasibility question: it stops at the first answer
        probe.clear_objective()  # type: ignore[no-untyped-call]
        probe.add(probe.get_bool_var_from_proto_index(all_placed.index) == 1)
        solver = search.run(OPTIMISTIC_SHARE, current, probe=probe)
        if solver is not None:
            current, m.blocks = search.values(solver), []
    if not m.blocks:
        m.model.add(all_placed == 1)
    for number, block in enumerate(m.blocks):
        m.model.maximize(_placements(m, block))
        solver = search.run(0.5 / (len(m.blocks) - number), current)
        if solver is None:
            return None, _report(search, None, started, jobs)
        current = search.values(solver)
        for tier in block:
            tier_groups = [g for g in problem.groups if g.tier == tier]
            reached = sum(current[m.placed[g.index]] for g in tier_groups)
            m.model.add(sum(m.placed[g.index] for g in tier_groups) == reached)
    m.model.minimize(_cost(m))
    # One worker: CP-SAT's LP-guided search finds near-optimal costs on this model far sooner
    # than the parallel portfolio (measured with benchmarks/bench_packer.py).
    solver = search.run(1.0, current, workers=1)
    if solver is None:
        return None, _report(search, None, started, jobs)
    found = search.values(solver)
    mine, theirs = _key(_evaluate(m, found)), _key(_evaluate(m, hinted)) if hinted is not None else None
    if theirs is not None and theirs <= mine:
        return None, _report(search, solver, started, jobs, used="greedy", cost=_evaluate(m, hinted)[1])  # type: ignore[arg-type]
    solution = Solution(
        jobs_placed={g: found[v] for g, v in m.placed.items()},
        node_replicas={key: found[v] for key, v in m.node_replicas.items() if found[v]},
        pool_replicas={key: found[v] for key, v in m.pool_replicas.items() if found[v]},
        configs={key: found[v] for key, v in m.configs.items() if found[v]},
        share_configs={key: found[v] for key, v in m.share_configs.items() if found[v]},
        mig_instances=_instances(m, found),
    )
    return solution, _report(search, solver, started, jobs, used="cpsat", cost=_evaluate(m, found)[1])


def _key(evaluated: tuple[tuple[int, ...], int]) -> tuple[tuple[int, ...], int]:
    """Smaller is better: more placements block by block, then less cost."""
    scores, cost = evaluated
    return tuple(-score for score in scores), cost


def _report(
    search: _Search, solver: cp_model.CpSolver | None, started: float, jobs: int, *, used: str = "greedy", cost: int = 0
) -> SolverReport:
    if solver is None:
        log.info("CP-SAT found no answer (%s) for %d jobs; keeping the greedy one", search.status, jobs)
        return SolverReport(status=search.status, objective=0, bound=0, gap=1.0, used=used, cost_usd_per_hour=0.0,
                            jobs=jobs, wall_s=time.perf_counter() - started)  # fmt: skip
    # The objective is the cost of the answer the decision carries (the solver's, or the greedy
    # one when that is no worse), the bound the solver's proof that no answer costs less.
    bound = round(solver.best_objective_bound)
    gap = max(0, cost - bound) / max(abs(cost), UNITS_PER_USD_HOUR)
    return SolverReport(status=search.status, objective=cost, bound=bound, gap=gap, used=used,
                        cost_usd_per_hour=cost / UNITS_PER_USD_HOUR, jobs=jobs,
                        wall_s=time.perf_counter() - started)  # fmt: skip


def _instances(m: Model, values: Mapping[cp_model.IntVar, int]) -> dict[tuple[int, int], tuple[MigInstance, ...]]:
    made: dict[tuple[int, int], list[MigInstance]] = {}
    for (k, b, profile, start), variable in m.mig_starts.items():
        if values[variable]:
            made.setdefault((k, b), []).append(MigInstance(start, profile))
    return {key: tuple(sorted(instances)) for key, instances in made.items()}


class CpSatPlacer(BatchPlacer):
    """The batch placer solved with CP-SAT."""

    name = "cpsat"

    def __init__(self, options: SolverOptions | None = None) -> None:
        super().__init__(solve, options)
