"""The LP relaxation of a CP-SAT model, and the neighbourhoods its answer induces (RENS, RINS).

CP-SAT's own search finds good answers slowly on big cycles: on 5,000 nodes its first
answers come from a cost-blind feasibility search and its LP-guided search needed a minute
to find one near its bound. Yet the model's LP relaxation is tight there (its optimum was
within 0.01 % of the integer optimum) and its simplex vertex nearly integral (35 of 18,942
variables fractional). So a cycle solves the relaxation with GLOP first, which gives a proven
lower bound, then hands CP-SAT only the neighbourhood of the LP answer: every variable whose
value is integral, and that shares no constraint with a fractional one, is fixed to it
(relaxation-induced neighbourhood search, Berthold 2014). That small model solves in a
fraction of a second to an answer within a fraction of a percent of the bound. When it has no
answer and one is in hand, the variables on which the LP and that answer agree are fixed
instead (RINS, Danna, Rothberg and Le Pape 2005), which keeps the answer in the model.

The relaxation is read off the model's proto, so it follows whatever the model states:
linear constraints (one-variable ones become bounds; enforced ones count when their literals
are fixed true), optional fixed-size intervals under NoOverlap (at most one present interval
covers each point: exact for integers, and far tighter than dropping them), and the
objective. Anything else is dropped, which keeps it a relaxation: its optimum never exceeds
the model's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse  # type: ignore[import-untyped]  # scipy ships no stubs
from ortools.linear_solver.python import model_builder_helper
from ortools.sat.python import cp_model

log = logging.getLogger(__name__)

#: An LP value this close to an integer counts as that integer (GLOP's tolerances are 1e-7).
INTEGRAL_TOLERANCE = 1e-6
#: Proto bounds beyond this magnitude stand for "unbounded" (CP-SAT uses the int64 limits).
UNBOUNDED = 2**62

_Floats = npt.NDArray[np.float64]
_Linear = tuple[list[int], list[int], list[int], int, int]  # enforcement literals, columns, coefficients, low, high


@dataclass(frozen=True, slots=True)
class Relaxation:
    """The LP optimum: a value per model variable (by proto index) and the objective's value.

    `infeasible` says the LP has no answer, so neither has the model; with it, and when
    GLOP gave up, `values` is empty.
    """

    values: Sequence[float]
    objective: float
    infeasible: bool = False

    @property
    def solved(self) -> bool:
        return bool(self.values)

    @property
    def bound(self) -> int:
        """A lower bound on the minimised objective's value in any answer of the model.

        CP-SAT's objectives have integer coefficients over integer variables, so the bound
        rounds up to an integer, once GLOP's tolerance is taken off.
        """
        return math.ceil(self.objective - self._tolerance)

    @property
    def most(self) -> int:
        """An upper bound on a maximised objective's value (CP-SAT stores it negated)."""
        return math.floor(-self.objective + self._tolerance)

    @property
    def _tolerance(self) -> float:
        return 1e-6 * max(1.0, abs(self.objective))

    @property
    def fractional(self) -> list[int]:
        return [i for i, value in enumerate(self.values) if abs(value - round(value)) > INTEGRAL_TOLERANCE]


#: No LP answer: GLOP gave up or ran out of time, or the objective is not one `bound` reads.
UNSOLVED = Relaxation(values=(), objective=math.inf)
#: The LP has no answer, so neither has the model.
INFEASIBLE = Relaxation(values=(), objective=math.inf, infeasible=True)


@dataclass(slots=True)
class _Rows:
    """A sparse constraint matrix built row by row: lower <= A x <= upper."""

    rows: list[int]
    columns: list[int]
    coefficients: list[float]
    lower: list[float]
    upper: list[float]

    def add(self, columns: Sequence[int], coefficients: Sequence[float], lower: float, upper: float) -> None:
        row = len(self.lower)
        self.rows.extend([row] * len(columns))
        self.columns.extend(columns)
        self.coefficients.extend(coefficients)
        self.lower.append(lower if lower > -UNBOUNDED else -math.inf)
        self.upper.append(upper if upper < UNBOUNDED else math.inf)


@dataclass(frozen=True, slots=True)
class _Constraints:
    """The constraints of a model's proto the relaxation reads, less those that became bounds."""

    linear: Sequence[_Linear]
    intervals: Mapping[int, tuple[int, int, int]]  # constraint index -> (start, size, presence literal)
    overlaps: Sequence[list[int]]  # each NoOverlap's interval constraint indices


