"""`fleetsched sweep --backend ray`: the same cells as Ray tasks give the same bytes as local processes.

One test starts a local Ray instance through the Python API; the other starts a Ray head with
`ray start --head --block` (an existing cluster) and runs the command with `--address`. Each
stops only the Ray processes it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import fleetsched
from fleetsched.cli import main
from fleetsched.sweep import run_sweep

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"
RAY = Path(sys.executable).parent / "ray"


def grid(tmp_path: Path) -> Path:
    """2 profiles (one a file, shipped to the workers as bytes) x 2 seeds x 2 spot shares."""
    (tmp_path / "mine.toml").write_bytes((ROOT / "policies/profiles/cost-greedy.toml").read_bytes())
    path = tmp_path / "grid.toml"
    path.write_text(f'''trace = "{SAMPLES}/demo-jobs.jsonl"
cluster = "{SAMPLES}/demo-cluster.toml"
[axes]
profiles = ["default", "mine.toml"]
seeds = 2
[axes.cluster]
spot_share = [0.25, 0.75]
''', encoding="utf-8")
    return path


def same_sweeps(first: Path, second: Path) -> None:
    assert (first / "results.parquet").read_bytes() == (second / "results.parquet").read_bytes()
    cells = sorted(path.relative_to(first) for path in (first / "cells").rglob("*.json"))
    assert len(cells) == 16 and cells == sorted(path.relative_to(second) for path in (second / "cells").rglob("*.json"))
    for cell in cells:
        assert (first / cell).read_bytes() == (second / cell).read_bytes(), cell


def test_ray_tasks_on_a_local_instance_give_the_bytes_of_local_processes(tmp_path: Path) -> None:
    path = grid(tmp_path)
    run_sweep(path, tmp_path / "local", workers=2)
    table = fleetsched.sweep(path, tmp_path / "ray", backend="ray", workers=2)
    assert len(table) == 8 and set(table["profile"]) == {"default", "mine"}
    same_sweeps(tmp_path / "local", tmp_path / "ray")


def test_a_task_replays_its_cell_from_the_shipped_bytes_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetsched import sweep_ray
    from fleetsched.sweep_cells import plan_cells, run_cell
    from fleetsched.sweep_grid import load_grid

    (_, spec), *_ = [cell for cell in plan_cells(load_grid(grid(tmp_path))) if cell[1].profile.endswith(".toml")]
    expected = run_cell(spec)
    blobs = [Path(path).read_bytes() for path in (spec.trace, spec.cluster, spec.profile)]
    node = tmp_path / "node"  # another machine's temporary folder: the files are not there
    monkeypatch.setattr(sweep_ray.tempfile, "gettempdir", lambda: str(node))
    moved = replace(spec, trace="/nowhere/demo-jobs.jsonl", cluster="/nowhere/demo-cluster.toml",
                    profile="/nowhere/mine.toml")  # fmt: skip
    assert sweep_ray.run_shipped(moved, *blobs) == expected
    placed = sorted(path.relative_to(node / sweep_ray.INPUTS).as_posix() for path in node.rglob("*") if path.is_file())
    assert placed == sorted([f"{spec.inputs['trace_sha256']}/demo-jobs.jsonl",
                             f"{spec.inputs['cluster_sha256']}/demo-cluster.toml",
                             f"{spec.inputs['profile']['sha256']}/mine.toml"])  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A Ray head started as an existing cluster would be (its own ports and temporary folder); its address."""
    port = _free_port()
    temporary = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must stay short
    command = [str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
               f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
               f"--temp-dir={temporary}", "--disable-usage-stats"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the workers import this checkout's fleetsched
    head = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # --block stops the processes it started
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temporary, ignore_errors=True)


def test_the_command_runs_the_cells_on_an_existing_ray_cluster(tmp_path: Path, ray_head: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path = grid(tmp_path)
    run_sweep(path, tmp_path / "local", workers=1)
    assert main(["sweep", str(path), "--out", str(tmp_path / "ray"), "--backend", "ray", "--address", ray_head]) == 0
    assert capsys.readouterr().out.startswith("8 cells: ran 8, 0 already done (")
    same_sweeps(tmp_path / "local", tmp_path / "ray")
