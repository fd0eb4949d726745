"""Bad grid files and options for `fleetsched sweep`: one line naming the file, line and key; exit 2; nothing written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetsched.cli import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"
HEAD = f'''trace = "{SAMPLES}/demo-jobs.jsonl"
cluster = "{SAMPLES}/demo-cluster.toml"
'''
AXES = '''[axes]
profiles = ["default", "cost-greedy"]
seeds = 2
'''

# (case, the grid's text, the line named, the key named, a phrase of the problem)
CASES = [
    ("unknown-top-key", HEAD + "seed = 3\n" + AXES, 3, "seed", "unknown key; a grid has"),
    ("no-trace", f'cluster = "{SAMPLES}/demo-cluster.toml"\n' + AXES, None, "trace", "required: the trace file"),
    ("missing-trace-file", 'trace = "nowhere.jsonl"\n' + HEAD.splitlines()[1] + "\n" + AXES, 1, "trace",
     "no such file"),
    ("trace-not-text", "trace = 3\n" + HEAD.splitlines()[1] + "\n" + AXES, 1, "trace", "must be a path"),
    ("unknown-format", 'format = "philly-2017"\n' + HEAD + AXES, 1, "format", "unknown format 'philly-2017'; known:"),
    ("no-axes", HEAD, None, "axes", "required table"),
    ("unknown-axis", HEAD + AXES + "policies = [1]\n", 6, "axes.policies", "unknown axis"),
    ("unknown-profile", HEAD + '[axes]\nprofiles = ["default", "fastest"]\n', 4, "axes.profiles",
     "no bundled profile 'fastest'"),
    ("profile-file-missing", HEAD + '[axes]\nprofiles = ["mine.toml"]\n', 4, "axes.profiles", "no such profile file"),
    ("no-profiles", HEAD + "[axes]\nseeds = 2\n", 3, "axes.profiles", "required: the profiles"),
    ("empty-profiles", HEAD + "[axes]\nprofiles = []\n", 4, "axes.profiles", "non-empty list"),
    ("profile-twice", HEAD + '[axes]\nprofiles = ["default", "default"]\n', 4, "axes.profiles", "listed twice"),
    ("seeds-zero", HEAD + '[axes]\nprofiles = ["default"]\nseeds = 0\n', 5, "axes.seeds", "from 1 to 1,000"),
    ("seed-negative", HEAD + '[axes]\nprofiles = ["default"]\nseeds = [0, -1]\n', 5, "axes.seeds", "got -1"),
    ("seed-text", HEAD + '[axes]\nprofiles = ["default"]\nseeds = ["1"]\n', 5, "axes.seeds", "whole number"),
    ("solver-unknown", HEAD + AXES.replace("default", "cost-cpsat") + "[axes.solver]\nspot_weight = [1.0]\n", 7,
     "axes.solver.spot_weight", "unknown solver option"),
    ("solver-without-cpsat", HEAD + AXES + "[axes.solver]\nidle_weight = [0.5, 1.0]\n", 7,
     "axes.solver.idle_weight", 'no profile of the grid has placer = "cpsat"'),
    ("solver-negative", HEAD + AXES.replace("default", "cost-cpsat") + "[axes.solver]\nidle_weight = [-1.0]\n", 7,
     "axes.solver.idle_weight", "got -1.0"),
    ("solver-workers-zero", HEAD + AXES.replace("default", "cost-cpsat") + "[axes.solver]\nworkers = [0, 2]\n", 7,
     "axes.solver.workers", "from 1"),
    ("solver-not-a-list", HEAD + AXES.replace("default", "cost-cpsat") + "[axes.solver]\nidle_weight = 0.5\n", 7,
     "axes.solver.idle_weight", "non-empty list"),
    ("score-unused", HEAD + AXES + "[axes.score]\nLeastWaste = [1, 2]\n", 7, "axes.score.LeastWaste",
     "no profile of the grid scores with LeastWaste"),
    ("score-weight-zero", HEAD + AXES + "[axes.score]\nCheapestPool = [0, 2]\n", 7, "axes.score.CheapestPool",
     "from 1"),
    ("pool-unknown", HEAD + AXES + '[axes.pool."h200-od"]\nnodes = [1, 2]\n', 6, "axes.pool.h200-od",
     "no pool 'h200-od' in demo-cluster.toml"),
    ("pool-setting-unknown", HEAD + AXES + "[axes.pool.h100-od]\ngpus = [4, 8]\n", 7, "axes.pool.h100-od.gpus",
     "unknown pool setting"),
    ("pool-count-negative", HEAD + AXES + "[axes.pool.h100-od]\nmax_nodes = [4, -2]\n", 7,
     "axes.pool.h100-od.max_nodes", "got -2"),
    ("pool-price-text", HEAD + AXES + '[axes.pool.h100-od]\nusd_per_node_hour = ["cheap"]\n', 7,
     "axes.pool.h100-od.usd_per_node_hour", "must be a number"),
    ("interruptions-on-demand", HEAD + AXES + "[axes.pool.h100-od]\ninterruptions_per_node_hour = [0.1]\n", 7,
     "axes.pool.h100-od.interruptions_per_node_hour", "only spot pools are interrupted"),
    ("pool-counts-clash", HEAD + AXES + "[axes.pool.h100-od]\nmin_nodes = [3]\nmax_nodes = [2, 4]\n", 8,
     "axes.pool.h100-od.max_nodes", "got 3 <= 2 <= 2 in the cell with max_nodes = 2, min_nodes = 3"),
    ("cluster-unknown", HEAD + AXES + "[axes.cluster]\nspot_fraction = [0.5]\n", 7, "axes.cluster.spot_fraction",
     "unknown cluster setting"),
    ("spot-share-over-one", HEAD + AXES + "[axes.cluster]\nspot_share = [0.5, 1.5]\n", 7, "axes.cluster.spot_share",
     "up to 1"),
    ("trace-unknown", HEAD + AXES + "[axes.trace]\nduration_scale = [2.0]\n", 7, "axes.trace.duration_scale",
     "unknown trace setting"),
    ("arrival-rate-zero", HEAD + AXES + "[axes.trace]\narrival_rate = [0.0, 1.0]\n", 7, "axes.trace.arrival_rate",
     "above 0"),
    ("more-jobs-than-the-trace", HEAD + AXES + "[axes.trace]\njobs = [10, 50]\n", 7, "axes.trace.jobs",
     "the trace has 17 jobs, fewer than 50"),
    ("sample-zero", "sample = 0\n" + HEAD + AXES, 1, "sample", "from 1"),
    ("sample-seed-alone", "sample_seed = 4\n" + HEAD + AXES, 1, "sample_seed", "give sample = N"),
    ("grid-too-large", HEAD + '[axes]\nprofiles = ["default"]\nseeds = 1000\n[axes.trace]\n'
     "arrival_rate = [" + ", ".join(str(1 + n / 100) for n in range(101)) + "]\n", 3, "axes",
     "the full grid has 101,000 cells"),
    ("dotted-key", HEAD + AXES + "pool.h100-od.nodes = [1, -1]\n", 6, "axes.pool.h100-od.nodes", "got -1"),
    ("inline-table", HEAD + AXES + "trace = { jobs = [0] }\n", 6, "axes.trace.jobs", "got 0"),
]


@pytest.mark.parametrize(("text", "line", "field", "problem"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_a_bad_grid_stops_with_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           text: str, line: int | None, field: str,
                                                           problem: str) -> None:  # fmt: skip
    grid = tmp_path / "grid.toml"
    grid.write_text(text, encoding="utf-8")
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    where = f"{grid}:{line}" if line is not None else str(grid)
    assert error.startswith(f"fleetsched: {where}: {field}: "), error
    assert problem in error and error.count("\n") == 1, error
    assert not out.exists()


def test_a_toml_syntax_error_names_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(HEAD + AXES + "solver = [1,\n", encoding="utf-8")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {grid}:6: not valid TOML")
    assert not (tmp_path / "sweep").exists()


def test_a_bad_profile_file_names_the_profile_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine.toml").write_text('sort = "PriorityThenAge"\nplacer = "magic"\n', encoding="utf-8")
    grid = tmp_path / "grid.toml"
    grid.write_text(HEAD + '[axes]\nprofiles = ["mine.toml"]\n', encoding="utf-8")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {tmp_path / 'mine.toml'}:2: placer: unknown placer")


@pytest.mark.parametrize(("options", "message"), [
    (["--backend", "spark"], "fleetsched: --backend: must be one of local, ray, got 'spark'"),
    (["--address", "10.0.0.1:6379"], "fleetsched: --address: names a Ray cluster: use it with --backend ray"),
    (["--workers", "0"], "fleetsched: --workers: must be a whole number, at least 1"),
    (["--backend", "ray", "--address", "head-node"], "fleetsched: --address: must be HOST:PORT of a Ray head"),
    (["--backend", "ray", "--address", "127.0.0.1:1"], "fleetsched: --address: cannot reach a Ray cluster at 127.0.0.1:1"),
], ids=["backend", "address-without-ray", "workers", "address-not-host-port", "address-unreachable"])  # fmt: skip
def test_bad_options_stop_before_anything_is_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     options: list[str], message: str) -> None:  # fmt: skip
    grid = tmp_path / "grid.toml"
    grid.write_text(HEAD + AXES, encoding="utf-8")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep"), *options]) == 2
    assert capsys.readouterr().err.startswith(message)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_an_out_holding_other_files_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              dry_run: list[str]) -> None:  # fmt: skip
    grid = tmp_path / "grid.toml"
    grid.write_text(HEAD + AXES, encoding="utf-8")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["sweep", str(grid), "--out", str(out), *dry_run]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {out}: --out: holds other files")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]
    assert main(["sweep", str(grid), "--out", str(grid)]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {grid}: --out: is a file")


@pytest.mark.parametrize(("text", "line", "field", "problem"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])  # fmt: skip
def test_a_dry_run_stops_at_a_bad_grid_as_the_run_does(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str,
                                                       line: int | None, field: str, problem: str) -> None:  # fmt: skip
    grid = tmp_path / "grid.toml"
    grid.write_text(text, encoding="utf-8")
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out)]) == 2
    run = capsys.readouterr().err
    assert main(["sweep", str(grid), "--out", str(out), "--dry-run"]) == 2
    assert capsys.readouterr().err == run and problem in run
    assert not out.exists()


def test_a_dry_run_stops_at_a_bad_trace_line_as_the_run_does(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    lines = (SAMPLES / "demo-jobs.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = re.sub(r'"duration_s": [0-9.]+', '"duration_s": "abc"', lines[2])
    trace = tmp_path / "jobs.jsonl"
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")
    grid = tmp_path / "grid.toml"
    grid.write_text(HEAD.replace(f"{SAMPLES}/demo-jobs.jsonl", str(trace)) + AXES, encoding="utf-8")
    for dry_run in ([], ["--dry-run"]):
        assert main(["sweep", str(grid), "--out", str(tmp_path / "sweep"), *dry_run]) == 2
        assert capsys.readouterr().err.startswith(f"fleetsched: {trace}:3: duration_s: ")
    assert not (tmp_path / "sweep").exists()

