"""SIGTERM or Ctrl-C during simulate or compare: one line, exit 128 + the signal, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.rundir import RunDirectory

ROOT = Path(__file__).resolve().parent.parent
PHILLY = ROOT.parent / "shared/traces/pollux-adaptdl/traces/philly.csv"  # 82,247 jobs: a replay of tens of seconds
CLUSTER = ROOT / "benchmarks/data/philly-512.toml"


def stop_midway(tmp_path: Path, verb: list[str], signum: signal.Signals) -> tuple[int, str]:
    """Runs `fleetsched VERB` into tmp_path/out, sends `signum` once it writes its temporary folder."""
    command = [sys.executable, "-m", "fleetsched", *verb, "--trace", str(PHILLY), "--cluster", str(CLUSTER),
               "--out", str(tmp_path / "out")]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.partial-*")), "the run never started writing"
    time.sleep(1.0)  # into the replay itself, past the survey
    process.send_signal(signum)
    _, error = process.communicate(timeout=120)
    return process.returncode, error


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_simulate_says_so_in_one_line_and_leaves_nothing(tmp_path: Path, signum: signal.Signals) -> None:
    code, error = stop_midway(tmp_path, ["simulate"], signum)
    assert code == 128 + signum
    assert error == f"fleetsched: stopped by {signum.name}: nothing written to {tmp_path / 'out'}\n"
    assert list(tmp_path.iterdir()) == []


def test_a_stopped_compare_leaves_nothing(tmp_path: Path) -> None:
    code, error = stop_midway(tmp_path, ["compare", "--profiles", "default,binpack", "--workers", "1"], signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert error.endswith(f"fleetsched: stopped by SIGTERM: nothing written to {tmp_path / 'out'}\n")
    assert list(tmp_path.iterdir()) == []


def test_a_run_killed_outright_is_cleaned_up_by_the_next_run_into_the_same_place(tmp_path: Path) -> None:
    finished = subprocess.Popen(["true"])  # a process that has ended: its pid names a dead run
    finished.wait()
    dead = tmp_path / f".out.partial-{finished.pid}-abc123"
    (dead / "runs").mkdir(parents=True)
    (dead / "jobs.csv").write_text("half a run\n", encoding="utf-8")
    alive = tmp_path / f".out.partial-{os.getpid()}-def456"  # a run still going: left alone
    alive.mkdir()
    other = tmp_path / f".other.partial-{finished.pid}-ghi789"  # another target's: left alone
    other.mkdir()
    run = RunDirectory.prepare(tmp_path / "out")
    run.abandon()
    assert not dead.exists() and alive.is_dir() and other.is_dir()
