"""CpSatPlacer: one OR-Tools CP-SAT model per cycle places every waiting job at once.

This package is the only place that imports ortools: `model.py` states the model over the
classes of `scheduler.batch` (counts, not job-by-node booleans); this module solves it in
phases; `scheduler.expansion` turns the answer into placements.

The placer first runs the greedy placer (without preemption) on the cycle. That answer is
the solver's hint (warm start) and its fallback: when the solver finds nothing at least as
good within its limit, the decision carries the greedy answer. Afterwards a greedy pass
offers what is still waiting (jobs the model leaves out, jobs a filter turned down on
expansion) the remaining capacity, with the profile's preemption, and explains every job
left pending. Every decision carries a `SolverReport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from ortools.sat.python import cp_model

from scheduler.batch import expansion, objective, relaxation
from scheduler.batch.expansion import Solution
from scheduler.batch.model import Model, build_model, hint_values
from scheduler.batch.placer import BatchPlacer
from scheduler.batch.problem import Hint, Problem
from scheduler.decision import SolverReport
from scheduler.mig import MigInstance
from scheduler.profile import SolverOptions

log = logging.getLogger(__name__)

UNITS_PER_USD_HOUR = objective.UNITS_PER_USD_HOUR
#: Share of the budget for the first probe: can every waiting job run at once?
OPTIMISTIC_SHARE = 0.3
#: Share of what is left for the search near the LP answer (it usually stops far sooner).
NEIGHBOURHOOD_SHARE = 0.5
#: A neighbourhood's gap limit, as a share of the cycle's: its own bound is above the LP's, so
#: its answer must be closer to it for the cycle to stop there.
NEIGHBOURHOOD_GAP = 0.25
#: Wall seconds below which a phase is not started: it could only overrun the budget.
MIN_PHASE_S = 0.01


def _cost(m: Model) -> cp_model.LinearExprT:
    return sum(coefficient * variable for variable, coefficient in m.cost)


def _placements(m: Model, tiers: Sequence[int]) -> cp_model.LinearExprT:
    return sum(m.rewards[g.tier] * m.placed[g.index] for g in m.problem.groups if g.tier in tiers)


class _Search:
    """Runs the phases of one solve under one budget of time or deterministic work."""

    def __init__(self, m: Model, options: SolverOptions, started: float) -> None:
        self.m = m
        self.options = options
        self.started = started
        self.work = 0.0  # deterministic time spent, in deterministic mode
        self.statuses: list[str] = []

    @property
    def deterministic(self) -> bool:
        return self.options.deterministic_time > 0

    @property
    def spent(self) -> float:
        """What the phases have used of the budget: all wall time since the start (building and
        the LP included), or the deterministic work of the CP-SAT phases."""
        return self.work if self.deterministic else time.perf_counter() - self.started

    def relax(self, model: cp_model.CpModel) -> relaxation.Relaxation:
        """The LP relaxation of `model`, within what is left of a wall-clock budget.

        With none left, none is read: reading a big model's proto alone takes tenths of a second.
        """
        left = None if self.deterministic else self.options.time_limit_s - self.spent
        if left is not None and left <= MIN_PHASE_S:
            return relaxation.UNSOLVED
        return relaxation.relax(model, left)

    def near(
        self, model: cp_model.CpModel, relaxed: relaxation.Relaxation, incumbent: Mapping[cp_model.IntVar, int] | None
    ) -> dict[cp_model.IntVar, int] | None:
        """The best answer CP-SAT finds near the LP answer, or None.

        First where only the LP's fractional values are free (`relaxation.neighbourhood`); when
        that has no answer and `incumbent` is an answer of `model`, where the LP and it differ
        (`relaxation.agreement`), which holds the incumbent, so it is no worse. In deterministic
        mode with one worker: OR-Tools 9.15 aborts the process ("heuristics.fixed_search !=
        nullptr") on some hinted, infeasible neighbourhoods under interleaved search. Against
        the clock, the parallel portfolio: one worker found no answer in a 6,000-variable
        neighbourhood in 0.7 s that two workers answer in tens of milliseconds.
        """
        tighter = self.options.gap_limit * NEIGHBOURHOOD_GAP  # to land within the gap of the LP's bound
        workers = 1 if self.deterministic else None
        solver = self.run(NEIGHBOURHOOD_SHARE, None, probe=relaxation.neighbourhood(model, relaxed), workers=workers,
                          gap_limit=tighter)  # fmt: skip
        if solver is None and incumbent is not None and len(incumbent) == len(model.proto.variables):
            held = [0] * len(incumbent)
            for variable, value in incumbent.items():
                held[variable.index] = value
            solver = self.run(NEIGHBOURHOOD_SHARE, None, probe=relaxation.agreement(model, relaxed, held),
                              workers=workers, gap_limit=tighter)  # fmt: skip
        return None if solver is None else self.values(solver)

    def run(
        self,
        share: float,
        hint: Mapping[cp_model.IntVar, int] | None,
        *,
        probe: cp_model.CpModel | None = None,
        workers: int | None = None,
        gap_limit: float | None = None,
    ) -> cp_model.CpSolver | None:
        """One phase with `share` of what is left of the budget; None when it found nothing.

        A `probe` (a copy of the model asking a yes-or-no question) does not count towards the
        search's status: an answer is the optimum of its phase, no answer is no verdict.
        """
        model = self.m.model if probe is None else probe
        if hint is not None:  # without one, the model keeps its own (a neighbourhood's rounded LP answer)
            model.clear_hints()  # type: ignore[no-untyped-call]
            for variable, value in hint.items():
                model.add_hint(variable, value)
        solver = cp_model.CpSolver()
        parameters = solver.parameters
        parameters.num_workers = self.options.workers if workers is None else workers
        parameters.random_seed = self.options.seed
        # A complete hint is taken as the first answer at once; searching around it first
        # (the default) delayed the LP-guided search by most of a second on 1,000 nodes.
        parameters.hint_conflict_limit = 0
        parameters.relative_gap_limit = self.options.gap_limit if gap_limit is None else gap_limit
        # Presolve costs more than it saves here: the model is already small, and its
        # rewriting hides the configuration structure the LP bound relies on. Interleaved
        # search (CP-SAT's reproducible parallel mode) keeps it: OR-Tools 9.15 aborts the
        # process ("heuristics.fixed_search != nullptr") on interleaved search without presolve.
        parameters.cp_model_presolve = False
        if self.deterministic:
            parameters.max_deterministic_time = max(1e-3, (self.options.deterministic_time - self.spent) * share)
            parameters.interleave_search = parameters.num_workers > 1
            parameters.cp_model_presolve = parameters.interleave_search
        else:
            parameters.max_time_in_seconds = max(1e-3, (self.options.time_limit_s - self.spent) * share)
        status = solver.solve(model)
        self.work += solver.response_proto.deterministic_time
        found = status in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        log.debug(
            "phase %s: %s in %.3fs, objective %s, bound %s", "probe" if probe else "solve",
            solver.status_name(status), solver.wall_time,
            solver.objective_value if found else "-", solver.best_objective_bound if found else "-",
        )
        if probe is None:
            self.statuses.append(solver.status_name(status))
        return solver if found else None

    def keep(self) -> None:
        """The last phase found nothing in its time, but the answer before it stands: the
        search has an answer, unproven. (Any other verdict, which would be a bug, stays.)"""
        if self.statuses[-1] == "UNKNOWN":
            self.statuses[-1] = "FEASIBLE"

    def values(self, solver: cp_model.CpSolver) -> dict[cp_model.IntVar, int]:
        m = self.m
        variables = [m.all_placed, *m.placed.values(), *m.node_replicas.values(), *m.pool_replicas.values(),
                     *m.configs.values(), *m.share_configs.values(), *m.mig_starts.values(),
                     *m.splits.values()]  # fmt: skip
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
    each phase hinted with the answer before it. Each phase starts from its LP relaxation:
    the LP optimum is a proven bound, and the neighbourhood of its answer (`relaxation`) a small
    model that CP-SAT solves quickly to an answer near that bound; when that answer reaches the
    bound (placement phases) or is within the gap limit of it (the cost phase), the full model
    is not searched at all. A phase that finds nothing in its time keeps the answer before it.
    The report's objective, bound and gap are the cost phase's, in model units
    (UNITS_PER_USD_HOUR per dollar per hour).
    """
    started = time.perf_counter()
    groups = problem.groups
    if len(groups) == 1 and len(groups[0].jobs) == 1 and groups[0].job.replicas == 1:
        return _single(problem, hint, options, started)
    m = build_model(problem, options)
    search = _Search(m, options, started)
    jobs = sum(len(g.jobs) for g in problem.groups)
    hinted = hint_values(m, expansion.solution_of(problem, hint)) if hint is not None else None
    current = hinted
    # Every job placed is the best any placement phase can do: try it first. When some job
    # cannot run (or no such answer turns up), solve the tiers as they come.
    all_placed = m.all_placed
    m.model.minimize(_cost(m))
    relaxed: relaxation.Relaxation | None = None
    if hinted is not None and hinted[all_placed]:
        m.blocks = []
    else:
        probe = m.model.clone()
        probe.add(probe.get_bool_var_from_proto_index(all_placed.index) == 1)
        relaxed = search.relax(probe)
        if relaxed.solved:
            near = search.near(probe, relaxed, None)
            if near is not None:
                current, m.blocks = near, []
        if m.blocks and not relaxed.infeasible:  # a feasibility question: it stops at the first answer
            probe.clear_objective()  # type: ignore[no-untyped-call]
            solver = search.run(OPTIMISTIC_SHARE, current, probe=probe)
            if solver is not None:
                current, m.blocks = search.values(solver), []
    if not m.blocks:
        m.model.add(all_placed == 1)
    for number, block in enumerate(m.blocks):
        m.model.maximize(_placements(m, block))
        # The LP's answer, rounded in its neighbourhood, often places more than greedy did;
        # when it reaches the LP's bound it is the phase's optimum and needs no search.
        tier_relaxed = search.relax(m.model)
        near = search.near(m.model, tier_relaxed, current) if tier_relaxed.solved else None
        if near is not None and (current is None or _placed(m, block, near) > _placed(m, block, current)):
            current = near
        most = tier_relaxed.most if tier_relaxed.solved else None
        if current is not None and most is not None and _placed(m, block, current) >= most:
            log.debug("placement phase: the LP bound %d is reached; no full search", most)
        else:
            # No gap limit: a relative gap could cost a job of a higher tier. With an answer from
            # the LP's neighbourhood in hand, half the time: the cost phase needs its share.
            share = (0.5 if near is None else 0.25) / (len(m.blocks) - number)
            solver = search.run(share, current, gap_limit=0.0)
            if solver is not None:
                current = search.values(solver)
            elif current is None:
                return None, _report(search, started, jobs)
            else:
                search.keep()
        for tier in block:
            tier_groups = [g for g in problem.groups if g.tier == tier]
            reached = sum(current[m.placed[g.index]] for g in tier_groups)
            m.model.add(sum(m.placed[g.index] for g in tier_groups) == reached)
        relaxed = None
    m.model.minimize(_cost(m))
    if relaxed is None or not relaxed.solved:  # the LP of the model as the placement phases left it
        relaxed = search.relax(m.model)
        near = search.near(m.model, relaxed, current) if relaxed.solved else None
        if near is not None and (current is None or _cost_of(m, near) < _cost_of(m, current)):
            current = near
    bound = relaxed.bound if relaxed.solved else None
    if current is not None and bound is not None and _gap(_cost_of(m, current), bound) <= options.gap_limit:
        log.debug("LP bound %d proves the answer within the gap limit; no full search", bound)
        answer = current
    else:
        # One worker: CP-SAT's LP-guided search closes the gap on this model sooner than the
        # parallel portfolio (measured with benchmarks/bench_packer.py).
        solver = search.run(1.0, current, workers=1)
        if solver is not None:
            searched = search.values(solver)
            # CP-SAT may repair or drop a hint; the answer in hand stays when it is cheaper.
            answer = current if current is not None and _cost_of(m, current) < _cost_of(m, searched) else searched
            proven = round(solver.best_objective_bound)
            bound = proven if bound is None else max(bound, proven)
        elif current is None:
            return None, _report(search, started, jobs)
        else:
            search.keep()
            answer = current
            bound = _least_cost(m) if bound is None else bound
    found = _solution(m, answer)
    given = expansion.solution_of(problem, hint) if hint is not None else None
    if given is not None and objective.rank(problem, given, options) <= objective.rank(problem, found, options):
        cost = objective.cost_units(problem, given, options)
        return None, _report(search, started, jobs, used="greedy", cost=cost, bound=bound)
    cost = objective.cost_units(problem, found, options)
    return found, _report(search, started, jobs, used="cpsat", cost=cost, bound=bound)


def _cost_of(m: Model, values: Mapping[cp_model.IntVar, int]) -> int:
    return sum(coefficient * values[variable] for variable, coefficient in m.cost)


def _placed(m: Model, tiers: Sequence[int], values: Mapping[cp_model.IntVar, int]) -> int:
    """The value of `_placements(m, tiers)` under `values`."""
    return sum(m.rewards[g.tier] * values[m.placed[g.index]] for g in m.problem.groups if g.tier in tiers)


def _least_cost(m: Model) -> int:
    """A bound no answer can beat, from the variables' domains alone: each cost term at its least."""
    total = 0
    for variable, coefficient in m.cost:
        domain = variable.proto.domain
        low, high = domain[0], domain[len(domain) - 1]
        total += min(coefficient * low, coefficient * high)
    return total


def _gap(cost: int, bound: int) -> float:
    """CP-SAT's relative gap, with a dollar per hour as the least denominator."""
    return max(0, cost - bound) / max(abs(cost), UNITS_PER_USD_HOUR)


def _solution(m: Model, found: Mapping[cp_model.IntVar, int]) -> Solution:
    made: dict[tuple[int, int], list[MigInstance]] = {}
    for (k, b, profile, start), variable in m.mig_starts.items():
        if found[variable]:
            made.setdefault((k, b), []).append(MigInstance(start, profile))
    return Solution(
        jobs_placed={g: found[v] for g, v in m.placed.items()},
        node_replicas={key: found[v] for key, v in m.node_replicas.items() if found[v]},
        pool_replicas={key: found[v] for key, v in m.pool_replicas.items() if found[v]},
        configs={key: found[v] for key, v in m.configs.items() if found[v]},
        share_configs={key: found[v] for key, v in m.share_configs.items() if found[v]},
        mig_instances={key: tuple(sorted(instances)) for key, instances in made.items()},
    )


def _single(
    problem: Problem, hint: Hint | None, options: SolverOptions, started: float
) -> tuple[Solution | None, SolverReport]:
    """One job with one replica: every option costed, the cheapest kept (the hint when it ties)."""
    solution, used, cost = objective.cheapest_single(problem, hint, options)
    report = SolverReport(status="OPTIMAL" if used else "INFEASIBLE", objective=cost, bound=cost, gap=0.0,
                          used=used or "greedy", cost_usd_per_hour=cost / UNITS_PER_USD_HOUR, jobs=1,
                          wall_s=time.perf_counter() - started)  # fmt: skip
    return solution, report


def _report(
    search: _Search, started: float, jobs: int, *, used: str = "greedy", cost: int = 0, bound: int | None = None
) -> SolverReport:
    if bound is None:
        log.info("CP-SAT found no answer (%s) for %d jobs; keeping the greedy one", search.status, jobs)
        return SolverReport(status=search.status, objective=0, bound=0, gap=1.0, used=used, cost_usd_per_hour=0.0,
                            jobs=jobs, wall_s=time.perf_counter() - started)  # fmt: skip
    # The objective is the cost of the answer the decision carries (the solver's, or the greedy
    # one when that is no worse), the bound the proof (LP or CP-SAT's) that no answer costs less.
    return SolverReport(status=search.status, objective=cost, bound=bound, gap=_gap(cost, bound), used=used,
                        cost_usd_per_hour=cost / UNITS_PER_USD_HOUR, jobs=jobs,
                        wall_s=time.perf_counter() - started)  # fmt: skip


class CpSatPlacer(BatchPlacer):
    """The batch placer solved with CP-SAT."""

    name = "cpsat"

    def __init__(self, options: SolverOptions | None = None) -> None:
        super().__init__(solve, options)
