"""The comparison's pictures: total cost against p95 queue time, and the JCT distribution."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display, and the same bytes on every machine

import matplotlib.pyplot as plt

# No timestamps or version strings in the files, so the same runs draw the same bytes.
METADATA = {"Software": None}


def cost_vs_queue(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """One point per run: p95 queue time (minutes) against total cost, coloured by profile."""
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for profile in dict.fromkeys(row["profile"] for row in rows):
        mine = [row for row in rows if row["profile"] == profile and row["queue_p95_s"] is not None]  # none started
        minutes = [row["queue_p95_s"] / 60 for row in mine]
        axes.scatter(minutes, [row["cost_usd"] for row in mine], label=profile, s=40)
    _finish(figure, axes, path, "p95 queue time (minutes)", "total cost (USD)",
            title="Cost against queueing, one point per profile and seed")


def jct_cdf(jcts: Mapping[str, Sequence[float]], path: Path) -> None:
    """The empirical distribution of job completion times per profile (all seeds together)."""
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for profile, values in jcts.items():
        ordered = sorted(values)
        if ordered:
            axes.step([v / 3600 for v in ordered], [(i + 1) / len(ordered) for i in range(len(ordered))],
                      where="post", label=profile)
    axes.set_xscale("symlog", linthresh=0.1)
    _finish(figure, axes, path, "job completion time (hours)", "fraction of jobs", title="JCT CDF")


def _finish(figure: Any, axes: Any, path: Path, xlabel: str, ylabel: str, *, title: str) -> None:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:  # nothing drawn (no job started, or none ended): no legend to show
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, metadata=METADATA)
    plt.close(figure)