def relax(model: cp_model.CpModel, time_limit_s: float | None = None) -> Relaxation:
    """The optimum of the LP relaxation of `model`, whose objective is minimised.

    `time_limit_s` bounds GLOP's wall time (none in deterministic mode, where a wall-clock
    limit would make the answer depend on the machine); out of time, the LP is unsolved.
    """
    proto = model.proto
    offset, scale = proto.objective.offset, proto.objective.scaling_factor
    if proto.has_floating_point_objective() or scale not in (0.0, 1.0, -1.0) or offset != round(offset):
        # Not an integer sum as `bound` and `most` read it (the model builder never writes these).
        return UNSOLVED
    lower = np.array([v.domain[0] for v in proto.variables], dtype=float)
    upper = np.array([v.domain[len(v.domain) - 1] for v in proto.variables], dtype=float)
    constraints = _read_constraints(proto, lower, upper)
    if np.any(lower > upper):
        return INFEASIBLE
    rows = _rows(constraints, lower)
    objective = np.zeros(len(lower))
    for column, coefficient in zip(proto.objective.vars, proto.objective.coeffs, strict=True):
        objective[column] += coefficient
    return _solve(lower, upper, objective, rows, time_limit_s=time_limit_s, offset=offset)


def _read_constraints(proto: cp_model.CpModelProto, lower: _Floats, upper: _Floats) -> _Constraints:
    """The proto's constraints, read in order; one-variable linear ones tighten `lower` and `upper` instead."""
    linear: list[_Linear] = []
    intervals: dict[int, tuple[int, int, int]] = {}
    overlaps: list[list[int]] = []
    for index, constraint in enumerate(proto.constraints):
        if constraint.has_linear():
            terms = constraint.linear
            columns, coefficients, domain = list(terms.vars), list(terms.coeffs), list(terms.domain)
            enforced = list(constraint.enforcement_literal)
            if not enforced and len(columns) == 1 and coefficients[0] > 0:  # a bound, as CP-SAT reads it
                _tighten(lower, upper, columns[0], coefficients[0], domain)
            else:
                linear.append((enforced, columns, coefficients, domain[0], domain[-1]))
        elif constraint.has_interval():
            interval = constraint.interval
            if not interval.start.vars and not interval.size.vars and len(constraint.enforcement_literal) == 1:
                intervals[index] = (interval.start.offset, interval.size.offset, constraint.enforcement_literal[0])
        elif constraint.has_no_overlap():
            overlaps.append(list(constraint.no_overlap.intervals))
    return _Constraints(linear, intervals, overlaps)


def _tighten(lower: _Floats, upper: _Floats, column: int, coefficient: int, domain: Sequence[int]) -> None:
    """Narrows a variable's bounds to what `coefficient * x in domain` leaves of them."""
    if domain[0] > -UNBOUNDED:
        lower[column] = max(lower[column], math.ceil(domain[0] / coefficient))
    if domain[-1] < UNBOUNDED:
        upper[column] = min(upper[column], math.floor(domain[-1] / coefficient))


def _rows(constraints: _Constraints, lower: _Floats) -> _Rows:
    """The LP's rows: the linear constraints that hold, then at most one present interval per point."""
    rows = _Rows([], [], [], [], [])
    for enforced, columns, coefficients, low, high in constraints.linear:
        # An enforced constraint holds only when its literals are true; unless the bounds fix
        # them true, the LP cannot say, so the relaxation drops it.
        if all(literal >= 0 and lower[literal] >= 1 for literal in enforced):
            rows.add(columns, coefficients, low, high)
    for members in constraints.overlaps:
        covering: dict[int, list[int]] = {}
        for member in members:
            if member in constraints.intervals:
                start, size, present = constraints.intervals[member]
                for point in range(start, start + size):
                    covering.setdefault(point, []).append(present)
        for literals in covering.values():
            if len(literals) > 1 and all(literal >= 0 for literal in literals):
                rows.add(literals, [1.0] * len(literals), -math.inf, 1.0)
    return rows


