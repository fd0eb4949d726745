"""`fleetsched usage agent-record`: an `--out` it cannot write and an `--epoch-s` that is no unix time are
each one line naming the option (exit 2), found before the trace is read, leaving nothing behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetsched.cli import main

TRACE = Path(__file__).resolve().parent.parent / "traces" / "samples" / "gentd26" / "pod_gpu_duty_cycle_anon.csv"


def refused(capsys: pytest.CaptureFixture[str], *options: str) -> str:
    assert main(["usage", "agent-record", str(TRACE), "--gpu-model", "A100-80GB", *options]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    return captured.err.rstrip("\n")


def test_an_out_in_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nonexistdir" / "x.jsonl"
    assert refused(capsys, "--out", str(out)) == f"fleetsched: {out}: --out: its folder {out.parent} does not exist"
    assert list(tmp_path.iterdir()) == []


def test_an_out_that_is_a_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = f"fleetsched: {tmp_path}: --out: is a directory; name a file in it"
    assert refused(capsys, "--out", str(tmp_path)) == line
    assert list(tmp_path.iterdir()) == []  # no .partial left inside it


def test_the_out_is_checked_before_the_trace_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "nonexistdir" / "x.jsonl"
    assert main(["usage", "agent-record", str(tmp_path / "no-trace.csv"), "--out", str(out)]) == 2
    assert "--out: its folder" in capsys.readouterr().err


@pytest.mark.parametrize("epoch", ["nan", "inf"])
def test_an_epoch_that_is_not_finite_is_one_line(
    epoch: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.jsonl"
    assert refused(capsys, "--out", str(out), "--epoch-s", epoch) == (
        f"fleetsched: --epoch-s: must be a unix time in seconds of at least 0, got {epoch}"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_negative_epoch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.jsonl"
    assert refused(capsys, "--out", str(out), "--epoch-s", "-5") == (
        "fleetsched: --epoch-s: must be a unix time in seconds of at least 0, got -5.0"
    )
    assert list(tmp_path.iterdir()) == []
