"""The fill experiment's picture: unallocated GPU % against arrived workload, ours beside the authors'.

Imported only when a plot is drawn (matplotlib wants a writable cache folder when imported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display, and the same bytes on every machine

import matplotlib.pyplot as plt

from simulator.plots import METADATA

FIRST_PERCENT, LAST_PERCENT = 75, 120  # the paper's Fig. 9(a) window


def fill_curves(
    ours: Mapping[str, Sequence[float | None]], theirs: Mapping[str, Sequence[float | None]], path: Path
) -> None:
    """One solid line per policy (median over seeds), the authors' median dashed in the same colour."""
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    xs = list(range(FIRST_PERCENT, LAST_PERCENT + 1))
    for index, (policy, curve) in enumerate(ours.items()):
        colour = f"C{index}"
        axes.plot(xs, [_value(curve[x]) for x in xs], color=colour, label=f"{policy} (ours)")
        if policy in theirs:
            authors = [_value(theirs[policy][x]) for x in xs]
            axes.plot(xs, authors, color=colour, linestyle="--", label=f"{policy} (authors)")
    axes.set_xlabel("arrived workload (% of cluster GPUs)")
    axes.set_ylabel("unallocated GPUs (%)")
    axes.set_title("FGD packing experiment: median over seeds")
    axes.set_ylim(0, 25)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, metadata=METADATA)
    plt.close(figure)


def _value(cell: float | None) -> float:
    """A curve cell, NaN (a gap in the line) when the bin was empty."""
    return float("nan") if cell is None else cell
