"""Inline SVG charts for the HTML report: scatter, line and step charts and a stacked bar, as text.

The report is one file that opens with no network, so its charts are SVG elements written
here rather than images or a plotting library's scripts. Each function returns an `<svg>`
element (escaped text, fixed size, a legend) and draws nothing it was not given: an empty
series list gives a chart saying "no data".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 360
LEFT, RIGHT, TOP, BOTTOM = 72, 160, 34, 48  # margins: the legend sits on the right
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Series:
    """One named set of points; `step` draws a line that holds each value until the next point."""

    name: str
    points: Sequence[tuple[float, float]]
    step: bool = False

    def __post_init__(self) -> None:  # a run where no job started has no queue time (NaN): no point to draw
        object.__setattr__(self, "points", [(x, y) for x, y in self.points if math.isfinite(x) and math.isfinite(y)])


def thin(points: Sequence[tuple[float, float]], limit: int = 1500) -> list[tuple[float, float]]:
    """At most about `limit` points of a time series in x order: the x range cut into `limit` equal
    intervals, each shown by its first x and its highest y (peaks stay; a long replay's timeline
    of a hundred thousand rows stays a small page)."""
    if len(points) <= limit:
        return list(points)
    low, high = points[0][0], points[-1][0]
    width = (high - low) / limit or 1.0
    kept: dict[int, tuple[float, float]] = {}
    for x, y in points:
        slot = min(limit - 1, int((x - low) / width))
        first = kept.get(slot)
        kept[slot] = (x, y) if first is None else (first[0], max(first[1], y))
    return [kept[slot] for slot in sorted(kept)]


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0]
    if high <= low:  # one value: centre it in a range of its own size (or of 1 around zero)
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(multiple * power for multiple in (1, 2, 5, 10) if multiple * power >= raw)
    first = math.floor(low / step) * step
    return [first + index * step for index in range(math.ceil((high - first) / step) + 1)]


def label(value: float) -> str:
    """A tick's text: thousands with a k, whole numbers without decimals."""
    if abs(value) >= 10_000:
        return f"{value / 1000:,.0f}k"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class _Frame:
    """The plot area and the scale from data to pixels."""

    x_ticks: Sequence[float]
    y_ticks: Sequence[float]

    def x(self, value: float) -> float:
        low, high = self.x_ticks[0], self.x_ticks[-1]
        return LEFT + (value - low) / ((high - low) or 1.0) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return HEIGHT - BOTTOM - (value - low) / ((high - low) or 1.0) * (HEIGHT - TOP - BOTTOM)


def _open(title: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}"'
            f' role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>',
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
            f'<text x="{LEFT}" y="20" font-size="13" font-weight="bold">{escape(title)}</text>']  # fmt: skip


def _axes(frame: _Frame, x_title: str, y_title: str) -> list[str]:
    parts = []
    for value in frame.x_ticks:
        x = frame.x(value)
        parts.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{HEIGHT - BOTTOM}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{escape(label(value))}</text>')
    for value in frame.y_ticks:
        y = frame.y(value)
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(label(value))}</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
                 'fill="none" stroke="#444"/>')  # fmt: skip
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{HEIGHT - 10}" text-anchor="middle">'
                 f"{escape(x_title)}</text>")  # fmt: skip
    parts.append(f'<text transform="translate(16 {(TOP + HEIGHT - BOTTOM) / 2:.0f}) rotate(-90)" '
                 f'text-anchor="middle">{escape(y_title)}</text>')  # fmt: skip
    return parts


def _legend(names: Sequence[str]) -> list[str]:
    parts = []
    for index, name in enumerate(names):
        y = TOP + 14 + index * 18
        parts.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{y - 9}" width="10" height="10" fill="{color(index)}"/>')
        parts.append(f'<text x="{WIDTH - RIGHT + 28}" y="{y}">{escape(name)}</text>')
    return parts


def _empty(title: str) -> str:
    return "".join([*_open(title), f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no data</text>',
                    "</svg>"])  # fmt: skip


