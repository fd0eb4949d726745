"""The sweep half of the HTML report: a sweep directory's results.parquet, its Pareto front and its cells.

A sweep (`fleetsched sweep GRID.toml --out DIR`) leaves one row per cell in
`DIR/results.parquet`: the cell's parameters and the comparison.csv figures of its run
(`simulator.compare.COLUMNS`: `cost_usd`, `queue_p95_s`, ...). The report shows cost against
p95 queue time for every cell (coloured by profile when the table has one), the cells no
other cell beats on both (the Pareto front), and the table itself. Columns it does not know
are shown as they are; a table without cost or queue columns is shown without the chart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fleetsched import report_svg
from fleetsched.report_html import count, money, note, number, page, section, table
from scheduler.errors import InputError

RESULTS = "results.parquet"
COST, QUEUE = "cost_usd", "queue_p95_s"
MAX_ROWS = 500  # the table shows the first cells; the chart shows them all


def read_results(folder: Path) -> pd.DataFrame:
    """The sweep's results table; InputError naming the file if it cannot be read or is empty."""
    path = folder / RESULTS
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"not a readable Parquet table ({type(error).__name__})", source=str(path)) from None
    if frame.empty:
        raise InputError("the sweep's results table has no rows", source=str(path))
    return frame


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows no other row beats on both cost and p95 queue time (lower is better), cheapest first."""
    ordered = frame.sort_values([COST, QUEUE], kind="stable")
    keep, best_queue = [], float("inf")
    for index, queue in zip(ordered.index, ordered[QUEUE].astype(float), strict=True):
        if queue < best_queue:
            keep.append(index)
            best_queue = queue
    return ordered.loc[keep]


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    rows = []
    for _, record in frame.head(MAX_ROWS).iterrows():
        cells = []
        for column, value in record.items():
            if column == "cell":  # a sha256: its first 12 digits tell the cells apart (DIR/cells/ holds the rest)
                cells.append(str(value)[:12])
            elif isinstance(value, float):
                cells.append(money(value) if str(column).endswith("_usd") else number(value, 2))
            else:
                cells.append(str(value))
        rows.append(cells)
    return rows


def _chart(frame: pd.DataFrame, front: pd.DataFrame) -> str:
    groups: Sequence[tuple[str, pd.DataFrame]] = (list(frame.groupby("profile", sort=False)) if "profile" in frame
                                                  else [("cells", frame)])  # fmt: skip
    series = [report_svg.Series(str(name), list(zip(rows[QUEUE].astype(float), rows[COST].astype(float), strict=True)))
              for name, rows in groups]  # fmt: skip
    by_queue = front.sort_values([QUEUE, COST], kind="stable")
    steps = list(zip(by_queue[QUEUE].astype(float), by_queue[COST].astype(float), strict=True))
    scatter = report_svg.scatter("Cost against p95 queue time, every cell; the line: the Pareto front", series,
                                 "p95 queue time (s)", "cost (USD)", front=steps)  # fmt: skip
    return f'<div class="charts">{scatter}</div>'


def sweep_page(folder: Path) -> str:
    """The whole report of a sweep directory."""
    frame = read_results(folder)
    columns = [str(column) for column in frame.columns]
    inputs = [("cells", count(len(frame))), ("columns", ", ".join(columns))]
    body = [section("Sweep", table(["input", "value"], inputs))]
    if COST in frame and QUEUE in frame:
        front = pareto_front(frame)
        body.append(section("Cost against p95 queue time", note(
            "One dot per cell; the Pareto front holds the cells no other cell beats on both cost and p95 queue."),
            _chart(frame, front), "<h3>Pareto front</h3>", table(columns, _cells(front))))  # fmt: skip
    else:
        body.append(section("Cost against p95 queue time", note(f"The table has no {COST} and {QUEUE} columns.")))
    shown = "" if len(frame) <= MAX_ROWS else f" (the first {MAX_ROWS} of {len(frame)})"
    body.append(section("Cells", note(f"{RESULTS}{shown}."), table(columns, _cells(frame))))
    return page(f"fleetsched report: sweep {folder.name}", body)


__all__ = ["RESULTS", "pareto_front", "read_results", "sweep_page"]
