"""The authors' side of a `fleetsched fill` run: their rows of the same workload, tune and seeds, and their medians.

Ours is a median over the seeds run, so theirs must be over the same seeds: the authors' file
holds seeds 42..51, and their median over all ten (BestFit 7.09 on openb default) is not their
figure for seed 42 alone (7.06). A seed that was run but that the authors lack is named, never
made up for by their other seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulator.fill_output import CurveRow, median_curve, medians


@dataclass(frozen=True, slots=True)
class AuthorsMedians:
    """Per policy the authors' median over the seeds run that they have, and which seeds those are."""

    workload: str
    tune: float
    at_100: Mapping[str, float | None]  # unallocated GPU % at 100 % arrived; absent: no row of theirs
    curves: Mapping[str, Sequence[float | None]]  # 100 minus their median cell, 0..130 % arrived
    seeds: Mapping[str, tuple[int, ...]]  # the seeds each median is over
    lacking: Mapping[str, tuple[int, ...]]  # seeds run that the authors do not have

    def as_json(self) -> dict[str, object]:
        """The summary.json block: their medians and, per policy, the seeds each is over."""
        return {
            "unallocated_gpu_pct_at_100_median": dict(self.at_100),
            "seeds": {policy: list(seeds) for policy, seeds in self.seeds.items()},
            "seeds_lacking": {policy: list(seeds) for policy, seeds in self.lacking.items() if seeds},
        }

    def notes(self) -> list[str]:
        """One line per group of policies the authors lack seeds for (none when they have every seed run)."""
        grouped: dict[tuple[int, ...], list[str]] = {}
        for policy, lacking in self.lacking.items():
            if lacking:
                grouped.setdefault(lacking, []).append(policy)
        lines = []
        for lacking, policies in grouped.items():
            had = self.seeds[policies[0]]
            over = f"their median is over seed{'s' if len(had) > 1 else ''} {seed_text(had)}" if had else \
                "no authors' figure"
            lines.append(f"the authors' results ({self.workload}, tune {self.tune}) lack seed"
                         f"{'s' if len(lacking) > 1 else ''} {seed_text(lacking)} for {', '.join(policies)}: {over}")
        return lines

    def footer(self, seeds: Sequence[int]) -> str:
        """The line under the table saying which seeds the authors' column is over."""
        if all(not lacking for lacking in self.lacking.values()):
            return f"authors: their median over the same seeds, {seed_text(seeds)}"
        if not any(self.seeds.values()):
            return "authors: none of their rows has a seed run (see the lines above)"
        return "authors: their median over the seeds run that they have (see the lines above)"


def authors_medians(
    rows: Sequence[CurveRow], workload: str, tune: float, policies: Sequence[str], seeds: Sequence[int]
) -> AuthorsMedians:
    """The authors' rows of `workload`, `tune`, and the seeds run, per policy in `policies`."""
    wanted = set(seeds)
    at_100: dict[str, float | None] = {}
    curves: dict[str, Sequence[float | None]] = {}
    had: dict[str, tuple[int, ...]] = {}
    lacking: dict[str, tuple[int, ...]] = {}
    for policy in policies:
        chosen = [row for row in rows
                  if row.workload == workload and row.tune == tune and row.policy == policy and row.seed in wanted]
        had[policy] = tuple(sorted({row.seed for row in chosen}))
        lacking[policy] = tuple(seed for seed in seeds if seed not in had[policy])
        if chosen:
            at_100[policy] = medians(chosen).get(policy)
            curves[policy] = median_curve(chosen, policy)
    return AuthorsMedians(workload, tune, at_100, curves, had, lacking)


def seed_text(seeds: Sequence[int]) -> str:
    """Seeds as runs of consecutive numbers: 42-51, or 42,44-45."""
    ordered = sorted(set(seeds))
    parts: list[str] = []
    start = previous = ordered[0] if ordered else 0
    for seed in [*ordered[1:], None]:
        if seed is not None and seed == previous + 1:
            previous = seed
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if seed is not None:
            start = previous = seed
    return ",".join(parts) if ordered else "none"


def lookup(authors: AuthorsMedians | None) -> tuple[Mapping[str, float | None], Mapping[str, Sequence[float | None]]]:
    """The table's and the plot's view of the authors: empty without --expected."""
    if authors is None:
        return {}, {}
    return authors.at_100, authors.curves
