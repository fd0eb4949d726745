"""Search: CP-SAT runs and LP relaxations for the phases of one solve, under one budget.

The budget is wall-clock seconds (the extender, the benchmarks) or CP-SAT's deterministic work
(simulations: the same input gives the same answer on any machine). Each phase takes a share
of what is left. Settings that only work around an OR-Tools fault are in `workarounds`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from ortools.sat.python import cp_model

from scheduler.batch import relaxation, workarounds
from scheduler.batch.model import Model
from scheduler.profile import SolverOptions

log = logging.getLogger(__name__)

#: Share of what is left for the search near the LP answer (it usually stops far sooner).
NEIGHBOURHOOD_SHARE = 0.5
#: A neighbourhood's gap limit, as a share of the cycle's: its own bound is above the LP's, so
#: its answer must be closer to it for the cycle to stop there.
NEIGHBOURHOOD_GAP = 0.25
#: Wall seconds below which a phase is not started: it could only overrun the budget.
MIN_PHASE_S = 0.01

Values = dict[cp_model.IntVar, int]
"""A value for every variable of the model: an answer."""


class Search:
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
    ) -> Values | None:
        """The best answer CP-SAT finds near the LP answer, or None.

        First where only the LP's fractional values are free (`relaxation.neighbourhood`); when
        that has no answer and `incumbent` is an answer of `model`, where the LP and it differ
        (`relaxation.agreement`), which holds the incumbent, so it is no worse. The workers are
        `workarounds.neighbourhood_workers`.
        """
        tighter = self.options.gap_limit * NEIGHBOURHOOD_GAP  # to land within the gap of the LP's bound
        workers = workarounds.neighbourhood_workers(self.deterministic)
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
            workarounds.clear_hints(model)
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
        if self.deterministic:  # reproducible: a budget of work, and parallel workers interleaved
            parameters.max_deterministic_time = max(1e-3, (self.options.deterministic_time - self.spent) * share)
            parameters.interleave_search = parameters.num_workers > 1
        else:
            parameters.max_time_in_seconds = max(1e-3, (self.options.time_limit_s - self.spent) * share)
        workarounds.set_presolve(parameters, interleaved=parameters.interleave_search)
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

    def values(self, solver: cp_model.CpSolver) -> Values:
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
