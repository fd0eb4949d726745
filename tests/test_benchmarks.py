"""The benchmark scripts still run (tiny sizes; the figures themselves are in the README)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scheduler.cluster import load_cluster

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
    for extra in ([], ["--overloaded", "--split"]):
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks/bench_sim.py"), "--jobs", "400", "--json", *extra],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )
        reports.append(json.loads(done.stdout))
    fits, overloaded = reports
    assert (fits["gpus"], overloaded["gpus"]) == (512, 320) and overloaded["cluster"] == "philly-320.toml"
    assert fits["finished"] == overloaded["finished"] == 400
    assert fits["ratio_to_bare"] > 0 and overloaded["bare_simpy_s"] > 0
    # --split: deciding, enacting and the rest add up to the replay's wall time (rounding aside)
    parts = overloaded["split"]
    assert "split" not in fits and parts["cycles"] >= 400
    assert parts["decide_s"] > 0 and parts["enact_s"] > 0 and parts["rest_s"] > 0
    assert abs(parts["decide_s"] + parts["enact_s"] + parts["rest_s"] - overloaded["wall_s"]) <= 0.02


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


def _bench_governance() -> Any:
    """benchmarks/bench_governance.py as a module (benchmarks/ is not a package; it imports `machine`)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("bench_governance", ROOT / "benchmarks/bench_governance.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_governance"] = module  # its dataclasses look their module up while being made
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _job_row(job_id: str, team: str, submit_s: float, start_s: float | None, cost_usd: float) -> dict[str, str]:
    started = start_s is not None
    return {"id": job_id, "team": team, "submit_s": str(submit_s), "start_s": str(start_s) if started else "",
            "queue_s": str(start_s - submit_s) if start_s is not None else "", "cost_usd": str(cost_usd),
            "pools": "p" if started else ""}


def test_bench_governance_checks_count_spend_by_start_period_and_catch_overruns() -> None:
    bench = _bench_governance()
    rows = [_job_row("a1", "a", 10, 10, 60.0), _job_row("a2", "a", 20, 90, 50.0), _job_row("a3", "a", 30, 130, 70.0),
            _job_row("b1", "b", 50, 150, 5.0), _job_row("b2", "b", 60, None, 0.0)]

    def period(simulated_s: float) -> str:
        return "P1" if simulated_s < 100 else "P2"

    found = bench.team_periods(rows, period)
    # Spend goes to the period a job started in: a1 and a2 (started at 10 and 90) in P1, a3 (submitted in P1,
    # started at 130) in P2.
    assert found[("a", "P1")].spend_usd == 110.0 and found[("a", "P2")].spend_usd == 70.0
    # Queue times belong to the period of submission: a1 0 s, a2 70 s, a3 100 s; b1 100 s, b2 never started.
    assert found[("a", "P1")].queue_mean_s == 170 / 3 and found[("a", "P1")].jobs_submitted == 3
    assert found[("b", "P1")].queue_mean_s == 100.0 and found[("b", "P1")].jobs_submitted == 2
    assert found[("b", "P2")].spend_usd == 5.0 and found[("b", "P2")].queue_mean_s is None
    assert bench.p95([0.0, 70.0, 100.0]) == pytest.approx(97.0)  # inclusive: 70 + 0.9 x 30
    # a1 was estimated at $55 (actual $60), a3 at $72 on one pool and $68 on another: largest gap $5.
    assert bench.largest_estimate_error(rows, {"a1": [55.0], "a3": [72.0, 68.0]}) == 5.0
    budgets = [("a-budget", frozenset({"a"}), {"P1": 100.0, "P2": 100.0})]
    checks = bench.budget_checks(found, budgets, 5.0)
    assert [(c.period, c.spent_usd, c.ok) for c in checks] == [("P1", 110.0, False), ("P2", 70.0, True)]
    assert bench.budget_checks(found, budgets, 10.0)[0].ok  # within one job's estimate error
    before, after = {"a": 50.0, "b": 100.0}, {"a": 10.0, "b": 100.5}
    assert [(c.team, c.ok) for c in bench.queue_checks(before, after, ["b"])] == [("b", False)]
    assert bench.queue_checks(after, before, ["b"])[0].ok


def test_bench_governance_halves_a_team_held_by_a_daily_budget(tmp_path: Path) -> None:
    """Four 2-hour 8-GPU jobs of team big on one 8-GPU node, with a daily budget of 2.5 of them: two run
    on day 1, two wait for day 2. Team small's 1-GPU jobs, stuck behind all four without guardrails,
    start after the second: its mean queue time falls."""
    trace = tmp_path / "jobs.jsonl"
    big = [{"id": f"big-{n}", "submit_s": n, "duration_s": 7200, "gpus": 8, "team": "big"} for n in range(4)]
    small = [{"id": f"small-{n}", "submit_s": 600 * (n + 1), "duration_s": 3600, "team": "small"} for n in range(4)]
    trace.write_text("".join(json.dumps(job) + "\n" for job in big + small), encoding="utf-8")
    cluster = tmp_path / "cluster.toml"
    cluster.write_text('[[pool]]\nname = "a100"\ngpu = "A100-40GB"\ngpus_per_node = 8\n'
                       'price = "aws:p4d.24xlarge:on-demand"\nnodes = 1\n', encoding="utf-8")
    pool = load_cluster(cluster).pools["a100"]
    job_usd = pool.usd_per_node_hour * 2  # one big job: the whole node for two hours
    governance = tmp_path / "governance.toml"
    governance.write_text(f'epoch = "2026-10-01T00:00:00Z"\n[[flavor]]\nname = "a100"\ngpu_models = ["A100-40GB"]\n'
                          f'[[queue]]\nname = "org"\n[[queue]]\nname = "big"\nparent = "org"\n'
                          f'[[queue]]\nname = "small"\nparent = "org"\n'
                          f'[[budget]]\nteam = "big"\nperiod = "day"\nusd = {2.5 * job_usd}\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/bench_governance.py"), "--trace", str(trace), "--cluster", str(cluster),
         "--governance", str(governance), "--json"],
        capture_output=True, text=True, check=False, cwd=ROOT, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["machine"]["cores"] >= 1 and report["period"] == "day"
    rows = {(row["team"], row["period"]): row for row in report["rows"]}
    assert rows[("big", "2026-10-01")]["spend_usd"] == [pytest.approx(4 * job_usd, abs=0.05),
                                                       pytest.approx(2 * job_usd, abs=0.05)]
    assert rows[("big", "2026-10-02")]["spend_usd"] == [0.0, pytest.approx(2 * job_usd, abs=0.05)]
    assert rows[("big", "2026-10-01")]["budget_usd"] == pytest.approx(2.5 * job_usd)
    # Without guardrails small-n (submitted at 600 (n + 1) s) starts when the last big job ends, at 8 h; with
    # them, the second big job ends at 4 h and the four 1-GPU jobs start together.
    assert rows[("small", "2026-10-01")]["queue_mean_s"] == [pytest.approx(8 * 3600 - 1500),
                                                              pytest.approx(4 * 3600 - 1500)]
    assert [check["ok"] for check in report["budget_checks"]] == [True, True]
    assert [(check["team"], check["ok"]) for check in report["queue_checks"]] == [("small", True)]