def _frame(series: Sequence[Series], y_from_zero: bool) -> _Frame:
    xs = [x for one in series for x, _ in one.points]
    ys = [y for one in series for _, y in one.points]
    return _Frame(ticks(min(xs), max(xs)), ticks(0.0 if y_from_zero else min(ys), max(ys)))


def scatter(title: str, series: Sequence[Series], x_title: str, y_title: str,
            means: Mapping[str, tuple[float, float]] | None = None,
            front: Sequence[tuple[float, float]] = ()) -> str:  # fmt: skip
    """Points per series (one per seed), each series' mean as a larger ringed marker, and a
    Pareto `front` (points by rising x) as the staircase bounding what it dominates."""
    if not any(one.points for one in series):
        return _empty(title)
    frame = _frame(series, y_from_zero=True)
    parts = [*_open(title), *_axes(frame, x_title, y_title)]
    if front:
        # From each point right to the next one's x at this point's y, then down: the corners
        # are the worst of two neighbours, so everything above and right of the line is beaten.
        corners = [front[0]]
        for (_, y_before), (x, y) in itertools.pairwise(front):
            corners += [(x, y_before), (x, y)]
        points = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in corners)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#222" stroke-width="1.4"/>')
    for index, one in enumerate(series):
        for x, y in one.points:
            parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="4" fill="{color(index)}" '
                         f'fill-opacity="0.6"><title>{escape(one.name)}: {label(x)}, {label(y)}</title></circle>')
        if means and one.name in means:
            x, y = means[one.name]
            parts.append(f'<circle cx="{frame.x(x):.1f}" cy="{frame.y(y):.1f}" r="8" fill="none" '
                         f'stroke="{color(index)}" stroke-width="2.5"/>')  # fmt: skip
    parts += [*_legend([one.name for one in series]), "</svg>"]
    return "".join(parts)


def lines(title: str, series: Sequence[Series], x_title: str, y_title: str, *, y_from_zero: bool = True) -> str:
    """A polyline per series (a step line where the series says so)."""
    drawn = [one for one in series if one.points]
    if not drawn:
        return _empty(title)
    frame = _frame(drawn, y_from_zero)
    parts = [*_open(title), *_axes(frame, x_title, y_title)]
    for index, one in enumerate(series):
        if not one.points:
            continue
        coordinates = []
        previous_y: float | None = None
        for x, y in one.points:
            if one.step and previous_y is not None:
                coordinates.append(f"{frame.x(x):.1f},{frame.y(previous_y):.1f}")
            coordinates.append(f"{frame.x(x):.1f},{frame.y(y):.1f}")
            previous_y = y
        parts.append(f'<polyline points="{" ".join(coordinates)}" fill="none" stroke="{color(index)}" '
                     'stroke-width="1.8"/>')  # fmt: skip
    parts += [*_legend([one.name for one in series]), "</svg>"]
    return "".join(parts)


def stacked_bar(title: str, parts_by_name: Mapping[str, float], unit: str) -> str:
    """One horizontal bar split into its named parts (zero parts are left out of the bar, kept in the legend)."""
    total = sum(parts_by_name.values())
    height = 40 + 18 * len(parts_by_name)
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}"'
           f' role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>']  # fmt: skip
    x = 10.0
    for index, (name, value) in enumerate(parts_by_name.items()):
        share = value / total if total > 0 else 0.0
        width = share * (WIDTH - 20)
        if width > 0:
            svg.append(f'<rect x="{x:.1f}" y="8" width="{width:.1f}" height="20" fill="{color(index)}">'
                       f"<title>{escape(name)}: {value:,.2f} {escape(unit)}</title></rect>")  # fmt: skip
        x += width
        y = 46 + index * 18
        svg.append(f'<rect x="10" y="{y - 9}" width="10" height="10" fill="{color(index)}"/>')
        svg.append(f'<text x="26" y="{y}">{escape(name)}: {value:,.2f} {escape(unit)} ({share:.1%})</text>')
    svg.append("</svg>")
    return "".join(svg)


__all__ = ["Series", "lines", "scatter", "stacked_bar", "thin", "ticks"]
