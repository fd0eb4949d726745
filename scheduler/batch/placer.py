"""BatchPlacer: the whole queue placed with one solve of the batch problem.

The greedy answer comes first (a trial, rolled back) as the solver's hint and fallback; the
solution is expanded onto concrete GPUs; then a greedy pass, with the profile's preemption,
offers what still waits the capacity left and explains every job left pending.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

from scheduler.batch.expansion import Solution, expand
from scheduler.batch.problem import Hint, Problem, build, hint_from
from scheduler.cycle import CycleState
from scheduler.decision import Decision, SolverReport
from scheduler.framework import Framework
from scheduler.model import Job, Placement
from scheduler.placers import GreedyPlacer
from scheduler.profile import SolverOptions

#: The least wall time a batch placer gives its solver, however long the greedy answer took.
MIN_SOLVE_S = 0.05

Solve = Callable[[Problem, Hint | None, SolverOptions], tuple[Solution | None, SolverReport]]


class BatchPlacer:
    """Places the whole queue with one solve of the batch problem (`scheduler.batch.problem`);
    see the module docstring."""

    name = "batch"

    def __init__(self, solve: Solve, options: SolverOptions | None = None) -> None:
        self.solve = solve
        self.options = options

    def place(self, framework: Framework, state: CycleState, queue: Sequence[Job]) -> Decision:
        began = time.perf_counter()
        start = state.snapshot
        # The greedy answer, tried and rolled back. The index is put back node by node in name
        # order, as the decisions the README measures were made.
        with state.trial(by_name=True):
            first = list(GreedyPlacer(trial=True).place(framework, state, queue).placements)
        hint = hint_from(start.nodes, start.pools, first)
        problem = build(framework, state, queue, hint)
        report: SolverReport | None = None
        placements: Sequence[Placement] = first
        if problem.groups:
            options = self.options or framework.profile.solver
            if options.deterministic_time <= 0:  # the wall-clock budget covers the whole placement
                left = options.time_limit_s - (time.perf_counter() - began)
                options = dataclasses.replace(options, time_limit_s=max(MIN_SOLVE_S, left))
            solution, report = self.solve(problem, hint, options)
            if solution is not None:
                cycle = state.cycle
                placements, _ = expand(problem, solution, lambda job, node: framework.filters_pass(cycle, job, node).ok)
        state.assume_all(placements)
        placed = {placement.job.id for placement in placements}
        rest = [job for job in queue if job.id not in placed]
        tail = GreedyPlacer().place(framework, state, rest) if rest else Decision()
        return Decision(
            placements=(*placements, *tail.placements),
            preemptions=tail.preemptions,
            pending=tail.pending,
            solver=report,
        )
