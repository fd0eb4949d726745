"""Profiles: TOML naming plugins per hook, validated before the first cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import policies
from scheduler.errors import InputError
from scheduler.profile import SolverOptions, load_profile
from scheduler.tomlfile import TomlDocument


@dataclass(frozen=True)
class _Args:
    long_job_s: float = 14400.0
    teams: dict[str, int] = field(default_factory=dict)
    label: str = ""


class _WithArgs(policies.CheapestPool):
    name = "WithArgs"
    Args = _Args


REGISTRY = {**policies.REGISTRY, "WithArgs": _WithArgs}
HEAD = 'sort = "PriorityThenAge"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


def test_a_full_profile_loads_with_weights_and_typed_args(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + """placer = "greedy"
description = "test"
filter = ["GpuModelFit", "SpotTolerance"]
score = [{ name = "WithArgs", weight = 3 }, "MostAllocated"]
[args.WithArgs]
long_job_s = 7200
teams = { research = 64 }
""")
    profile = load_profile(path, REGISTRY)
    assert profile.name == "p" and profile.description == "test" and profile.placer == "greedy"
    assert [type(p).__name__ for p in profile.filter] == ["GpuModelFit", "SpotTolerance"]
    assert [(p.name, w) for p, w in profile.score] == [("WithArgs", 3), ("MostAllocated", 1)]
    assert profile.score[0][0].args == _Args(long_job_s=7200, teams={"research": 64})
    assert "WithArgs" in repr(profile.score[0][0]) and repr(profile.score[1][0]) == "MostAllocated"


BAD = {
    "unknown-key": (HEAD + "filtre = []\n", 2, "filtre: unknown key"),
    "unknown-placer": (HEAD + 'placer = "magic"\n', 2, "placer: unknown placer 'magic'"),
    "unknown-plugin": (HEAD + 'filter = ["GpuModelFit", "Nope"]\n', 2, "filter[1]: unknown plugin 'Nope'"),
    "wrong-hook": (HEAD + 'filter = ["CheapestPool"]\n', 2, "filter[0]: plugin CheapestPool does not implement the filter"),
    "zero-weight": (HEAD + 'score = [{ name = "MostAllocated", weight = 0 }]\n', 2, "score[0]: weight must be a positive"),
    "text-weight": (HEAD + 'score = [{ name = "MostAllocated", weight = "3" }]\n', 2, "weight must be a positive"),
    "missing-sort": ('filter = []\n', None, "sort: a profile names exactly one sort plugin"),
    "sort-not-a-sorter": ('sort = "GpuModelFit"\n', 1, "plugin GpuModelFit does not implement the sort hook"),
    "hook-not-a-list": (HEAD + 'filter = "GpuModelFit"\n', 2, "filter: must be a list"),
    "args-unused": (HEAD + '[args.MostAllocated]\nx = 1\n', 2, "args.MostAllocated: arguments for a plugin"),
    "args-not-taken": (HEAD + 'score = ["MostAllocated"]\n[args.MostAllocated]\nx = 1\n', 3, "takes no arguments"),
    "args-unknown": (HEAD + 'score = ["WithArgs"]\n[args.WithArgs]\nshort_s = 1\n', 4, "args.WithArgs.short_s: unknown"),
    "args-wrong-type": (HEAD + 'score = ["WithArgs"]\n[args.WithArgs]\nlong_job_s = "long"\n', 4, "must be float"),
    "args-wrong-type-map": (HEAD + 'score = ["WithArgs"]\n[args.WithArgs]\nteams = 3\n', 4, "must be dict"),
    "args-not-table": (HEAD + 'args = 3\n', 2, "args: must be a table"),
    "bad-toml": (HEAD + 'filter = [\n', 2, "not valid TOML"),
    "solver-not-table": (HEAD + 'solver = 3\n', 2, "solver: must be a table"),
    "solver-unknown": (HEAD + '[solver]\ntime_limit = 1\n', 3, "solver.time_limit: unknown solver option; known:"),
    "solver-wrong-type": (HEAD + '[solver]\nworkers = 1.5\n', 3, "solver.workers: must be int, got 1.5"),
    "solver-text": (HEAD + '[solver]\ntime_limit_s = "1s"\n', 3, "solver.time_limit_s: must be float"),
    "solver-zero-workers": (HEAD + '[solver]\nworkers = 0\n', 3, "solver.workers: must be positive, got 0"),
    "solver-negative": (HEAD + '[solver]\nfragmentation_weight = -1\n', 3, "must be zero or more, got -1"),
    "reserve-with-cpsat": (HEAD + 'placer = "cpsat"\nreserve = "EasyBackfill"\n', 3,
                           'reserve: the cpsat placer does not honour reservations; use placer = "greedy"'),
    "reserve-not-a-reserver": (HEAD + 'reserve = "CheapestPool"\n', 2, "plugin CheapestPool does not implement the reserve"),
    "reserve-unknown": (HEAD + 'reserve = "Easy"\n', 2, "reserve: unknown plugin 'Easy'"),
    "solver-with-greedy": (HEAD + '[solver]\ntime_limit_s = 2\n', 2,
                           'solver: the greedy placer reads no [solver] table; it is for placer = "cpsat"'),
    "filter-twice": (HEAD + 'filter = ["GpuModelFit", "WholeGpuFit", "GpuModelFit"]\n', 2,
                     "filter[2]: names GpuModelFit a second time (first as filter[0])"),
    "score-twice": (HEAD + 'score = ["MostAllocated", { name = "MostAllocated", weight = 2 }]\n', 2,
                    "score[1]: names MostAllocated a second time; give it one weight"),
}


@pytest.mark.parametrize(("text", "line", "message"), list(BAD.values()), ids=list(BAD))
def test_bad_profiles_name_file_line_and_key(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    with pytest.raises(InputError) as caught:
        load_profile(write(tmp_path, text), REGISTRY)
    where = f"{tmp_path / 'p.toml'}:{line}: " if line else f"{tmp_path / 'p.toml'}: "
    assert str(caught.value).startswith(where), str(caught.value)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bundled_profiles_by_name_or_path(tmp_path: Path) -> None:
    assert policies.profile("binpack").score[0][0].name == "MostAllocated"
    path = write(tmp_path, HEAD)
    assert policies.profile(str(path)).name == "p"
    with pytest.raises(InputError, match="no bundled profile 'nope'; bundled: binpack, cost-cpsat, cost-greedy, default"):
        policies.profile("nope")
    with pytest.raises(InputError, match="No such file"):
        policies.profile(str(tmp_path / "missing.toml"))


def test_line_of_finds_keys_inside_array_tables() -> None:
    document = TomlDocument.parse('[[pool]]\nname = "a"\n[[pool]]\nname = "b"\ngpu = "x"\n', "c.toml")
    assert document.line_of("gpu", "pool", 1) == 5
    assert document.line_of("gpu", "pool", 0) == 1
    assert document.line_of("gpu", "pool", 7) is None
    assert document.line_of("name") == 2


def test_a_solver_table_sets_the_batch_placer_options(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + 'placer = "cpsat"\n[solver]\ntime_limit_s = 2\nworkers = 1\nspot_risk_weight = 0.5\n')
    profile = load_profile(path, REGISTRY)
    assert profile.placer == "cpsat"
    assert profile.solver == SolverOptions(time_limit_s=2, workers=1, spot_risk_weight=0.5)
    assert load_profile(write(tmp_path, HEAD), REGISTRY).solver == SolverOptions()
