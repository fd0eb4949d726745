"""The HTML report's building blocks: the page and its CSS, tables, number formats, chart data.

Shared by the run report (`fleetsched.report`) and the comparison report
(`fleetsched.report_comparison`). Numbers are formatted in one place so that a reader, and the
test that checks the page holds the summary's figures, see them the same way everywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from html import escape

from fleetsched import report_svg
from fleetsched.frames import Run
from simulator.rundir import fleetsched_version

Cell = str | int | float | None
IDLE_CAUSES = {"booting": "booting (provisioning)", "reserved_unused": "reserved and unused",
               "waiting_for_release": "waiting for release", "fragmentation": "fragmentation (jobs waited)",
               "no_demand": "no demand"}  # fmt: skip

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; } th { background: #f3f3f3; text-align: left; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: .9em; max-width: 60em; }
svg { display: block; margin: .5em 0 1em; font-size: 11px; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
"""


#: A formatted figure (`$1,234.56`, `-$3.20`, `57.8%`, `8,481.9 ± 120.0`, `[-$1.00, $2.00]`), right-aligned; not an id
#: that starts with a digit.
_ONE = r"-?\$?-?[\d,]+(\.\d+)?%?"
FIGURE = re.compile(rf"\[{_ONE}, {_ONE}\]|{_ONE}( ± {_ONE})?")


def money(value: float | None) -> str:
    """Dollars as the report shows them: `$1,234.56`."""
    return "—" if value is None else f"${value:,.2f}"


def number(value: float | None, decimals: int = 1) -> str:
    """A quantity as the report shows it: thousands separated, `decimals` places."""
    return "—" if value is None or math.isnan(value) else f"{value:,.{decimals}f}"  # NaN: none to give


def count(value: float | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """An HTML table; numbers (already formatted or not) right-aligned."""
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text = "—" if cell is None else str(cell)
            numeric = isinstance(cell, int | float) or FIGURE.fullmatch(text) is not None
            cells.append(f'<td class="number">{escape(text)}</td>' if numeric else f"<td>{escape(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, body: Sequence[str]) -> str:
    """The whole document."""
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>{''.join(body)}"
            f'<p class="note">Written by fleetsched {escape(fleetsched_version())}.</p></body></html>\n')  # fmt: skip


def jct_points(values: Sequence[float]) -> list[tuple[float, float]]:
    """The empirical CDF of `values` (at most 400 points, evenly spread over the ranks)."""
    ordered = sorted(value for value in values if not math.isnan(value))  # unfinished jobs have no JCT
    if not ordered:
        return []
    stride = max(1, len(ordered) // 400)
    ranks = [*range(0, len(ordered), stride), len(ordered) - 1]
    return [(ordered[rank], (rank + 1) / len(ordered)) for rank in sorted(set(ranks))]


def timeline_series(run: Run, column: str, end_s: float) -> list[report_svg.Series]:
    """Per pool, `column` of the timeline over hours, each held to the run's end at `end_s`
    (thinned to the highest value per interval: `report_svg.thin`)."""
    series = []
    for pool, rows in run.timeline.groupby("pool", sort=True):
        points = list(zip((rows["t_s"] / 3600.0).tolist(), rows[column].astype(float).tolist(), strict=True))
        if points and end_s / 3600.0 > points[-1][0]:
            points.append((end_s / 3600.0, points[-1][1]))
        series.append(report_svg.Series(str(pool), report_svg.thin(points), step=True))
    return series


__all__ = ["CSS", "IDLE_CAUSES", "count", "jct_points", "money", "note", "number", "page", "percent", "section",
           "table", "timeline_series"]
