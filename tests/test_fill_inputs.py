"""`fleetsched fill` refuses input that would silently skew the experiment: a seed named twice, a node named twice, a GPU model nobody knows."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.fill import read_nodes
from tests.test_fill import NODES_CSV, OPENB, _fails, _inputs, needs_shared


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
