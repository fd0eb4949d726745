"""RunDirectory: checked before the run, written beside the target, committed whole, and never
removing anything but its own temporary folder and a previous run that carries the marker."""

from __future__ import annotations

import json
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from scheduler.errors import InputError
from simulator import rundir
from simulator.rundir import MARKER, RunDirectory, fleetsched_version, is_previous_run

ROOT = Path(__file__).resolve().parent.parent


def test_a_run_is_written_beside_the_target_and_renamed_into_place(tmp_path: Path) -> None:
    run = RunDirectory.prepare(tmp_path / "new" / "run")
    assert run.path.parent == tmp_path / "new" and run.path.name.startswith(".run.partial-")
    assert not run.target.exists()
    (run.path / "summary.json").write_text("{}", encoding="utf-8")
    run.commit()
    assert sorted(p.name for p in run.target.iterdir()) == [MARKER, "summary.json"]
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["run"]
    assert is_previous_run(run.target)
    with pytest.raises(RuntimeError, match="already committed"):
        run.commit()


def test_an_empty_directory_is_taken(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with RunDirectory.prepare(tmp_path / "out") as run:
        (run.path / "a.csv").write_text("x\n", encoding="utf-8")
        run.commit()
    assert (tmp_path / "out" / "a.csv").read_text(encoding="utf-8") == "x\n"


def test_leaving_without_commit_abandons_the_run_and_the_folders_made_for_it(tmp_path: Path) -> None:
    with RunDirectory.prepare(tmp_path / "a" / "b" / "run") as run:
        (run.path / "half.csv").write_text("x", encoding="utf-8")
    assert list(tmp_path.iterdir()) == []


def test_files_that_appear_during_the_run_are_kept_and_the_commit_refused(tmp_path: Path) -> None:
    run = RunDirectory.prepare(tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("written meanwhile", encoding="utf-8")
    with pytest.raises(InputError, match="holds files that are not a fleetsched run"):
        run.commit()
    run.abandon()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "notes.txt").read_text(encoding="utf-8") == "written meanwhile"


def test_a_run_that_appears_during_the_run_is_replaced_only_with_force(tmp_path: Path) -> None:
    plain, forced = RunDirectory.prepare(tmp_path / "out"), RunDirectory.prepare(tmp_path / "out", force=True)
    other = RunDirectory.prepare(tmp_path / "out")
    (other.path / "first.csv").write_text("1", encoding="utf-8")
    other.commit()
    with pytest.raises(InputError, match="previous fleetsched run; pass --force"):
        plain.commit()
    plain.abandon()
    (forced.path / "second.csv").write_text("2", encoding="utf-8")
    forced.commit()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "second.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the old run and the temporary folders are gone"


@pytest.mark.parametrize(
    "marker",
    [b"", b"not json", b'{"tool": "other"}', b'["fleetsched"]', b'{"tool": "fleetsched"}' + b" " * 5000],
    ids=["empty", "text", "other-tool", "list", "too-large"],
)
def test_a_marker_that_is_not_ours_does_not_make_a_previous_run(tmp_path: Path, marker: bytes) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MARKER).write_bytes(marker)
    (tmp_path / "out" / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match="not a fleetsched run"):
        RunDirectory.prepare(tmp_path / "out", force=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MARKER, "data.parquet"]


def test_a_marker_that_is_a_link_does_not_make_a_previous_run(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text(json.dumps({"tool": "fleetsched"}), encoding="utf-8")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / MARKER).symlink_to(tmp_path / "elsewhere")
    assert not is_previous_run(tmp_path / "out")


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(InputError) as refused:
        RunDirectory.prepare("")
    assert str(refused.value) == "--out: name a directory to write"


def test_the_version_falls_back_to_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(rundir.metadata, "version", missing)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert fleetsched_version() == expected
