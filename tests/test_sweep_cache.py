"""`fleetsched sweep`'s cache: a cell folder damaged or left incomplete is run again, alone, into the same bytes."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fleetsched.cli import main
from fleetsched.sweep import run_sweep
from tests.test_sweep import counting_runner, done_cells, executions, grid_file


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 8-cell sweep of the demo grid, run once for the module; tests damage copies of it."""
    folder = tmp_path_factory.mktemp("finished")
    run_sweep(grid_file(folder), folder / "sweep", workers=1)
    return folder / "sweep"


def rerun_after(damage: Callable[[Path], None], finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                caplog: pytest.LogCaptureFixture) -> Path:  # fmt: skip
    """Copies the finished sweep, damages its first cell's folder with `damage`, reruns it and
    checks that only that cell ran again, with a warning naming its folder, into the same bytes."""
    out = tmp_path / "sweep"
    shutil.copytree(finished, out, symlinks=True)
    cell = out / "cells" / sorted(done_cells(out))[0]
    damage(cell)
    markers = tmp_path / "markers"
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(markers))
    with caplog.at_level(logging.WARNING, logger="fleetsched.sweep"):
        report = run_sweep(grid_file(tmp_path), out, workers=1, runner=counting_runner)
    assert (report.ran, report.reused) == (1, 7)
    assert executions(markers) == {cell.name: 1}
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [str(cell)]
    assert (out / "results.parquet").read_bytes() == (finished / "results.parquet").read_bytes()
    assert cell.is_dir() and not cell.is_symlink() and sorted(path.name for path in cell.iterdir()) == [
        "cell.json", "summary.json"]  # fmt: skip
    for name in ("cell.json", "summary.json"):
        assert (cell / name).read_bytes() == (finished / "cells" / cell.name / name).read_bytes()
    assert sorted(path.name for path in (out / "cells").iterdir()) == sorted(done_cells(finished))
    return cell


def test_a_cell_json_holding_an_empty_object_is_run_again(finished: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    rerun_after(lambda cell: (cell / "cell.json").write_text("{}\n"), finished, tmp_path, monkeypatch, caplog)
    assert "cell.json: does not match summary.json" in caplog.text


def test_a_truncated_cell_json_is_run_again(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    def truncate(cell: Path) -> None:
        (cell / "cell.json").write_bytes((cell / "cell.json").read_bytes()[:300])

    rerun_after(truncate, finished, tmp_path, monkeypatch, caplog)


def test_a_deleted_cell_json_is_run_again(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    rerun_after(lambda cell: (cell / "cell.json").unlink(), finished, tmp_path, monkeypatch, caplog)
    assert "(no cell.json)" in caplog.text


def test_a_truncated_summary_json_is_run_again(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    def truncate(cell: Path) -> None:
        (cell / "summary.json").write_bytes((cell / "summary.json").read_bytes()[:1000])

    rerun_after(truncate, finished, tmp_path, monkeypatch, caplog)
    assert "summary.json: not JSON" in caplog.text


def test_an_empty_cell_folder_is_run_again(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    def empty(cell: Path) -> None:
        for path in cell.iterdir():
            path.unlink()

    rerun_after(empty, finished, tmp_path, monkeypatch, caplog)


def test_a_file_in_a_cells_place_is_replaced(finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    def to_file(cell: Path) -> None:
        shutil.rmtree(cell)
        cell.write_text("not a cell\n")

    rerun_after(to_file, finished, tmp_path, monkeypatch, caplog)
    assert "(not a folder)" in caplog.text


def test_a_link_in_a_cells_place_is_replaced_and_what_it_points_to_kept(finished: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    elsewhere = tmp_path / "elsewhere"

    def to_link(cell: Path) -> None:
        shutil.move(cell, elsewhere)  # a whole, valid cell, but outside the sweep directory
        cell.symlink_to(elsewhere, target_is_directory=True)

    rerun_after(to_link, finished, tmp_path, monkeypatch, caplog)
    assert sorted(path.name for path in elsewhere.iterdir()) == ["cell.json", "summary.json"]


def test_the_command_reruns_a_damaged_cell_and_exits_0(finished: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "sweep"
    shutil.copytree(finished, out)
    (out / "cells" / sorted(done_cells(out))[0] / "cell.json").write_text("{}\n")
    assert main(["sweep", str(grid_file(tmp_path)), "--out", str(out), "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith("8 cells: ran 1, 7 already done (")
    assert (out / "results.parquet").read_bytes() == (finished / "results.parquet").read_bytes()
