"""benchmarks/bench_fill.py runs on a small openb-style folder and reports every policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
