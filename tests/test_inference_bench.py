"""The inference benchmark runs on the bundled sample and reports what summary.json's `inference` key says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_inference_reports_every_gpu_model_profile_and_capacity() -> None:
    sample = ROOT / "traces" / "samples" / "azure-llm-conv.csv"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_inference.py"), "--trace", str(sample), "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    report = json.loads(done.stdout)
    assert [each["gpu_model"] for each in report["assumptions"]] == ["A100-80GB", "H100-80GB"]
    assert all(each["rate_source"] and each["price_source"] for each in report["assumptions"])
    rows = report["results"]
    assert [(row["gpu_model"], row["profile"], row["replicas_on"]) for row in rows] == [
        (model, profile, capacity) for capacity in ("on-demand", "on-demand or spot")
        for model in ("A100-80GB", "H100-80GB") for profile in ("default", "cost-greedy")
    ]  # fmt: skip
    for row in rows:
        assert row["requests"] == 2932 and row["requests_unserved"] == 0
        tokens = row["input_tokens"] + row["output_tokens"]
        assert abs(row["usd_per_million_tokens"] - row["attributed_usd"] / tokens * 1e6) < 0.01
        assert row["cost_usd"] >= row["attributed_usd"] and row["cluster_usd_per_million_tokens"] >= row[
            "usd_per_million_tokens"]  # fmt: skip
    # H100 serves the sample with one replica where A100 needs three: fewer GPU-hours for the same tokens.
    a100, h100 = rows[0], rows[2]
    assert (a100["peak_replicas"], h100["peak_replicas"]) == (3, 1)
    assert h100["gpu_hours_busy"] < a100["gpu_hours_busy"]
