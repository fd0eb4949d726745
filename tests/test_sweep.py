"""`fleetsched sweep`: grids, cells and their overrides, the cache, resuming, the results table."""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

import fleetsched
from fleetsched import sweep_cells
from fleetsched.cli import main
from fleetsched.sweep import load_sweep, run_sweep
from fleetsched.sweep_cells import CellSpec, apply_cluster, apply_profile, apply_trace, plan_cells, run_cell
from fleetsched.sweep_grid import load_grid
from policies import profile
from scheduler.cluster import load_cluster
from scheduler.errors import InputError
from traces.formats import read_trace_jobs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"
DEMO = f'''trace = "{SAMPLES}/demo-jobs.jsonl"
cluster = "{SAMPLES}/demo-cluster.toml"

[axes]
profiles = ["default", "cost-greedy"]
seeds = 2

[axes.cluster]
spot_share = [0.25, 0.75]
'''  # 2 profiles x 2 seeds x 2 spot shares: 8 cells


def grid_file(tmp_path: Path, text: str = DEMO, name: str = "grid.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def counting_runner(spec: CellSpec) -> dict[str, object]:
    """run_cell, leaving one marker file per execution in $SWEEP_TEST_MARKERS (slowed by $SWEEP_TEST_DELAY_S)."""
    markers = Path(os.environ["SWEEP_TEST_MARKERS"])
    markers.mkdir(parents=True, exist_ok=True)
    (markers / f"{spec.key}.{os.getpid()}.{uuid.uuid4().hex}").touch()
    if os.environ.get("SWEEP_TEST_DELAY_S"):
        import time

        time.sleep(float(os.environ["SWEEP_TEST_DELAY_S"]))
    return run_cell(spec)


def executions(markers: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for marker in markers.glob("*.*") if markers.exists() else []:
        key = marker.name.split(".")[0]
        counts[key] = counts.get(key, 0) + 1
    return counts


def done_cells(out: Path) -> set[str]:
    return {path.name for path in (out / "cells").iterdir() if not path.name.startswith(".")}


def test_the_example_grid_has_270_cells_and_solver_weights_only_for_cpsat() -> None:
    grid = load_grid(SAMPLES / "sweep-example.toml")
    assert [axis.name for axis in grid.axes] == ["solver.spot_risk_weight", "pool.h100-spot.interruptions_per_node_hour",
                                                 "cluster.spot_share", "trace.arrival_rate"]
    assert grid.size() == 4 * 3 * 2 * 2 * 3 * 3
    cells = plan_cells(grid)
    assert len(cells) == 3 * 3 * 2 * 3 * 3 + 1 * 3 * 2 * 2 * 3 * 3 == 270
    assert len({spec.key for _, spec in cells}) == 270
    for _, spec in cells:
        weight = dict(spec.axes)["solver.spot_risk_weight"]
        assert (weight is None) == (spec.profile != "cost-cpsat"), spec.axes
    indices = [index for index, _ in cells]
    assert indices == sorted(indices) and indices[0] == 0


def test_the_grid_in_the_docs_is_the_example_grid() -> None:
    text = (ROOT / "docs/sweep.md").read_text(encoding="utf-8")
    shown = text.split("```toml\n", 1)[1].split("```", 1)[0]
    keys = [line.split("#")[0].strip() for line in shown.splitlines() if line.split("#")[0].strip()]
    sample = (SAMPLES / "sweep-example.toml").read_text(encoding="utf-8")
    assert keys == [line.split("#")[0].strip() for line in sample.splitlines() if line.split("#")[0].strip()]


def test_spot_share_splits_each_count_of_the_spot_and_on_demand_pools() -> None:
    cluster = load_cluster(SAMPLES / "demo-cluster.toml")  # h100-od and h100-spot: 2 nodes (min 2), max 8 each
    shared = apply_cluster(cluster, {"cluster.spot_share": 0.25}).pools
    spot, on_demand = shared["h100-spot"], shared["h100-od"]
    assert (spot.min_nodes, spot.nodes, spot.max_nodes) == (1, 1, 4)
    assert (on_demand.min_nodes, on_demand.nodes, on_demand.max_nodes) == (3, 3, 12)
    assert shared["a100-mig"] == cluster.pools["a100-mig"]
    all_spot = apply_cluster(cluster, {"cluster.spot_share": 1.0}).pools
    assert (all_spot["h100-spot"].max_nodes, all_spot["h100-od"].max_nodes, all_spot["h100-od"].nodes) == (16, 0, 0)


def test_pool_overrides_keep_fixed_pools_fixed_and_stretch_elastic_ones() -> None:
    cluster = load_cluster(SAMPLES / "demo-cluster.toml")  # a10g-od is fixed at 2 nodes
    pools = apply_cluster(cluster, {"pool.a10g-od.nodes": 5, "pool.h100-od.max_nodes": 1,
                                    "pool.h100-spot.usd_per_node_hour": 9.5}).pools  # fmt: skip
    assert (pools["a10g-od"].min_nodes, pools["a10g-od"].nodes, pools["a10g-od"].max_nodes) == (5, 5, 5)
    assert (pools["h100-od"].min_nodes, pools["h100-od"].nodes, pools["h100-od"].max_nodes) == (1, 1, 1)
    assert pools["h100-spot"].usd_per_node_hour == 9.5 and pools["h100-spot"].price_source == "sweep grid"
    grown = apply_cluster(cluster, {"pool.a10g-od.max_nodes": 6}).pools["a10g-od"]
    assert (grown.min_nodes, grown.nodes, grown.max_nodes) == (2, 2, 6)


def test_profile_overrides_set_solver_options_and_score_weights() -> None:
    changed = apply_profile(profile("cost-cpsat"), {"solver.spot_risk_weight": 0.5, "score.CheapestPool": 7})
    assert changed.solver.spot_risk_weight == 0.5 and changed.solver.deterministic_time == 0.5
    assert [(type(plugin).__name__, weight) for plugin, weight in changed.score] == [("CheapestPool", 7),
                                                                                    ("MostAllocated", 1)]


def test_trace_overrides_take_the_first_jobs_and_compress_the_gaps() -> None:
    jobs = list(read_trace_jobs(SAMPLES / "synth-mixed.jsonl"))
    ordered = sorted(jobs, key=lambda job: (job.submit_s, job.id))
    faster = apply_trace(jobs, {"trace.jobs": 10, "trace.arrival_rate": 2.0})
    assert [job.id for job in faster] == [job.id for job in ordered[:10]]
    first = ordered[0].submit_s
    for before, after in zip(ordered[:10], faster, strict=True):
        assert after.submit_s == pytest.approx(first + (before.submit_s - first) / 2)
        assert after.duration_s == before.duration_s


def test_a_sweep_writes_one_row_per_cell_and_a_rerun_runs_nothing(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    markers = tmp_path / "markers"
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(markers))
    grid, out = grid_file(tmp_path), tmp_path / "sweep"
    report = run_sweep(grid, out, workers=1, runner=counting_runner)
    assert (report.cells, report.ran, report.reused) == (8, 8, 0)
    table = load_sweep(out)
    assert list(table.columns[:5]) == ["index", "cell", "profile", "seed", "cluster.spot_share"]
    assert list(table["profile"]) == ["default"] * 4 + ["cost-greedy"] * 4
    assert list(table["seed"]) == [0, 0, 1, 1] * 2 and list(table["cluster.spot_share"]) == [0.25, 0.75] * 4
    for cell, cost in zip(table["cell"], table["cost_usd"], strict=True):
        summary = json.loads((out / "cells" / cell / "summary.json").read_text())
        assert summary["cost_usd"]["total"] == cost and summary["run"]["cell"] == cell
    assert table["cost_usd"].nunique() > 2, "spot share and profile change the bill"
    first = (out / "results.parquet").read_bytes()
    again = run_sweep(grid, out, workers=1, runner=counting_runner)
    assert (again.ran, again.reused) == (0, 8)
    assert executions(markers) == dict.fromkeys(table["cell"], 1)
    assert (out / "results.parquet").read_bytes() == first
    grid_file(tmp_path, DEMO.replace("seeds = 2", "seeds = 3"))
    more = run_sweep(grid, out, workers=1, runner=counting_runner)
    assert (more.cells, more.ran, more.reused) == (12, 4, 8)
    assert sorted(executions(markers).values()) == [1] * 12


def test_same_inputs_give_byte_identical_cells_and_table_in_any_directory_and_process_count(tmp_path: Path) -> None:
    grid = grid_file(tmp_path)
    run_sweep(grid, tmp_path / "one", workers=1)
    run_sweep(grid, tmp_path / "two", workers=2)
    assert (tmp_path / "one/results.parquet").read_bytes() == (tmp_path / "two/results.parquet").read_bytes()
    assert done_cells(tmp_path / "one") == done_cells(tmp_path / "two")
    for cell in done_cells(tmp_path / "one"):
        for name in ("cell.json", "summary.json"):
            assert (tmp_path / "one/cells" / cell / name).read_bytes() == (tmp_path / "two/cells" / cell / name).read_bytes()


def test_the_key_follows_the_bytes_and_the_code_not_the_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = {spec.key for _, spec in plan_cells(load_grid(grid_file(tmp_path)))}
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("demo-jobs.jsonl", "demo-cluster.toml"):
        (moved / name).write_bytes((SAMPLES / name).read_bytes())
    relative = DEMO.replace(f"{SAMPLES}/", "")
    assert {spec.key for _, spec in plan_cells(load_grid(grid_file(moved, relative)))} == keys
    cluster = moved / "demo-cluster.toml"
    cluster.write_text(cluster.read_text().replace("max_nodes = 8", "max_nodes = 9"))
    assert not {spec.key for _, spec in plan_cells(load_grid(grid_file(moved, relative)))} & keys
    monkeypatch.setattr(sweep_cells, "code_version", lambda: "0.1.0+changed")
    assert not {spec.key for _, spec in plan_cells(load_grid(grid_file(tmp_path)))} & keys


def test_a_sample_draws_distinct_cells_by_its_seed(tmp_path: Path) -> None:
    def sampled(seed: int) -> list[int]:
        text = DEMO.replace("seeds = 2", "seeds = 10")
        text = f"sample = 5\nsample_seed = {seed}\n" + text
        return [index for index, _ in plan_cells(load_grid(grid_file(tmp_path, text)))]

    first = sampled(1)
    assert len(first) == len(set(first)) == 5 and first == sorted(first) and max(first) < 40
    assert sampled(1) == first and sampled(2) != first


def test_a_worker_running_other_code_refuses_the_cell(tmp_path: Path) -> None:
    _, spec = plan_cells(load_grid(grid_file(tmp_path)))[0]
    stale = replace(spec, inputs={**spec.inputs, "code": "0.0.9+0123456789abcdef"})
    with pytest.raises(InputError, match=r"this worker runs fleetsched \S+\+[0-9a-f]{16}, the sweep 0\.0\.9\+0123456789abcdef"):
        run_cell(stale)


class FailingRunner:
    """Counts executions like counting_runner; the one after `succeed` cells raises."""

    def __init__(self, succeed: int) -> None:
        self.left = succeed

    def __call__(self, spec: CellSpec) -> dict[str, object]:
        if self.left == 0:
            raise RuntimeError("worker lost")
        self.left -= 1
        return counting_runner(spec)


def test_a_sweep_that_fails_halfway_resumes_and_runs_every_cell_exactly_once(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    markers = tmp_path / "markers"
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(markers))
    grid, out = grid_file(tmp_path), tmp_path / "sweep"
    with pytest.raises(RuntimeError, match="worker lost"):
        run_sweep(grid, out, workers=1, runner=FailingRunner(3))
    assert len(done_cells(out)) == 3 and not (out / "results.parquet").exists()
    report = run_sweep(grid, out, workers=1, runner=counting_runner)
    assert (report.ran, report.reused) == (5, 3)
    table = load_sweep(out)
    assert executions(markers) == dict.fromkeys(table["cell"], 1)
    assert len(table) == 8


def test_a_killed_sweep_keeps_its_done_cells_and_the_restart_runs_only_the_rest(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import signal
    import subprocess
    import sys
    import time

    markers = tmp_path / "markers"
    grid, out = grid_file(tmp_path), tmp_path / "sweep"
    script = ("import sys; from fleetsched.sweep import run_sweep; from tests.test_sweep import counting_runner; "
              "run_sweep(sys.argv[1], sys.argv[2], workers=1, runner=counting_runner)")  # fmt: skip
    env = {**os.environ, "SWEEP_TEST_MARKERS": str(markers), "SWEEP_TEST_DELAY_S": "0.3", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script, str(grid), str(out)], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not ((out / "cells").is_dir() and len(done_cells(out)) >= 3):
            assert child.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    before = done_cells(out)
    assert 3 <= len(before) < 8 and not (out / "results.parquet").exists()
    monkeypatch.setenv("SWEEP_TEST_MARKERS", str(markers))
    report = run_sweep(grid, out, workers=1, runner=counting_runner)
    assert (report.cells, report.ran) == (8, 8 - len(before))
    counts = executions(markers)
    assert all(counts[key] == 1 for key in before), "a cell done before the kill ran again"
    assert set(counts) == done_cells(out) and len(done_cells(out)) == 8
    assert sum(counts.values()) <= 8 + 1, "only the cell killed mid-run runs twice"
    assert not list((out / "cells").glob(".partial-*"))
    run_sweep(grid, tmp_path / "whole", workers=1)
    assert (out / "results.parquet").read_bytes() == (tmp_path / "whole/results.parquet").read_bytes()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_worker_processes_end_when_the_sweep_is_killed(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    markers = tmp_path / "markers"
    script = ("import sys; from fleetsched.sweep import run_sweep; from tests.test_sweep import counting_runner; "
              "run_sweep(sys.argv[1], sys.argv[2], workers=2, runner=counting_runner)")  # fmt: skip
    env = {**os.environ, "SWEEP_TEST_MARKERS": str(markers), "SWEEP_TEST_DELAY_S": "2", "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", script, str(grid_file(tmp_path)), str(tmp_path / "sweep")],
                             cwd=ROOT, env=env)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(list(markers.glob("*"))) < 2 if markers.exists() else True:
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)  # the sweep alone, not its workers
        child.wait()
    workers = {int(marker.name.split(".")[1]) for marker in markers.glob("*")}
    assert len(workers) == 2 and child.pid not in workers
    deadline = time.monotonic() + 10
    try:
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived its sweep"
            time.sleep(0.1)
    finally:
        for pid in workers:  # leave no process behind when the test fails
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_python_api_returns_the_table(tmp_path: Path) -> None:
    table = fleetsched.sweep(grid_file(tmp_path), tmp_path / "sweep", workers=1)
    assert len(table) == 8 and {"cost_usd", "idle_usd", "lost_work_usd", "queue_p95_s", "jct_mean_s", "utilisation",
                                "unfinished"} <= set(table.columns)  # fmt: skip
    assert fleetsched.load_sweep(tmp_path / "sweep").equals(table)
    with pytest.raises(InputError, match=r"no results\.parquet"):
        fleetsched.load_sweep(tmp_path)


def test_the_command_prints_what_it_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid, out = grid_file(tmp_path), tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out), "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith("8 cells: ran 8, 0 already done (")
    assert main(["sweep", str(grid), "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("8 cells: ran 0, 8 already done (")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    assert "8 grid points" in capsys.readouterr().out and not (tmp_path / "dry").exists()
