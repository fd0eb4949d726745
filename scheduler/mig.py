"""MIG geometry: legal starts, create/destroy, layout validation and maximal layouts.

A MIG-enabled GPU is a row of memory slices (8 on A100/H100/H200/B200, 4 on A30) and a budget
of compute slices (7, or 4). A GPU instance of a profile occupies `memory_slices` consecutive
memory slices beginning at one of the profile's legal starts, and uses `compute_slices` of the
budget. A layout is legal when every instance sits at a legal start, no two overlap on the
memory-slice axis, the compute slices add up to at most the budget, at most one instance is a
`+me` (media extensions) profile, and no profile exceeds its maximum count.

Worked example on an A100-40GB: `4g.20gb@0` takes memory slices 0-3 and 4 compute slices;
`3g.20gb@4` takes slices 4-7 and 3 compute slices: 7 of 7 compute, 8 of 8 memory, legal.
`2g.10gb@4` would then overlap slices 4-5, and a `1g.5gb` could start nowhere.

Everything here is pure: layouts are tuples of `MigInstance`, never mutated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from scheduler.catalog import MigGeometry, MigProfileSpec
from scheduler.errors import InputError


@dataclass(frozen=True, slots=True, order=True)
class MigInstance:
    """One GPU instance: a profile at a start on the memory-slice axis."""

    start: int
    profile: str

    def __str__(self) -> str:
        return f"{self.profile}@{self.start}"


Layout = tuple[MigInstance, ...]


class MigLayoutError(InputError):
    """A MIG layout or operation that breaks the GPU's geometry."""


def _mask(spec: MigProfileSpec, start: int) -> int:
    return ((1 << spec.memory_slices) - 1) << start


def problems(geometry: MigGeometry, layout: Sequence[MigInstance]) -> list[str]:
    """Every reason `layout` is illegal on a GPU with this geometry (empty when legal)."""
    found: list[str] = []
    used = 0
    compute = 0
    media = 0
    counts: dict[str, int] = {}
    for instance in sorted(layout):
        spec = geometry.profiles.get(instance.profile)
        if spec is None:
            found.append(f"{instance}: unknown profile; legal: {', '.join(geometry.profiles)}")
            continue
        if instance.start not in spec.starts:
            legal = ", ".join(str(start) for start in spec.starts)
            found.append(f"{instance}: illegal start {instance.start}; {spec.name} may start at {legal}")
        else:  # an instance at an illegal start still counts below: every reason is told, not the first
            mask = _mask(spec, instance.start)
            if used & mask:
                found.append(f"{instance}: overlaps another instance on memory slices {_slices(used & mask)}")
            used |= mask
        compute += spec.compute_slices
        media += spec.media_extensions
        counts[spec.name] = counts.get(spec.name, 0) + 1
    if compute > geometry.compute_slices:
        found.append(f"uses {compute} compute slices; the GPU has {geometry.compute_slices}")
    if media > 1:
        found.append(f"has {media} +me instances; at most one per GPU")
    for name, count in sorted(counts.items()):
        limit = geometry.profiles[name].max_count
        if count > limit:
            found.append(f"has {count} x {name}; at most {limit}")
    return found


def _slices(mask: int) -> str:
    return ",".join(str(bit) for bit in range(mask.bit_length()) if mask >> bit & 1)


def check(geometry: MigGeometry, layout: Sequence[MigInstance]) -> None:
    """Raises MigLayoutError with every problem when `layout` is illegal."""
    found = problems(geometry, layout)
    if found:
        raise MigLayoutError("; ".join(found))


def free_starts(geometry: MigGeometry, layout: Sequence[MigInstance], profile: str) -> tuple[int, ...]:
    """The starts at which an instance of `profile` can be created beside a legal `layout`."""
    geometry.profile(profile)
    return options(geometry, tuple(sorted(layout)))[profile]


