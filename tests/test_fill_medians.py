"""`fleetsched fill`'s medians: the authors' over the seeds run, and n/a (with its reason) where the curve has no cell at 100 %."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fleetsched.cli import main
from simulator.fill import blank_reason
from simulator.fill_authors import authors_medians, seed_text
from simulator.fill_output import read_rows, write_rows
from tests.test_fill import EXPECTED, _inputs, needs_shared

# One 8-GPU node and pods of 3 GPUs: arrivals 37.5, 75, 112.5 % (then a clone, 150 %), none within 99-101 %.
ONE_NODE = "sn,cpu_milli,memory_mib,gpu,model\nn0,96000,393216,8,G2\n"
THREE_GPU_PODS = "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n" + "".join(
    f"p{index},1000,1024,3,1000\n" for index in range(3))


def _expected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """An 'authors' file: our own rows of seeds 3 and 4, with seed 4's cell at 100 % moved 10 points."""
    assert main([*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "3-4", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    rows = read_rows(tmp_path / "a" / "allo_discrete.csv")
    moved = [dataclasses.replace(row, cells=(*row.cells[:100], (row.cells[100] or 0) - 10, *row.cells[101:]))
             if row.seed == 4 else row for row in rows]
    write_rows(moved, tmp_path / "expected.csv")
    return tmp_path / "expected.csv"


def test_the_authors_median_is_over_the_seeds_run_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected(tmp_path, capsys)
    args = [*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "3", "--expected", str(expected)]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out.splitlines()
    name, ours, theirs, _seconds = out[1].split()
    assert name == "BestFit" and theirs == ours  # seed 3 alone: theirs is our row; with seed 4 it would differ
    assert out[-1] == "authors: their median over the same seeds, 3"
    document = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert document["authors"] == {"seeds": {"BestFit": [3]}, "seeds_lacking": {},
                                   "unallocated_gpu_pct_at_100_median": {"BestFit": float(ours)}}


def test_a_seed_the_authors_lack_is_named_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = _expected(tmp_path, capsys)
    args = [*_inputs(tmp_path), "--policy", "BestFit", "--seeds", "3,8", "--expected", str(expected)]
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "fleetsched: the authors' results (pods, tune 1.3) lack seed 8 for BestFit: their median is over seed 3"]
    seed_3 = json.loads((tmp_path / "a" / "summary.json").read_text())["unallocated_gpu_pct_at_100_per_seed"]
    assert captured.out.splitlines()[1].split()[2] == f"{seed_3['BestFit']['3']:.2f}"
    assert captured.out.splitlines()[-1] == "authors: their median over the seeds run that they have (see the lines above)"


@needs_shared
def test_openb_best_fit_seed_42_is_compared_with_the_authors_seed_42() -> None:
    rows = read_rows(EXPECTED)
    one = authors_medians(rows, "openb_pod_list_default", 1.3, ["BestFit"], [42])
    assert one.at_100 == {"BestFit": 7.06} and one.seeds == {"BestFit": (42,)}
    ten = authors_medians(rows, "openb_pod_list_default", 1.3, ["BestFit", "FGD"], list(range(42, 52)))
    assert ten.at_100 == {"BestFit": 7.09, "FGD": 4.77} and not any(ten.lacking.values())  # the README's table


def test_seed_text_joins_consecutive_seeds() -> None:
    assert seed_text([42, 43, 44, 51]) == "42-44,51" and seed_text([7]) == "7" and seed_text([]) == "none"


def test_no_arrival_near_100_percent_gives_n_a_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_inputs(tmp_path, pods=THREE_GPU_PODS, nodes=ONE_NODE), "--policy", "BestFit", "--seeds", "1"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].split()[:3] == ["BestFit", "n/a", "-"]
    assert captured.err.splitlines() == [
        "fleetsched: seed 1: unallocated GPU % at 100 % arrived is n/a: no pod arrival lands within 99-101 % of the "
        "cluster's 8 GPUs: one pod takes the arrivals from 75.0 % to 112.5 %"]
    document = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert document["unallocated_gpu_pct_at_100_median"] == {"BestFit": None}
    assert list(document["unallocated_gpu_pct_at_100_blank"]) == ["1"]
    assert main([*args, "--json", "--out", str(tmp_path / "b")]) == 0
    assert json.loads(capsys.readouterr().out) == {"BestFit": None}


def test_arrivals_that_stop_short_of_100_percent_say_how_far_they_reached() -> None:
    assert blank_reason([1000, 2000, 3000], cluster_gpus=8) == "arrivals reach only 37.5 % of the cluster's 8 GPUs"
    assert blank_reason([7000, 7950], cluster_gpus=8) is None  # 99.4 % rounds to 99: within the window