def _solve(
    lower: _Floats, upper: _Floats, objective: _Floats, rows: _Rows, *, time_limit_s: float | None, offset: float
) -> Relaxation:
    """GLOP's optimum of min objective x over lower <= x <= upper and the rows (`offset` added)."""
    matrix = scipy.sparse.csr_matrix(
        (rows.coefficients, (rows.rows, rows.columns)), shape=(len(rows.lower), len(lower)), dtype=float
    )
    lp = model_builder_helper.ModelBuilderHelper()
    fill: Any = lp.fill_model_from_sparse_data  # its stub types the arrays as ndarray[float64]: no array is
    fill(lower, upper, objective, np.array(rows.lower), np.array(rows.upper), matrix)
    solver = model_builder_helper.ModelSolverHelper("glop")
    if time_limit_s is not None:
        solver.set_time_limit_in_seconds(max(1e-3, time_limit_s))
    solver.solve(lp)
    status = solver.status()
    if status != model_builder_helper.SolveStatus.OPTIMAL:
        log.debug("LP relaxation: %s", status)
        return INFEASIBLE if status == model_builder_helper.SolveStatus.INFEASIBLE else UNSOLVED
    return Relaxation(values=tuple(solver.variable_values()), objective=solver.objective_value() + offset)


def neighbourhood(model: cp_model.CpModel, relaxation: Relaxation) -> cp_model.CpModel:
    """A copy of `model` with every variable far from the LP's fractional ones fixed (RENS).

    Free: the fractional variables and every variable that shares a constraint with one
    (a NoOverlap counts as one constraint over its intervals' literals). Fixed: the rest, at
    their LP value. Every variable is hinted with its rounded LP value.
    """
    proto = model.proto
    fractional = set(relaxation.fractional)
    free = set(fractional)
    literal_of: dict[int, int] = {}
    for index, constraint in enumerate(proto.constraints):
        if constraint.has_interval() and len(constraint.enforcement_literal) == 1:
            literal_of[index] = _variable(constraint.enforcement_literal[0])
    for constraint in proto.constraints:
        if constraint.has_linear():
            scope = [*constraint.linear.vars, *map(_variable, constraint.enforcement_literal)]
        elif constraint.has_no_overlap():
            scope = [literal_of[i] for i in constraint.no_overlap.intervals if i in literal_of]
        else:
            continue
        if not fractional.isdisjoint(scope):
            free.update(scope)
    rounded = [round(value) for value in relaxation.values]
    log.debug("RENS: %d fractional, %d of %d variables free", len(fractional), len(free), len(rounded))
    return _restricted(model, rounded, free, rounded)


def agreement(model: cp_model.CpModel, relaxation: Relaxation, incumbent: Sequence[int]) -> cp_model.CpModel:
    """A copy of `model` with every variable on which the LP and `incumbent` agree fixed (RINS).

    `incumbent` is an answer of `model`, a value per variable by proto index: it stays an
    answer of the copy, which is hinted with it, so the search there starts from it and can
    only improve on it (Danna, Rothberg and Le Pape 2005).
    """
    free = {
        index
        for index, (value, held) in enumerate(zip(relaxation.values, incumbent, strict=True))
        if abs(value - held) > INTEGRAL_TOLERANCE
    }
    log.debug("RINS: %d of %d variables free", len(free), len(incumbent))
    return _restricted(model, incumbent, free, incumbent)


def _restricted(model: cp_model.CpModel, fixed: Sequence[int], free: set[int], hint: Sequence[int]) -> cp_model.CpModel:
    """A copy of `model` with each variable not in `free` fixed to its value in `fixed`, hinted with `hint`.

    A value outside the variable's domain (a rounded LP value in a hole of it) leaves the
    variable free: fixing it there would let the copy accept what the model forbids.
    """
    copy = model.clone()
    variables = copy.proto.variables
    for index, value in enumerate(fixed):
        if index not in free:
            domain = variables[index].domain
            if len(domain) > 2 and not _inside(value, list(domain)):
                continue
            domain.clear()
            domain.extend((value, value))
    copy.clear_hints()  # type: ignore[no-untyped-call]
    solution_hint = copy.proto.solution_hint
    solution_hint.vars.extend(range(len(hint)))
    solution_hint.values.extend(hint)
    return copy


def _inside(value: int, domain: Sequence[int]) -> bool:
    """Whether `value` lies in a CP-SAT domain, written as [low, high, low, high, ...]."""
    return any(low <= value <= high for low, high in zip(domain[::2], domain[1::2], strict=True))


def _variable(literal: int) -> int:
    """The variable of a literal: CP-SAT writes the negation of variable i as -i - 1."""
    return literal if literal >= 0 else -literal - 1