@lru_cache(maxsize=1 << 16)
def options(geometry: MigGeometry, layout: Layout) -> Mapping[str, tuple[int, ...]]:
    """Every profile's free starts beside a legal, sorted `layout`.

    Cached, because a cluster's GPUs go through the same few layouts over and over.
    """
    used = 0
    compute = 0
    media = 0
    counts: dict[str, int] = {}
    for instance in layout:
        other = geometry.profiles[instance.profile]
        used |= _mask(other, instance.start)
        compute += other.compute_slices
        media += other.media_extensions
        counts[other.name] = counts.get(other.name, 0) + 1
    found: dict[str, tuple[int, ...]] = {}
    for name, spec in geometry.profiles.items():
        blocked = (
            compute + spec.compute_slices > geometry.compute_slices
            or counts.get(name, 0) >= spec.max_count
            or (spec.media_extensions and media > 0)
        )
        found[name] = () if blocked else tuple(start for start in spec.starts if not used & _mask(spec, start))
    return MappingProxyType(found)


def create(
    geometry: MigGeometry, layout: Sequence[MigInstance], profile: str, start: int | None = None
) -> Layout:
    """The layout with one more instance of `profile`, at `start` or the first free start.

    Raises MigLayoutError when the profile cannot be created there (or anywhere).
    """
    starts = free_starts(geometry, layout, profile)
    if start is None:
        if not starts:
            raise MigLayoutError(f"no free start for {profile} beside {format_layout(layout) or 'nothing'}")
        start = starts[0]
    elif start not in starts:
        reasons = problems(geometry, (*layout, MigInstance(start, profile)))
        raise MigLayoutError(f"cannot create {profile}@{start}: {'; '.join(reasons)}")
    return tuple(sorted((*layout, MigInstance(start, profile))))


def destroy(layout: Sequence[MigInstance], instance: MigInstance) -> Layout:
    """The layout without `instance`; raises MigLayoutError when it is not there."""
    if instance not in layout:
        raise MigLayoutError(f"no instance {instance} in {format_layout(layout) or 'an empty layout'}")
    remaining = list(layout)
    remaining.remove(instance)
    return tuple(remaining)


def maximal_layouts(geometry: MigGeometry, profiles: Iterable[str] | None = None) -> list[Layout]:
    """Every legal layout of the given profiles to which no further instance can be added.

    Profiles default to all of the GPU's. Layouts are listed in a stable order (by their
    instances, each sorted by start). For the A100-40GB with 1g.5gb, 2g.10gb, 3g.20gb, 4g.20gb
    and 7g.40gb this gives the 19 configurations of NVIDIA's MIG user guide.
    """
    names = list(geometry.profiles) if profiles is None else list(dict.fromkeys(profiles))
    for name in names:
        geometry.profile(name)
    candidates = sorted(MigInstance(start, name) for name in names for start in geometry.profiles[name].starts)
    found: list[Layout] = []

    def extend(layout: Layout, after: int) -> None:
        addable = [c for c in candidates if c.start in free_starts(geometry, layout, c.profile)]
        if not addable:
            found.append(layout)
            return
        for position in range(after, len(candidates)):
            candidate = candidates[position]
            if candidate in addable:
                extend(tuple(sorted((*layout, candidate))), position + 1)

    extend((), 0)
    return sorted(set(found))


def parse_layout(text: str) -> Layout:
    """Reads `3g.40gb@0,3g.40gb@4` into a layout (not yet checked against a GPU).

    Raises MigLayoutError on text that is not a comma-separated list of `profile@start`.
    """
    layout: list[MigInstance] = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        profile, at, start = part.partition("@")
        digits = start.strip()
        if not at or not (digits.isascii() and digits.isdigit()) or not profile.strip():
            raise MigLayoutError(f"{part!r} is not profile@start, e.g. 3g.40gb@4")
        layout.append(MigInstance(int(digits), profile.strip()))
    return tuple(sorted(layout))


def format_layout(layout: Sequence[MigInstance]) -> str:
    """The inverse of parse_layout."""
    return ",".join(str(instance) for instance in sorted(layout))
