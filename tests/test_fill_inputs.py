"""`fleetsched fill` refuses input that would skew the experiment unseen (a seed or a node named twice, an unknown GPU model) and leaves nothing behind when stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulator.fill import read_nodes
from tests.test_fill import NODES_CSV, OPENB, _fails, _inputs, needs_shared

ROOT = Path(__file__).resolve().parent.parent


def test_a_seed_named_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _fails(tmp_path, capsys, [*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "42,42"])
    assert error == "fleetsched: --seeds: seed 42 named more than once"


def test_overlapping_seed_ranges_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = _fails(tmp_path, capsys, [*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "1-4,3-5"])
    assert error == "fleetsched: --seeds: seeds 3, 4 named more than once"


def test_a_node_named_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = NODES_CSV + "b,8000,32768,1,T4\n"
    error = _fails(tmp_path, capsys, [*_inputs(tmp_path, nodes=nodes), "--policy", "BestFit"])
    assert error == f"fleetsched: {tmp_path / 'nodes.csv'}:5: sn: node 'b' is named twice (first on line 2)"


def test_an_unknown_gpu_model_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = NODES_CSV.replace(",2,P100", ",2,NOPE")
    error = _fails(tmp_path, capsys, [*_inputs(tmp_path, nodes=nodes), "--policy", "BestFit"])
    assert error == (f"fleetsched: {tmp_path / 'nodes.csv'}:3: model: unknown GPU model 'NOPE': not in the GPU "
                     "catalog (openb's node lists use A10, G2, G3, P100, T4, V100M16, V100M32)")


def test_a_catalog_name_and_a_cpu_node_without_a_model_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "nodes.csv"
    path.write_text(NODES_CSV + "d,8000,32768,1,H100-80GB\ne,8000,32768,0,\n")
    assert [(node.name, node.model) for node in read_nodes(path)][-2:] == [("d", "H100-80GB"), ("e", "")]


@needs_shared
def test_both_openb_node_lists_are_accepted() -> None:
    # The authors' lists use only models the catalog knows; the all-node list has CPU nodes without one.
    assert len(read_nodes(OPENB / "openb_node_list_gpu_node.csv")) == 1213
    assert len(read_nodes(OPENB / "openb_node_list_all_node.csv")) == 1523


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_run_removes_the_temporary_folder(tmp_path: Path, signum: signal.Signals) -> None:
    # 2,000 seeds of FGD take tens of seconds: the signal lands while the runs go on.
    command = [sys.executable, "-m", "fleetsched", *_inputs(tmp_path), "--policy", "FGD", "--seeds", "1-1000,1001-2000",
               "--out", str(tmp_path / "out")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob(".out.partial-*")), "the run never started writing"
    process.send_signal(signum)
    _out, error = process.communicate(timeout=60)
    assert process.returncode == 128 + signum
    assert error.strip() == f"fleetsched: stopped by {signum.name}: nothing written to {tmp_path / 'out'}"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))
