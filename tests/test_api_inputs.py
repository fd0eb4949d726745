"""The Python API refuses what a caller hands it wrongly in one InputError naming the argument,
before anything runs, as the command does for its options."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import fleetsched
from scheduler.decision import InvalidDecisionError
from scheduler.errors import InputError
from scheduler.model import Job
from simulator.outputs import write_run
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"
CLUSTER = SAMPLES / "demo-cluster.toml"
TRACE = SAMPLES / "synth-2days.jsonl"


def jobs() -> list[Job]:
    return list(read_jobs(SAMPLES / "demo-jobs.jsonl"))


def test_an_invalid_decision_keeps_its_problems_when_rebuilt_from_its_arguments() -> None:
    # SimPy re-raises an error from a process as type(error)(*error.args); pickling does the same
    error = InvalidDecisionError(["job a placed twice", "job b: GPU already in use"])
    for rebuilt in (type(error)(*error.args), pickle.loads(pickle.dumps(error))):
        assert rebuilt.problems == error.problems
        assert str(rebuilt) == "invalid decision: job a placed twice; job b: GPU already in use"


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda given: fleetsched.simulate([*given, given[3]], CLUSTER), f"trace[{len(jobs())}].id",
         "is given twice (first as trace[3])"),
        (lambda given: fleetsched.plan(CLUSTER, [*given, given[0]]), f"jobs[{len(jobs())}].id",
         "is given twice (first as jobs[0])"),
        (lambda given: fleetsched.plan(CLUSTER, {"id": "a"}), "jobs", "got a dict"),  # type: ignore[arg-type]
        (lambda given: fleetsched.plan(CLUSTER, [{"id": "a"}]), "jobs[0]", "must be a scheduler.model.Job"),  # type: ignore[list-item]
        (lambda given: fleetsched.simulate({"id": "a"}, CLUSTER), "trace", "got a dict"),  # type: ignore[arg-type]
        (lambda given: fleetsched.plan(CLUSTER, given, seed=-1), "seed", "got -1"),
        (lambda given: fleetsched.plan(CLUSTER, given, seed="1"), "seed", "got '1'"),  # type: ignore[arg-type]
        (lambda given: fleetsched.plan(CLUSTER, given, seed=1.5), "seed", "got 1.5"),  # type: ignore[arg-type]
        (lambda given: fleetsched.simulate(given, CLUSTER, round_s="60"), "round_s", "got '60'"),  # type: ignore[arg-type]
    ],
    ids=["simulate-duplicate-id", "plan-duplicate-id", "plan-a-dict", "plan-dicts", "simulate-a-dict",
         "negative-seed", "seed-as-text", "fractional-seed", "round-as-text"],
)
def test_jobs_and_numbers_of_the_wrong_kind_are_refused_naming_the_argument(
    call: Callable[[list[Job]], Any], field: str, words: str
) -> None:
    with pytest.raises(InputError) as raised:
        call(jobs())
    assert raised.value.field == field and words in str(raised.value)


@pytest.mark.parametrize(
    ("arguments", "field", "words"),
    [
        ({"profiles": "default"}, "profiles", "not one string ('default')"),
        ({"seeds": "3"}, "seeds", "got '3'"),
        ({"seeds": True}, "seeds", "got True"),
        ({"workers": "2"}, "workers", "got '2'"),
    ],
    ids=["profiles-as-one-string", "seeds-as-text", "seeds-as-bool", "workers-as-text"],
)
def test_compare_refuses_arguments_of_the_wrong_kind_and_writes_nothing(
    arguments: dict[str, Any], field: str, words: str, tmp_path: Path
) -> None:
    given: dict[str, Any] = {"profiles": ["default"], "seeds": 1, "workers": 1, **arguments}
    with pytest.raises(InputError) as raised:
        fleetsched.compare(TRACE, CLUSTER, given["profiles"], given["seeds"], tmp_path / "out", workers=given["workers"])
    assert raised.value.field == field and words in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_sweep_refuses_workers_given_as_text(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="got '2'") as raised:
        fleetsched.sweep(SAMPLES / "sweep-example.toml", tmp_path / "out", workers="2")  # type: ignore[arg-type]
    assert raised.value.field == "workers" and not (tmp_path / "out").exists()


def test_simulate_takes_an_iterator_of_jobs_as_it_takes_a_list() -> None:
    given = jobs()
    from_list = fleetsched.load_run(fleetsched.simulate(given, CLUSTER))
    from_iterator = fleetsched.load_run(fleetsched.simulate(iter(given), CLUSTER))
    assert from_iterator.document == from_list.document


def test_a_replay_written_as_it_went_is_read_back_from_its_directory(tmp_path: Path) -> None:
    result = fleetsched.simulate(jobs(), CLUSTER, out=tmp_path / "run")
    with pytest.raises(InputError, match=r"load_run\(DIR\)"):
        fleetsched.load_run(result)
    assert fleetsched.load_run(tmp_path / "run").document["jobs"]["total"] == len(jobs())


def test_force_replaces_a_previous_run_and_only_with_force(tmp_path: Path) -> None:
    fleetsched.simulate(jobs(), CLUSTER, out=tmp_path / "run")
    with pytest.raises(InputError, match=r"force=True in Python"):
        fleetsched.simulate(jobs(), CLUSTER, "binpack", out=tmp_path / "run")
    fleetsched.simulate(jobs(), CLUSTER, "binpack", out=tmp_path / "run", force=True)
    assert fleetsched.load_run(tmp_path / "run").document["run"]["profile"] == "binpack"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n", encoding="utf-8")
    with pytest.raises(InputError, match="not a fleetsched run"):
        fleetsched.simulate(jobs(), CLUSTER, out=tmp_path / "mine", force=True)
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me\n"


def test_compare_with_force_replaces_a_previous_comparison(tmp_path: Path) -> None:
    fleetsched.compare(TRACE, CLUSTER, ["default"], 1, tmp_path / "cmp", workers=1)
    with pytest.raises(InputError, match="previous fleetsched run"):
        fleetsched.compare(TRACE, CLUSTER, ["binpack"], 1, tmp_path / "cmp", workers=1)
    rows, _ = fleetsched.compare(TRACE, CLUSTER, ["binpack"], 1, tmp_path / "cmp", workers=1, force=True)
    assert [row["profile"] for row in rows] == ["binpack"]
    assert [path.name for path in (tmp_path / "cmp" / "runs").iterdir()] == ["binpack-seed0"]


def test_load_sweep_says_when_there_is_no_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        fleetsched.load_sweep(tmp_path / "nope")
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(InputError, match="not a directory"):
        fleetsched.load_sweep(tmp_path / "file")


def test_a_kept_replay_still_writes_its_run_directory(tmp_path: Path) -> None:
    result = fleetsched.simulate([replace(job, priority=1) for job in jobs()], CLUSTER)
    write_run(result, tmp_path / "run")
    assert fleetsched.load_run(tmp_path / "run").document["jobs"]["total"] == len(jobs())
