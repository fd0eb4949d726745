"""benchmarks/bench_fill.py runs on a small openb-style folder and reports every policy."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from fleetsched.cli import main
from simulator.fill_output import read_rows, write_rows
from tests.test_fill import NODES_CSV, PODS_CSV

ROOT = Path(__file__).resolve().parent.parent


def test_bench_fill_reports_each_policy_with_timings(tmp_path: Path) -> None:
    (tmp_path / "openb_node_list_gpu_node.csv").write_text(NODES_CSV)
    (tmp_path / "openb_pod_list_tiny.csv").write_text(PODS_CSV)
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_fill.py"), "--openb", str(tmp_path), "--trace", "tiny",
         "--seeds", "1-2", "--expected", str(tmp_path / "none.csv"), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    report = json.loads(done.stdout)
    assert report["trace"] == "tiny" and "python" in json.dumps(report["machine"]).lower()
    assert list(report["policies"]) == ["Random", "DotProd", "GpuClustering", "GpuPacking", "BestFit", "FGD"]
    for row in report["policies"].values():
        assert 0 <= row["ours_median"] <= 100 and row["authors_median"] is None and row["seconds_per_seed_max"] >= 0


def test_bench_fill_compares_with_the_authors_rows_of_the_seeds_run(tmp_path: Path) -> None:
    (tmp_path / "openb_node_list_gpu_node.csv").write_text(NODES_CSV)
    (tmp_path / "openb_pod_list_tiny.csv").write_text(PODS_CSV)
    run = tmp_path / "run"
    assert main(["fill", "--nodes", str(tmp_path / "openb_node_list_gpu_node.csv"), "--pods",
                 str(tmp_path / "openb_pod_list_tiny.csv"), "--policy", "BestFit", "--seeds", "1-2", "--out",
                 str(run)]) == 0
    rows = read_rows(run / "allo_discrete.csv")  # "the authors": ours, with seed 2 ten points apart at 100 %
    write_rows([dataclasses.replace(row, workload="openb_pod_list_tiny", cells=(
        *row.cells[:100], (row.cells[100] or 0) - 10 * (row.seed == 2), *row.cells[101:])) for row in rows],
        tmp_path / "expected.csv")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_fill.py"), "--openb", str(tmp_path), "--trace", "tiny",
         "--policies", "BestFit", "--seeds", "1", "--expected", str(tmp_path / "expected.csv"), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    row = json.loads(done.stdout)["policies"]["BestFit"]
    assert row["authors_median"] == row["ours_median"] and row["authors_range"] == row["ours_range"]
