"""CpSatPlacer: one CP-SAT solve per cycle places every waiting job at once, in named phases.

`model` states the model over the classes of `problem` (counts, not job-by-node booleans);
this module solves it; `expansion` turns the answer into placements; `placer.BatchPlacer`
runs the greedy answer first (the solver's hint, and its fallback when the solver finds
nothing at least as good) and a greedy pass after. Every decision carries a `SolverReport`.

The phases, lexicographic as CP-SAT advises for objectives of different scales, each hinted
with the answer before it and each returning an answer and what it proved (`Phase`):

1. `all_placed`: can every waiting job run at once? The best any placement phase can do.
2. `most_placed`, when not, per block of priority tiers (highest first): the most jobs
   placed, tier by tier; the counts reached are then fixed.
3. `least_cost`: the cheapest answer placing those counts.

Each starts from its LP relaxation (`relaxation`): the LP optimum is a proven bound, and its
answer's neighbourhood a small model CP-SAT solves quickly to an answer near that bound; when
that answer reaches the bound (placement) or is within the gap limit of it (cost), the full
model is not searched. A phase that finds nothing in its time keeps the answer before it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from scheduler.batch import expansion, objective, relaxation, workarounds
from scheduler.batch.expansion import Solution
from scheduler.batch.model import Model, build_model, hint_values
from scheduler.batch.placer import BatchPlacer
from scheduler.batch.problem import Hint, Problem
from scheduler.batch.search import Search, Values
from scheduler.decision import SolverReport
from scheduler.mig import MigInstance
from scheduler.profile import SolverOptions

log = logging.getLogger(__name__)

UNITS_PER_USD_HOUR = objective.UNITS_PER_USD_HOUR
#: Share of the budget for the first probe: can every waiting job run at once?
OPTIMISTIC_SHARE = 0.3


@dataclass(frozen=True, slots=True)
class Phase:
    """What a phase leaves: the best answer in hand (None: none yet) and, when the phase proved
    one, its bound (most jobs placed, or least cost, in model units); `relaxed` is the LP it
    solved, which the next phase may reuse when the model did not change in between."""

    answer: Values | None
    bound: int | None = None
    relaxed: relaxation.Relaxation | None = None


def _cost(m: Model) -> cp_model.LinearExprT:
    return sum(coefficient * variable for variable, coefficient in m.cost)


def _placements(m: Model, tiers: Sequence[int]) -> cp_model.LinearExprT:
    return sum(m.rewards[g.tier] * m.placed[g.index] for g in m.problem.groups if g.tier in tiers)


def all_placed(search: Search, hinted: Values | None) -> tuple[bool, Phase]:
    """Whether every waiting job can run at once, and the answer that shows it (else the hint).

    The hint may place every job already. Otherwise the LP of the model with every job placed
    answers: infeasible proves some job cannot run; a neighbourhood answer places them all; when
    neither settles it, CP-SAT is asked the yes-or-no question (it stops at the first answer).
    """
    m = search.m
    if hinted is not None and hinted[m.all_placed]:
        return True, Phase(hinted)
    probe = m.model.clone()
    probe.add(probe.get_bool_var_from_proto_index(m.all_placed.index) == 1)
    relaxed = search.relax(probe)
    if relaxed.solved:
        near = search.near(probe, relaxed, None)
        if near is not None:
            return True, Phase(near, relaxed=relaxed)
    if not relaxed.infeasible:
        workarounds.clear_objective(probe)
        solver = search.run(OPTIMISTIC_SHARE, hinted, probe=probe)
        if solver is not None:
            return True, Phase(search.values(solver), relaxed=relaxed)
    return False, Phase(hinted, relaxed=relaxed)


def most_placed(search: Search, block: Sequence[int], left: int, current: Values | None) -> Phase:
    """The most jobs of `block`'s tiers placed (weighted so that one more of a higher tier beats
    any change below it), with `left` blocks still to solve counting this one; the counts reached
    are fixed in the model. No answer (None) only when none was in hand and none was found."""
    m = search.m
    m.model.maximize(_placements(m, block))
    # The LP's answer, rounded in its neighbourhood, often places more than greedy did;
    # when it reaches the LP's bound it is the phase's optimum and needs no search.
    relaxed = search.relax(m.model)
    near = search.near(m.model, relaxed, current) if relaxed.solved else None
    if near is not None and (current is None or _placed(m, block, near) > _placed(m, block, current)):
        current = near
    most = relaxed.most if relaxed.solved else None
    if current is not None and most is not None and _placed(m, block, current) >= most:
        log.debug("placement phase: the LP bound %d is reached; no full search", most)
    else:
        # No gap limit: a relative gap could cost a job of a higher tier. With an answer from
        # the LP's neighbourhood in hand, half the time: the cost phase needs its share.
        share = (0.5 if near is None else 0.25) / left
        solver = search.run(share, current, gap_limit=0.0)
        if solver is not None:
            current = search.values(solver)
        elif current is None:
            return Phase(None)
        else:
            search.keep()
    for tier in block:
        tier_groups = [g for g in m.problem.groups if g.tier == tier]
        reached = sum(current[m.placed[g.index]] for g in tier_groups)
        m.model.add(sum(m.placed[g.index] for g in tier_groups) == reached)
    return Phase(current, _placed(m, block, current))


def least_cost(search: Search, current: Values | None, relaxed: relaxation.Relaxation | None) -> Phase:
    """The cheapest answer for the counts the placement phases fixed, and the bound that proves
    how close it is: `relaxed`, the LP of the model as it stands when one was solved already,
    else solved now. No answer only when none was in hand and none was found."""
    m = search.m
    m.model.minimize(_cost(m))
    if relaxed is None or not relaxed.solved:  # the LP of the model as the placement phases left it
        relaxed = search.relax(m.model)
        near = search.near(m.model, relaxed, current) if relaxed.solved else None
        if near is not None and (current is None or _cost_of(m, near) < _cost_of(m, current)):
            current = near
    bound = relaxed.bound if relaxed.solved else None
    if current is not None and bound is not None and _gap(_cost_of(m, current), bound) <= search.options.gap_limit:
        log.debug("LP bound %d proves the answer within the gap limit; no full search", bound)
        return Phase(current, bound)
    # One worker: CP-SAT's LP-guided search closes the gap on this model sooner than the
    # parallel portfolio (measured with benchmarks/bench_packer.py).
    solver = search.run(1.0, current, workers=1)
    if solver is not None:
        searched = search.values(solver)
        # CP-SAT may repair or drop a hint; the answer in hand stays when it is cheaper.
        answer = current if current is not None and _cost_of(m, current) < _cost_of(m, searched) else searched
        proven = round(solver.best_objective_bound)
        return Phase(answer, proven if bound is None else max(bound, proven))
    if current is None:
        return Phase(None)
    search.keep()
    return Phase(current, _least_cost(m) if bound is None else bound)


def solve(problem: Problem, hint: Hint | None, options: SolverOptions) -> tuple[Solution | None, SolverReport]:
    """Solves the problem in phases (see the module docstring); the solution is None when the
    hint is at least as good. The report's objective, bound and gap are the cost phase's, in
    model units (UNITS_PER_USD_HOUR per dollar per hour)."""
    started = time.perf_counter()
    groups = problem.groups
    if len(groups) == 1 and len(groups[0].jobs) == 1 and groups[0].job.replicas == 1:
        return _single(problem, hint, options, started)
    m = build_model(problem, options)
    search = Search(m, options, started)
    jobs = sum(len(g.jobs) for g in problem.groups)
    hinted = hint_values(m, expansion.solution_of(problem, hint)) if hint is not None else None
    m.model.minimize(_cost(m))
    everyone, phase = all_placed(search, hinted)
    if everyone:
        m.blocks = []
        m.model.add(m.all_placed == 1)
    current, relaxed = phase.answer, phase.relaxed
    for number, block in enumerate(m.blocks):
        phase = most_placed(search, block, len(m.blocks) - number, current)
        if phase.answer is None:
            return None, _report(search, started, jobs)
        current, relaxed = phase.answer, None
    phase = least_cost(search, current, relaxed)
    if phase.answer is None:
        return None, _report(search, started, jobs)
    found, bound = _solution(m, phase.answer), phase.bound
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
    search: Search, started: float, jobs: int, *, used: str = "greedy", cost: int = 0, bound: int | None = None
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
