"""A `fleetsched fill` output directory handed to the readers of simulation runs: named as what it is, not as a broken run."""

from __future__ import annotations

from pathlib import Path

import pytest

import fleetsched
from fleetsched.cli import main
from scheduler.errors import InputError
from tests.test_fill import _inputs


@pytest.fixture
def fill_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert main([*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "1", "--out", str(tmp_path / "fill")]) == 0
    capsys.readouterr()
    return tmp_path / "fill"


def _said(folder: Path) -> str:
    return (f"{folder}: a `fleetsched fill` output directory (allo_discrete.csv, summary.json, unallocated.png), "
            "not a simulation run or comparison: read allo_discrete.csv with simulator.fill_output.read_rows "
            "(or pandas) and summary.json as JSON")


def test_load_run_names_a_fill_directory(fill_run: Path) -> None:
    with pytest.raises(InputError) as raised:
        fleetsched.load_run(fill_run)
    assert str(raised.value) == _said(fill_run)


def test_load_comparison_names_a_fill_directory(fill_run: Path) -> None:
    with pytest.raises(InputError) as raised:
        fleetsched.load_comparison(fill_run)
    assert str(raised.value) == _said(fill_run)


def test_report_names_a_fill_directory(fill_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(fill_run), "--out", str(fill_run.parent / "report.html")]) == 2
    assert capsys.readouterr().err.strip() == f"fleetsched: {_said(fill_run)}"
    assert not (fill_run.parent / "report.html").exists()
