"""The benchmark scripts still run (tiny sizes; the figures themselves are in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_plan_runs_and_reports_every_profile() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_plan.py"), "--nodes", "40", "--jobs", "60", "--repeat", "1", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    report = json.loads(done.stdout)
    assert report["machine"]["cores"] >= 1
    assert [row["profile"] for row in report["results"]] == ["default", "binpack", "cost-greedy"]
    assert all(0 < row["placed"] <= 60 and row["placements_per_s"] > 0 for row in report["results"])


def test_bench_packer_reports_both_placers() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_packer.py"), "--nodes", "60", "--jobs", "40", "--repeat", "1",
         "--time-limit", "0.5", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    report = json.loads(done.stdout)
    assert report["nodes"] == 60 and report["jobs"] == 40 and 0.3 < report["gpus_busy"] < 0.9
    greedy, cpsat = report["results"]["greedy"], report["results"]["cpsat"]
    # 40 jobs on 60 nodes solve in tens of milliseconds of the half second: proven optimal,
    # within the profile's gap limit (0.5 %) of the bound, the bound below the answer.
    assert greedy["status"] == "-" and greedy["gap"] is None and cpsat["status"] == "OPTIMAL"
    assert cpsat["bound"] <= cpsat["objective"] and 0 <= cpsat["gap"] <= 0.005
    assert cpsat["jobs_placed"] >= greedy["jobs_placed"] > 0
    assert cpsat["wall_s_p50"] > 0


def test_bench_extender_reports_latency_against_the_running_server() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_extender.py"), "--nodes", "50", "--requests", "40", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    latency = json.loads(done.stdout)["latency"]
    assert latency["nodes"] == 50 and latency["requests"] == 40
    assert 0 < latency["pair_ms_p50"] <= latency["pair_ms_p99"] and latency["requests_per_s"] > 0


def test_bench_extender_load_answers_every_active_connection_and_holds_the_silent_ones() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_extender_load.py"), "--connections", "60", "--silent", "10",
         "--rounds", "2", "--nodes", "20", "--json"],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=120,
    )
    report = json.loads(done.stdout)
    assert report["paced"]["requests"] == report["burst"]["requests"] == 2 * 50
    assert report["silent_still_open"] == 10 and report["peak_rss_mib"] >= report["peak_rss_mib_before"] > 0
    assert all(0 < report[phase]["p50_ms"] <= report[phase]["p99_ms"] for phase in ("paced", "burst"))


def test_bench_sim_replays_on_the_cluster_that_fits_and_on_the_overloaded_one() -> None:
    reports = []
    for extra in ([], ["--overloaded"]):
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks/bench_sim.py"), "--jobs", "400", "--json", *extra],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        reports.append(json.loads(done.stdout))
    fits, overloaded = reports
    assert (fits["gpus"], overloaded["gpus"]) == (512, 320) and overloaded["cluster"] == "philly-320.toml"
    assert fits["finished"] == overloaded["finished"] == 400
    assert fits["ratio_to_bare"] > 0 and overloaded["bare_simpy_s"] > 0


def test_bench_stream_replays_a_trace_in_a_process_of_its_own(tmp_path: Path) -> None:
    trace = tmp_path / "synth-300.jsonl"
    subprocess.run([sys.executable, "-m", "fleetsched", "trace", "synth", "--out", str(trace), "--jobs", "300",
                    "--jobs-per-hour", "100"], capture_output=True, check=True, cwd=ROOT)  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_stream.py"), "--traces", str(tmp_path), "--jobs", "300"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (run,) = report["runs"]
    assert run["jobs"] == run["completed"] == 300 and run["peak_rss_mib"] > 0 and run["jobs_per_s"] > 0
