"""OR-Tools as this package must use it: the settings that work around faults of the version in use.

Checked against OR-Tools 9.15 (pyproject allows 9.12 to 9.x). Each function says what it avoids
and where the fault lives upstream; when a release fixes one, its function is the one place to
change, and `tests/test_cpsat.py` the place that shows it.

The fault: CP-SAT aborts the whole Python process (a failed CHECK cannot be caught) with
"Check failed: heuristics.fixed_search != nullptr" in `ConfigureSearchHeuristics`
(ortools/sat/integer_search.cc) when a subsolver asks for the fixed-search heuristic and none
was built. We met it twice on 9.15: interleaved search (CP-SAT's reproducible parallel mode) on
a model solved without presolve, and interleaved search on some hinted, infeasible
neighbourhoods. Users of several OR-Tools releases report the same CHECK with `repair_hint` or
with many workers; we found no upstream issue that tracks it.
"""

from __future__ import annotations

from typing import Any

from ortools.sat.python import cp_model


def set_presolve(parameters: Any, *, interleaved: bool) -> None:
    """Presolve off, except under interleaved search.

    Presolve costs more than it saves on these models (they are already small, and its rewriting
    hides the configuration structure the LP bound relies on), but interleaved search without it
    hits the abort above.
    """
    parameters.cp_model_presolve = interleaved


def neighbourhood_workers(deterministic: bool) -> int | None:
    """Workers for a search of a neighbourhood: one in deterministic mode, where interleaved
    search hits the abort above on some hinted, infeasible neighbourhoods; otherwise the
    profile's (None), since one worker alone found no answer in 0.7 s in a 6,000-variable
    neighbourhood that two answer in tens of milliseconds."""
    return 1 if deterministic else None


def clear_hints(model: cp_model.CpModel) -> None:
    """`CpModel.clear_hints`, which OR-Tools' type stubs leave unannotated."""
    model.clear_hints()  # type: ignore[no-untyped-call]


def clear_objective(model: cp_model.CpModel) -> None:
    """`CpModel.clear_objective`, which OR-Tools' type stubs leave unannotated."""
    model.clear_objective()  # type: ignore[no-untyped-call]
