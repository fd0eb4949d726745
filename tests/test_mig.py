"""MIG geometry: legal starts, layout checks, create/destroy, maximal layouts, layout text.

Expected values come from `shared/research/finops-data.md` section 1: NVIDIA's placement tables
and `nvidia-smi mig -lgipp` outputs (1.1, 1.2) and the combination rules and known-good layouts (1.3).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.catalog import MigGeometry, MigProfileSpec, default_catalog
from scheduler.errors import InputError
from scheduler.mig import (
    MigInstance,
    MigLayoutError,
    check,
    create,
    destroy,
    format_layout,
    free_starts,
    maximal_layouts,
    options,
    parse_layout,
    problems,
)


def _geometry(name: str) -> MigGeometry:
    geometry = default_catalog().resolve(name).mig
    assert geometry is not None, name
    return geometry


A100 = _geometry("A100-40GB")
H100 = _geometry("H100-80GB")
A30 = _geometry("A30")

# The five profiles of NVIDIA's MIG user guide figure of A100-40GB configurations, and their
# equivalents on the other 7-compute/8-memory-slice parts.
FIGURE_PROFILES = {
    "A100-40GB": ("1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB": ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-NVL": ("1g.12gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"),
    "H200": ("1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
    "B200": ("1g.23gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"),
    "GB200": ("1g.23gb", "2g.47gb", "3g.93gb", "4g.93gb", "7g.186gb"),
}


def L(text: str) -> tuple[MigInstance, ...]:  # noqa: N802 - short builder for readable tables
    return parse_layout(text)


def _legal_subsets(geometry: MigGeometry, names: Sequence[str]) -> list[tuple[MigInstance, ...]]:
    """Every legal layout of the named profiles, by brute force on `problems` alone.

    Legality is closed under removing instances, so pruning illegal prefixes loses nothing.
    """
    candidates = sorted(MigInstance(start, name) for name in names for start in geometry.profiles[name].starts)
    found: list[tuple[MigInstance, ...]] = []

    def walk(index: int, chosen: tuple[MigInstance, ...]) -> None:
        if index == len(candidates):
            found.append(chosen)
            return
        walk(index + 1, chosen)
        grown = (*chosen, candidates[index])
        if not problems(geometry, grown):
            walk(index + 1, grown)

    walk(0, ())
    return found


def _brute_force_maximal(geometry: MigGeometry, names: Sequence[str]) -> list[tuple[MigInstance, ...]]:
    candidates = [MigInstance(start, name) for name in names for start in geometry.profiles[name].starts]
    return sorted(
        layout
        for layout in _legal_subsets(geometry, names)
        if all(problems(geometry, (*layout, candidate)) for candidate in candidates)
    )


def _brute_force_free(geometry: MigGeometry, layout: Sequence[MigInstance], profile: str) -> tuple[int, ...]:
    """A start is free iff the layout with one more instance there has no problem."""
    return tuple(
        start
        for start in range(geometry.memory_slices + 1)
        if not problems(geometry, (*layout, MigInstance(start, profile)))
    )


# --- legal starts: nvidia-smi mig -lgipp --------------------------------------------------------

LGIPP = {
    # NVIDIA MIG user guide, "Getting Started" (A100-40GB, profile IDs 19/20/15/14/9/5/0)
    "A100-40GB": {
        "1g.5gb": {0, 1, 2, 3, 4, 5, 6},
        "1g.5gb+me": {0, 1, 2, 3, 4, 5, 6},
        "1g.10gb": {0, 2, 4, 6},
        "2g.10gb": {0, 2, 4},
        "3g.20gb": {0, 4},
        "4g.20gb": {0},
        "7g.40gb": {0},
    },
    # the identical ID/placement list with the 80 GB names (Dataproc init script, 20241220)
    "H100-80GB": {
        "1g.10gb": {0, 1, 2, 3, 4, 5, 6},
        "1g.10gb+me": {0, 1, 2, 3, 4, 5, 6},
        "1g.20gb": {0, 2, 4, 6},
        "2g.20gb": {0, 2, 4},
        "3g.40gb": {0, 4},
        "4g.40gb": {0},
        "7g.80gb": {0},
    },
    # NVIDIA's H100 NVL blog text
    "H100-NVL": {
        "1g.12gb": {0, 1, 2, 3, 4, 5, 6},
        "1g.12gb+me": {0, 1, 2, 3, 4, 5, 6},
        "1g.24gb": {0, 2, 4, 6},
        "2g.24gb": {0, 2, 4},
        "3g.47gb": {0, 4},
        "4g.47gb": {0},
        "7g.94gb": {0},
    },
    # two public A30 walkthroughs: 14:{0,1,2,3}:1, 21:{0,1,2,3}:1, 5:{0,2}:2, 6:{0,2}:2, 0:{0}:4
    "A30": {
        "1g.6gb": {0, 1, 2, 3},
        "1g.6gb+me": {0, 1, 2, 3},
        "2g.12gb": {0, 2},
        "2g.12gb+me": {0, 2},
        "4g.24gb": {0},
    },
}


@pytest.mark.parametrize(
    ("gpu", "profile", "starts"),
    [(gpu, profile, starts) for gpu, table in LGIPP.items() for profile, starts in table.items()],
)
def test_legal_starts_match_lgipp(gpu: str, profile: str, starts: set[int]) -> None:
    geometry = _geometry(gpu)
    assert set(geometry.profiles[profile].starts) == starts
    # on an empty GPU every legal start is free
    assert set(free_starts(geometry, (), profile)) == starts
    assert set(_brute_force_free(geometry, (), profile)) == starts


@pytest.mark.parametrize("gpu", LGIPP)
def test_lgipp_lists_every_profile(gpu: str) -> None:
    assert set(_geometry(gpu).profiles) == set(LGIPP[gpu])


def test_options_on_empty_and_full_gpu() -> None:
    empty = options(A100, ())
    assert isinstance(empty, MappingProxyType)
    assert {name: set(starts) for name, starts in empty.items()} == LGIPP["A100-40GB"]
    full = options(A100, L("7g.40gb@0"))
    assert set(full) == set(A100.profiles)
    assert all(starts == () for starts in full.values())


# --- maximal layouts ------------------------------------------------------------------------------


def test_a100_40gb_has_the_19_configurations_of_nvidias_figure() -> None:
    layouts = maximal_layouts(A100, FIGURE_PROFILES["A100-40GB"])
    # NVIDIA's MIG user guide figure shows 19 configurations. Before driver R510 a (4 memory, 4 compute)
    # GI could not be combined with a (4 memory, 3 compute) GI, which left 18; R510+ allows 4g@0 + 3g@4.
    assert len(layouts) == 19
    assert len(set(layouts)) == 19
    pre_r510 = [
        layout for layout in layouts if not {"4g.20gb", "3g.20gb"} <= {instance.profile for instance in layout}
    ]
    assert len(pre_r510) == 18


@pytest.mark.parametrize("gpu", list(FIGURE_PROFILES))
def test_equivalent_profiles_give_19_layouts_on_every_8_slice_gpu(gpu: str) -> None:
    geometry = _geometry(gpu)
    names = FIGURE_PROFILES[gpu]
    layouts = maximal_layouts(geometry, names)
    assert len(layouts) == 19
    # the same shapes as the A100-40GB figure, profile for profile
    rename = dict(zip(names, FIGURE_PROFILES["A100-40GB"], strict=True))
    renamed = sorted(tuple(sorted(MigInstance(i.start, rename[i.profile]) for i in layout)) for layout in layouts)
    assert renamed == maximal_layouts(A100, FIGURE_PROFILES["A100-40GB"])


@pytest.mark.parametrize(
    "text",
    [
        "7g.40gb@0",
        "3g.20gb@0,3g.20gb@4",
        "4g.20gb@0,3g.20gb@4",
        "1g.5gb@0,1g.5gb@1,1g.5gb@2,1g.5gb@3,1g.5gb@4,1g.5gb@5,1g.5gb@6",
        # mig-parted all-balanced: 2 x 1g + 2g + 3g
        "1g.5gb@0,1g.5gb@1,2g.10gb@2,3g.20gb@4",
        "2g.10gb@0,1g.5gb@2,1g.5gb@3,3g.20gb@4",
        # the guide's -cgi 19,14,5 example as placed by the driver
        "4g.20gb@0,2g.10gb@4,1g.5gb@6",
        # not all memory used, but nothing more fits: slice 7 is reachable only by 3g@4 or 7g
        "3g.20gb@0,2g.10gb@4,1g.5gb@6",
        "2g.10gb@0,2g.10gb@2,2g.10gb@4,1g.5gb@6",
    ],
)
def test_known_layouts_are_among_the_maximal_ones(text: str) -> None:
    assert L(text) in maximal_layouts(A100, FIGURE_PROFILES["A100-40GB"])


@pytest.mark.parametrize(
    "text",
    [
        "3g.20gb@0",  # a 3g fits at 4
        "1g.5gb@0,1g.5gb@1,1g.5gb@2,1g.5gb@3,1g.5gb@4,1g.5gb@5",  # a 1g fits at 6
        "4g.20gb@0,2g.10gb@4",  # a 1g fits at 6
        "",
    ],
)
def test_non_maximal_layouts_are_not_listed(text: str) -> None:
    assert L(text) not in maximal_layouts(A100, FIGURE_PROFILES["A100-40GB"])


def test_all_balanced_is_maximal_on_every_8_slice_gpu() -> None:
    for gpu, names in FIGURE_PROFILES.items():
        one, two, three = names[0], names[1], names[2]
        balanced = [
            layout
            for layout in maximal_layouts(_geometry(gpu), names)
            if Counter(instance.profile for instance in layout) == Counter({one: 2, two: 1, three: 1})
        ]
        assert len(balanced) == 2, gpu  # 3g@4 with 2g at 0 or at 2


@pytest.mark.parametrize("gpu", ["A100-40GB", "H100-80GB", "A30"])
def test_every_maximal_layout_is_legal_and_maximal(gpu: str) -> None:
    geometry = _geometry(gpu)
    names = FIGURE_PROFILES.get(gpu, tuple(geometry.profiles))
    layouts = maximal_layouts(geometry, names)
    assert layouts
    for layout in layouts:
        assert problems(geometry, layout) == [], layout
        assert list(layout) == sorted(layout)
        for name in names:
            assert free_starts(geometry, layout, name) == (), (layout, name)
            assert _brute_force_free(geometry, layout, name) == (), (layout, name)
        assert {instance.profile for instance in layout} <= set(names)


@pytest.mark.parametrize(
    ("gpu", "names"),
    [
        ("A100-40GB", FIGURE_PROFILES["A100-40GB"]),
        ("H100-80GB", FIGURE_PROFILES["H100-80GB"]),
        ("A100-40GB", tuple(A100.profiles)),
        ("H100-80GB", tuple(H100.profiles)),
        ("A30", tuple(A30.profiles)),
        ("A30", ("1g.6gb", "2g.12gb", "4g.24gb")),
        ("A100-40GB", ("1g.10gb", "3g.20gb")),
        ("A100-40GB", ("7g.40gb",)),
    ],
)
def test_maximal_layouts_agree_with_brute_force(gpu: str, names: tuple[str, ...]) -> None:
    geometry = _geometry(gpu)
    assert maximal_layouts(geometry, names) == _brute_force_maximal(geometry, names)


def test_maximal_layouts_default_to_every_profile() -> None:
    assert maximal_layouts(A30) == maximal_layouts(A30, A30.profiles)
    assert maximal_layouts(A100) == _brute_force_maximal(A100, tuple(A100.profiles))
    # with +me: one 1g.5gb+me replaces any one 1g.5gb, so there are more layouts than without
    assert len(maximal_layouts(A100)) > len(maximal_layouts(A100, [p for p in A100.profiles if "+me" not in p]))


def test_a30_maximal_layouts_without_media_extensions() -> None:
    assert [format_layout(layout) for layout in maximal_layouts(A30, ["1g.6gb", "2g.12gb", "4g.24gb"])] == [
        "1g.6gb@0,1g.6gb@1,1g.6gb@2,1g.6gb@3",
        "1g.6gb@0,1g.6gb@1,2g.12gb@2",
        "2g.12gb@0,1g.6gb@2,1g.6gb@3",
        "2g.12gb@0,2g.12gb@2",
        "4g.24gb@0",
    ]


def test_maximal_layouts_order_is_deterministic() -> None:
    names = FIGURE_PROFILES["A100-40GB"]
    first = maximal_layouts(A100, names)
    assert first == sorted(first)
    assert maximal_layouts(A100, names) == first
    assert maximal_layouts(A100, tuple(reversed(names))) == first
    assert maximal_layouts(A100, [*names, *names]) == first
    assert first[0] == L("1g.5gb@0,1g.5gb@1,1g.5gb@2,1g.5gb@3,1g.5gb@4,1g.5gb@5,1g.5gb@6")
    assert first[-1] == L("7g.40gb@0")


def test_maximal_layouts_of_an_unknown_profile_raise() -> None:
    with pytest.raises(InputError, match=r"unknown MIG profile '3g\.40gb'"):
        maximal_layouts(A100, ["1g.5gb", "3g.40gb"])


# --- problems and check -----------------------------------------------------------------------------

KNOWN_GOOD = [
    # finops-data.md 1.3: mig-parted all-balanced (2 x 1g + 2g + 3g)
    ("A100-40GB", "1g.5gb@0,1g.5gb@1,2g.10gb@2,3g.20gb@4"),
    ("A100-80GB", "1g.10gb@0,1g.10gb@1,2g.20gb@2,3g.40gb@4"),
    ("H100-80GB", "1g.10gb@0,1g.10gb@1,2g.20gb@2,3g.40gb@4"),
    ("GB200", "1g.23gb@0,1g.23gb@1,2g.47gb@2,3g.93gb@4"),
    # the guide's -cgi 19,14,5 run: 1g.5gb at 6:1, 2g.10gb at 4:2, 4g.20gb at 0:4
    ("A100-40GB", "4g.20gb@0,2g.10gb@4,1g.5gb@6"),
    # -cgi 9,9: two 3g at 0:4 and 4:4
    ("A100-40GB", "3g.20gb@0,3g.20gb@4"),
    ("H100-80GB", "3g.40gb@0,3g.40gb@4"),
    # 4g + 3g, legal since R510
    ("A100-40GB", "4g.20gb@0,3g.20gb@4"),
    ("A100-40GB", "1g.5gb@0,1g.5gb@1,1g.5gb@2,1g.5gb@3,1g.5gb@4,1g.5gb@5,1g.5gb@6"),
    ("A100-40GB", "1g.5gb+me@0,1g.5gb@1,1g.5gb@2,1g.5gb@3,1g.5gb@4,1g.5gb@5,1g.5gb@6"),
    ("A100-40GB", "1g.10gb@0,1g.10gb@2,1g.10gb@4,1g.10gb@6"),
    ("A100-40GB", "7g.40gb@0"),
    ("H100-80GB", "7g.80gb@0"),
    ("H100-80GB", "1g.20gb@0,2g.20gb@2,2g.20gb@4,1g.10gb+me@6"),
    ("A30", "1g.6gb@0,1g.6gb@1,1g.6gb@2,1g.6gb@3"),
    ("A30", "2g.12gb+me@0,1g.6gb@2,1g.6gb@3"),
    ("A30", "2g.12gb@0,2g.12gb@2"),
    ("A30", "4g.24gb@0"),
    ("A100-40GB", ""),
]


@pytest.mark.parametrize(("gpu", "text"), KNOWN_GOOD)
def test_known_good_layouts_pass(gpu: str, text: str) -> None:
    geometry = _geometry(gpu)
    layout = L(text)
    assert problems(geometry, layout) == []
    assert problems(geometry, tuple(reversed(layout))) == []
    check(geometry, layout)


ALL_A100 = "1g.5gb, 1g.5gb+me, 1g.10gb, 2g.10gb, 3g.20gb, 4g.20gb, 7g.40gb"

ILLEGAL = [
    ("A100-40GB", "3g.20gb@2", ["3g.20gb@2: illegal start 2; 3g.20gb may start at 0, 4"]),
    ("A100-40GB", "1g.5gb@7", ["1g.5gb@7: illegal start 7; 1g.5gb may start at 0, 1, 2, 3, 4, 5, 6"]),
    ("A100-40GB", "2g.10gb@6", ["2g.10gb@6: illegal start 6; 2g.10gb may start at 0, 2, 4"]),
    ("A100-40GB", "2g.10gb@1", ["2g.10gb@1: illegal start 1; 2g.10gb may start at 0, 2, 4"]),
    ("A100-40GB", "4g.20gb@4", ["4g.20gb@4: illegal start 4; 4g.20gb may start at 0"]),
    ("H100-80GB", "7g.80gb@4", ["7g.80gb@4: illegal start 4; 7g.80gb may start at 0"]),
    ("A30", "2g.12gb@1", ["2g.12gb@1: illegal start 1; 2g.12gb may start at 0, 2"]),
    ("A100-40GB", "3g.20gb@0,2g.10gb@2", ["2g.10gb@2: overlaps another instance on memory slices 2,3"]),
    ("A100-40GB", "1g.10gb@6,3g.20gb@4", ["1g.10gb@6: overlaps another instance on memory slices 6,7"]),
    ("A100-40GB", "1g.5gb@3,1g.5gb@3", ["1g.5gb@3: overlaps another instance on memory slices 3"]),
    ("A30", "2g.12gb@2,1g.6gb@3", ["1g.6gb@3: overlaps another instance on memory slices 3"]),
    # Every memory slice carries at most one compute slice (and slice 7 none), so on the real parts going
    # over the compute budget always comes with an overlap; SYNTHETIC below isolates the compute check.
    (
        "A100-40GB",
        "4g.20gb@0,2g.10gb@4,2g.10gb@2",
        ["2g.10gb@2: overlaps another instance on memory slices 2,3", "uses 8 compute slices; the GPU has 7"],
    ),
    (
        "A100-40GB",
        "7g.40gb@0,1g.5gb@3",
        ["1g.5gb@3: overlaps another instance on memory slices 3", "uses 8 compute slices; the GPU has 7"],
    ),
    (
        "A30",
        "4g.24gb@0,4g.24gb@0",
        [
            "4g.24gb@0: overlaps another instance on memory slices 0,1,2,3",
            "uses 8 compute slices; the GPU has 4",
            "has 2 x 4g.24gb; at most 1",
        ],
    ),
    # two +me instances of different profiles: only the +me rule is broken
    ("A30", "1g.6gb+me@0,2g.12gb+me@2", ["has 2 +me instances; at most one per GPU"]),
    (
        "A100-40GB",
        "1g.5gb+me@0,1g.5gb+me@1",
        ["has 2 +me instances; at most one per GPU", "has 2 x 1g.5gb+me; at most 1"],
    ),
    (
        "A100-40GB",
        "3g.20gb@0,3g.20gb@4,3g.20gb@4",
        [
            "3g.20gb@4: overlaps another instance on memory slices 4,5,6,7",
            "uses 9 compute slices; the GPU has 7",
            "has 3 x 3g.20gb; at most 2",
        ],
    ),
    ("A100-40GB", "3g.40gb@0", [f"3g.40gb@0: unknown profile; legal: {ALL_A100}"]),
    ("A100-40GB", "5g.25gb@0,7g.40gb@0", [f"5g.25gb@0: unknown profile; legal: {ALL_A100}"]),
    (
        "A100-40GB",
        "3g.20gb@2,3g.20gb@0,2g.10gb@0",
        [
            "3g.20gb@0: overlaps another instance on memory slices 0,1",
            "3g.20gb@2: illegal start 2; 3g.20gb may start at 0, 4",
            "uses 8 compute slices; the GPU has 7",  # the misplaced instance still counts
        ],
    ),
]


@pytest.mark.parametrize(("gpu", "text", "reasons"), ILLEGAL)
def test_illegal_layouts_are_refused_with_reasons(gpu: str, text: str, reasons: list[str]) -> None:
    geometry = _geometry(gpu)
    layout = L(text)
    assert problems(geometry, layout) == reasons
    assert problems(geometry, tuple(reversed(layout))) == reasons
    with pytest.raises(MigLayoutError) as raised:
        check(geometry, layout)
    assert str(raised.value) == "; ".join(reasons)
    assert isinstance(raised.value, InputError)


def _spec(name: str, compute: int, memory: int, max_count: int, starts: tuple[int, ...]) -> MigProfileSpec:
    return MigProfileSpec(
        name=name, compute_slices=compute, memory_slices=memory, memory_gb=memory, max_count=max_count, starts=starts
    )


# A made-up GPU where compute runs out before memory does, and a profile's count limit is below what fits.
SYNTHETIC = MigGeometry(
    compute_slices=3,
    memory_slices=4,
    profiles=MappingProxyType({
        "1g.1gb": _spec("1g.1gb", 1, 1, 2, (0, 1, 2, 3)),
        "2g.1gb": _spec("2g.1gb", 2, 1, 4, (0, 1, 2, 3)),
        "1g.1gb+me": _spec("1g.1gb+me", 1, 1, 1, (0, 1, 2, 3)),
    }),
)


@pytest.mark.parametrize(
    ("text", "reasons"),
    [
        ("2g.1gb@0,2g.1gb@1", ["uses 4 compute slices; the GPU has 3"]),
        ("1g.1gb@0,1g.1gb@1,1g.1gb@2", ["has 3 x 1g.1gb; at most 2"]),
        ("1g.1gb@0,1g.1gb@1,1g.1gb+me@2", []),
        ("2g.1gb@0,1g.1gb+me@3", []),
    ],
)
def test_compute_and_count_limits_alone(text: str, reasons: list[str]) -> None:
    assert problems(SYNTHETIC, L(text)) == reasons


def test_free_starts_respect_compute_count_and_media_limits() -> None:
    assert free_starts(SYNTHETIC, L("2g.1gb@0"), "2g.1gb") == ()  # compute 4 > 3
    assert free_starts(SYNTHETIC, L("2g.1gb@0"), "1g.1gb") == (1, 2, 3)
    assert free_starts(SYNTHETIC, L("1g.1gb@0,1g.1gb@1"), "1g.1gb") == ()  # count 3 > 2
    assert free_starts(SYNTHETIC, L("1g.1gb@0,1g.1gb@1"), "1g.1gb+me") == (2, 3)
    assert free_starts(A100, L("1g.5gb+me@0"), "1g.5gb+me") == ()
    assert free_starts(A30, L("1g.6gb+me@0"), "2g.12gb+me") == ()
    assert free_starts(A30, L("1g.6gb+me@0"), "2g.12gb") == (2,)
    with pytest.raises(InputError, match="unknown MIG profile"):
        free_starts(A100, (), "1g.10gb+me")


# --- create and destroy -----------------------------------------------------------------------------


def test_create_uses_the_first_free_start() -> None:
    layout = create(A100, (), "3g.20gb")
    assert layout == (MigInstance(0, "3g.20gb"),)
    layout = create(A100, layout, "3g.20gb")
    assert layout == L("3g.20gb@0,3g.20gb@4")  # as nvidia-smi mig -cgi 9,9 places them
    layout = create(A100, (), "4g.20gb")
    layout = create(A100, layout, "2g.10gb")
    layout = create(A100, layout, "1g.5gb")
    assert layout == L("4g.20gb@0,2g.10gb@4,1g.5gb@6")


def test_create_at_an_explicit_start() -> None:
    layout = create(A100, (), "3g.20gb", 4)
    assert layout == L("3g.20gb@4")
    layout = create(A100, layout, "1g.5gb", 2)
    assert layout == (MigInstance(2, "1g.5gb"), MigInstance(4, "3g.20gb"))
    layout = create(A100, layout, "1g.5gb")
    assert layout == L("1g.5gb@0,1g.5gb@2,3g.20gb@4")
    assert create(A30, (), "2g.12gb+me", 2) == L("2g.12gb+me@2")


@pytest.mark.parametrize(
    ("gpu", "text", "profile", "start", "message"),
    [
        ("A100-40GB", "3g.20gb@0,3g.20gb@4", "3g.20gb", None, "no free start for 3g.20gb beside 3g.20gb@0,3g.20gb@4"),
        ("A100-40GB", "", "7g.40gb", 4, "cannot create 7g.40gb@4: 7g.40gb@4: illegal start 4; 7g.40gb may start at 0"),
        ("A100-40GB", "1g.5gb@0", "7g.40gb", None, "no free start for 7g.40gb beside 1g.5gb@0"),
        (
            "A100-40GB",
            "3g.20gb@0",
            "2g.10gb",
            2,
            "cannot create 2g.10gb@2: 2g.10gb@2: overlaps another instance on memory slices 2,3",
        ),
        # compute exhausted with slice 7 still free
        ("A100-40GB", "4g.20gb@0,2g.10gb@4,1g.5gb@6", "1g.5gb", None, "no free start for 1g.5gb beside"),
        ("A100-40GB", "1g.5gb+me@0", "1g.5gb+me", 3, "has 2 +me instances; at most one per GPU"),
        ("A30", "1g.6gb+me@3", "2g.12gb+me", None, "no free start for 2g.12gb+me beside 1g.6gb+me@3"),
        ("A30", "2g.12gb@0,2g.12gb@2", "1g.6gb", 1, "overlaps another instance on memory slices 1"),
    ],
)
def test_create_refuses(gpu: str, text: str, profile: str, start: int | None, message: str) -> None:
    geometry = _geometry(gpu)
    with pytest.raises(MigLayoutError) as raised:
        create(geometry, L(text), profile, start)
    assert message in str(raised.value)


def test_create_refuses_over_compute_or_count_alone() -> None:
    with pytest.raises(MigLayoutError, match=r"^cannot create 2g\.1gb@1: uses 4 compute slices; the GPU has 3$"):
        create(SYNTHETIC, L("2g.1gb@0"), "2g.1gb", 1)
    with pytest.raises(MigLayoutError, match=r"^cannot create 1g\.1gb@2: has 3 x 1g\.1gb; at most 2$"):
        create(SYNTHETIC, L("1g.1gb@0,1g.1gb@1"), "1g.1gb", 2)
    with pytest.raises(MigLayoutError, match=r"^no free start for 1g\.1gb beside 1g\.1gb@0,1g\.1gb@1$"):
        create(SYNTHETIC, L("1g.1gb@0,1g.1gb@1"), "1g.1gb")
    assert create(SYNTHETIC, L("1g.1gb@0,1g.1gb@1"), "1g.1gb+me") == L("1g.1gb@0,1g.1gb@1,1g.1gb+me@2")


def test_create_of_an_unknown_profile_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"unknown MIG profile '1g\.10gb'"):
        create(A30, (), "1g.10gb")


def test_create_does_not_change_its_input() -> None:
    layout = L("3g.20gb@4")
    grown = create(A100, layout, "3g.20gb")
    assert layout == L("3g.20gb@4")
    assert grown == L("3g.20gb@0,3g.20gb@4")


def test_destroy() -> None:
    layout = L("1g.5gb@0,1g.5gb@1,2g.10gb@2,3g.20gb@4")
    assert destroy(layout, MigInstance(2, "2g.10gb")) == L("1g.5gb@0,1g.5gb@1,3g.20gb@4")
    assert destroy(L("7g.40gb@0"), MigInstance(0, "7g.40gb")) == ()
    # destroy then create at the freed start gives the layout back
    assert create(A100, destroy(layout, MigInstance(4, "3g.20gb")), "3g.20gb") == layout
    assert layout == L("1g.5gb@0,1g.5gb@1,2g.10gb@2,3g.20gb@4")


@pytest.mark.parametrize(
    ("text", "instance", "message"),
    [
        ("3g.20gb@0", MigInstance(4, "3g.20gb"), "no instance 3g.20gb@4 in 3g.20gb@0"),
        ("3g.20gb@0", MigInstance(0, "4g.20gb"), "no instance 4g.20gb@0 in 3g.20gb@0"),
        ("", MigInstance(0, "7g.40gb"), "no instance 7g.40gb@0 in an empty layout"),
    ],
)
def test_destroy_of_a_missing_instance_raises(text: str, instance: MigInstance, message: str) -> None:
    with pytest.raises(MigLayoutError) as raised:
        destroy(L(text), instance)
    assert str(raised.value) == message


# --- layout text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3g.40gb@0,3g.40gb@4", (MigInstance(0, "3g.40gb"), MigInstance(4, "3g.40gb"))),
        ("3g.40gb@4,3g.40gb@0", (MigInstance(0, "3g.40gb"), MigInstance(4, "3g.40gb"))),
        (" 1g.10gb+me @ 6 , 4g.40gb@0 ", (MigInstance(0, "4g.40gb"), MigInstance(6, "1g.10gb+me"))),
        ("7g.80gb@0,", (MigInstance(0, "7g.80gb"),)),
        ("", ()),
        (" , ", ()),
        ("1g.5gb@12", (MigInstance(12, "1g.5gb"),)),  # parsed, but not checked against a GPU
    ],
)
def test_parse_layout(text: str, expected: tuple[MigInstance, ...]) -> None:
    assert parse_layout(text) == expected


@pytest.mark.parametrize(
    "text",
    ["3g.20gb", "3g.20gb@x", "@4", "3g.20gb@", "3g.20gb@-1", "3g.20gb@4@5", "3g.20gb@1.5", " @ ", "3g.20gb@0;1g.5gb@4",
     "3g.20gb@0,1g.5gb", "3g.20gb:4"],
)
def test_parse_layout_refuses_malformed_text(text: str) -> None:
    with pytest.raises(MigLayoutError, match="is not profile@start"):
        parse_layout(text)


@pytest.mark.parametrize("text", ["3g.20gb@²", "1g.5gb@0,3g.20gb@4²"])
def test_parse_layout_refuses_non_decimal_digits(text: str) -> None:
    with pytest.raises(MigLayoutError, match="is not profile@start"):
        parse_layout(text)


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30))
def test_parse_layout_raises_only_mig_layout_errors(text: str) -> None:
    try:
        layout = parse_layout(text)
    except MigLayoutError:
        return
    assert all(isinstance(instance, MigInstance) and instance.start >= 0 for instance in layout)
    assert list(layout) == sorted(layout)


def test_format_layout() -> None:
    assert format_layout(()) == ""
    assert format_layout([MigInstance(4, "3g.20gb"), MigInstance(0, "4g.20gb")]) == "4g.20gb@0,3g.20gb@4"
    assert str(MigInstance(6, "1g.5gb+me")) == "1g.5gb+me@6"


@pytest.mark.parametrize("text", [text for _, text in KNOWN_GOOD] + ["1g.5gb@0,1g.5gb@0"])
def test_format_then_parse_round_trip(text: str) -> None:
    layout = parse_layout(text)
    assert format_layout(layout) == text
    assert parse_layout(format_layout(layout)) == layout


@given(
    st.lists(
        st.builds(
            MigInstance,
            st.integers(0, 20),
            st.sampled_from(sorted({name for g in (A100, H100, A30) for name in g.profiles})),
        ),
        max_size=10,
    )
)
def test_parse_format_round_trip_property(layout: list[MigInstance]) -> None:
    text = format_layout(layout)
    assert parse_layout(text) == tuple(sorted(layout))
    assert format_layout(parse_layout(text)) == text


# --- property: create/destroy never break a layout ------------------------------------------------

GEOMETRIES = {"A100-40GB": A100, "H100-80GB": H100, "A30": A30}


@functools.cache
def _all_maximal(gpu: str) -> list[tuple[MigInstance, ...]]:
    return maximal_layouts(GEOMETRIES[gpu])


@pytest.mark.parametrize("gpu", list(GEOMETRIES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_create_destroy_sequences_stay_legal(gpu: str, data: st.DataObject) -> None:
    geometry = GEOMETRIES[gpu]
    names = sorted(geometry.profiles)
    operation = st.one_of(
        st.tuples(
            st.just("create"),
            st.sampled_from(names),
            st.none() | st.integers(-1, geometry.memory_slices + 1),
        ),
        st.tuples(st.just("destroy"), st.integers(0, 15), st.booleans()),
    )
    layout: tuple[MigInstance, ...] = ()
    for op in data.draw(st.lists(operation, max_size=25), label="operations"):
        if op[0] == "create":
            _, profile, start = op
            free = _brute_force_free(geometry, layout, profile)
            try:
                grown = create(geometry, layout, profile, start)
            except MigLayoutError:
                # refused exactly when the brute force finds no room there
                assert (not free) if start is None else (start not in free), (layout, profile, start)
                continue
            wanted = free[0] if start is None else start
            assert start is None or start in free
            assert grown == tuple(sorted((*layout, MigInstance(wanted, profile))))
            layout = grown
        else:
            _, index, missing = op
            if missing or not layout:
                absent = MigInstance(geometry.memory_slices + index, names[index % len(names)])
                with pytest.raises(MigLayoutError):
                    destroy(layout, absent)
                continue
            victim = layout[index % len(layout)]
            shrunk = destroy(layout, victim)
            assert len(shrunk) == len(layout) - 1
            assert Counter(shrunk) + Counter([victim]) == Counter(layout)
            layout = shrunk

        assert problems(geometry, layout) == [], layout
        check(geometry, layout)
        assert list(layout) == sorted(layout)
        for instance in layout:
            assert instance.start in geometry.profiles[instance.profile].starts, instance
        for name in names:
            assert free_starts(geometry, layout, name) == _brute_force_free(geometry, layout, name), (layout, name)
        assert dict(options(geometry, layout)) == {name: free_starts(geometry, layout, name) for name in names}
        # every legal layout lies inside some maximal layout
        assert any(set(layout) <= set(maximal) for maximal in _all_maximal(gpu)), layout
