"""What a `fleetsched fill` run writes: the authors' discrete allocation rows, the medians, and the plot.

`allo_discrete.csv` has the columns of the authors' `analysis_allo_discrete.csv` (workload,
sc_policy, tune, seed, total_gpus, then the allocated GPU % at 0..130 % arrived), so the two
files compare cell by cell; `sc_policy` uses their labels (01-Random .. 06-FGD). A cell no event
lands near stays empty, as in theirs, and a median over seeds leaves such seeds out.
"""

from __future__ import annotations

import csv
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.errors import InputError
from simulator.fill import LAST_PERCENT, POLICIES, FillRun, discrete_curve, unallocated_at
from traces.base import csv_rows

LABELS = {policy: f"{index:02d}-{policy}" for index, policy in enumerate(POLICIES, start=1)}
HEADER = ("workload", "sc_policy", "tune", "seed", "total_gpus", *(str(x) for x in range(LAST_PERCENT + 1)))


@dataclass(frozen=True, slots=True)
class CurveRow:
    """One policy and seed's discrete curve (allocated GPU % per arrived %, None when the bin is empty)."""

    workload: str
    policy: str
    tune: float
    seed: int
    total_gpus: int
    cells: tuple[float | None, ...]

    @classmethod
    def of(cls, workload: str, tune: float, run: FillRun) -> CurveRow:
        cells = discrete_curve(run.arrived_milli, run.allocated_milli, run.cluster_gpus)
        return cls(workload, run.policy, tune, run.seed, run.cluster_gpus, tuple(cells))


def write_rows(rows: Sequence[CurveRow], path: Path) -> None:
    """The rows in the authors' discrete format."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for row in rows:
            cells = ["" if cell is None else repr(cell) for cell in row.cells]
            writer.writerow([row.workload, LABELS[row.policy], row.tune, row.seed, row.total_gpus, *cells])


def read_rows(path: Path) -> list[CurveRow]:
    """Rows of an `analysis_allo_discrete.csv` (the authors' or ours)."""
    policies = {label: policy for policy, label in LABELS.items()}
    rows = []
    for fields in csv_rows(path, HEADER[:5]):
        label = fields.text("sc_policy")
        if label not in policies:
            raise fields.fail("sc_policy", f"unknown policy label {label!r}")
        cells = tuple(fields.optional(str(x)) for x in range(LAST_PERCENT + 1))
        rows.append(CurveRow(fields.text("workload"), policies[label], fields.number("tune"),
                             fields.integer("seed"), fields.integer("total_gpus"), cells))
    if not rows:
        raise InputError("no rows", source=str(path))
    return rows


def medians(rows: Sequence[CurveRow], percent: int = 100) -> dict[str, float | None]:
    """Per policy, the median over seeds of unallocated GPU % at `percent` arrived.

    A seed whose cell is blank (no arrival within one point of `percent`, as the authors leave
    it) is left out; a policy whose every seed is blank has None (n/a), not no entry.
    """
    found: dict[str, list[float]] = {}
    for row in rows:
        value = unallocated_at(row.cells, percent)
        found.setdefault(row.policy, [])
        if value is not None:
            found[row.policy].append(value)
    return {policy: round(statistics.median(values), 2) if values else None for policy, values in found.items()}


def summary(
    rows: Sequence[CurveRow], workload: str, tune: float, seeds: Sequence[int],
    blank: Mapping[int, str] | None = None, authors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON summary: per policy the median unallocated GPU % at 100 % arrived, and each seed's value.

    `blank` (seed: why its cell at 100 % is blank; its values are null) and `authors` (their
    medians over the same seeds, with `--expected`) are written only when there are any.
    """
    document: dict[str, Any] = {
        "workload": workload,
        "tune": tune,
        "seeds": list(seeds),
        "unallocated_gpu_pct_at_100_median": medians(rows),
        "unallocated_gpu_pct_at_100_per_seed": {
            policy: {str(row.seed): unallocated_at(row.cells) for row in rows if row.policy == policy}
            for policy in dict.fromkeys(row.policy for row in rows)
        },
    }
    if blank:
        document["unallocated_gpu_pct_at_100_blank"] = {str(seed): reason for seed, reason in blank.items()}
    if authors is not None:
        document["authors"] = dict(authors)
    return document


def median_curve(rows: Sequence[CurveRow], policy: str) -> list[float | None]:
    """100 minus the median over seeds of each cell (the paper's Fig. 9(a) line)."""
    curve: list[float | None] = []
    for x in range(LAST_PERCENT + 1):
        values = [row.cells[x] for row in rows if row.policy == policy and row.cells[x] is not None]
        curve.append(round(100 - statistics.median(v for v in values if v is not None), 2) if values else None)
    return curve


def plot(rows: Sequence[CurveRow], theirs: Mapping[str, Sequence[float | None]], path: Path) -> None:
    """Unallocated GPU % against arrived %, median over seeds per policy (theirs dashed when given)."""
    # Imported here: matplotlib wants a writable cache folder when imported (see simulator.plots).
    from simulator.fill_plot import fill_curves

    ours = {policy: median_curve(rows, policy) for policy in dict.fromkeys(row.policy for row in rows)}
    fill_curves(ours, theirs, path)


def refuse_fill_output(folder: Path) -> None:
    """InputError when `folder` is a `fleetsched fill` output directory, for readers of simulation runs.

    A fill run is complete without jobs.csv: it holds the discrete curves, not a replay's jobs.
    """
    if (folder / "allo_discrete.csv").is_file():
        raise InputError("a `fleetsched fill` output directory (allo_discrete.csv, summary.json, unallocated.png), "
                         "not a simulation run or comparison: read allo_discrete.csv with "
                         "simulator.fill_output.read_rows (or pandas) and summary.json as JSON", source=str(folder))
