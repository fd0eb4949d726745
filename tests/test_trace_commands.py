"""`fleetsched trace synth` and `trace cluster`: seeded, byte-identical output; one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fleetsched.cli import main
from scheduler.cluster import load_cluster
from traces.formats import read_trace_jobs

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
SPEC = """jobs = 120
arrival = "diurnal"
jobs_per_hour = 30
gpu_mix = { 1 = 0.5, 4 = 0.3, 8 = 0.2 }
share_fraction = 0.2
mig_fraction = 0.1
teams = { research = 2, prod = 1 }
preemptible_share = 0.5
"""


def synth(tmp_path: Path, name: str, *extra: str) -> bytes:
    out = tmp_path / name
    assert main(["trace", "synth", "--out", str(out), *extra]) == 0
    return out.read_bytes()


def test_synth_is_seeded_and_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    first = synth(tmp_path, "a.jsonl", "--spec", str(spec), "--seed", "7")
    assert first == synth(tmp_path, "b.jsonl", "--spec", str(spec), "--seed", "7")
    assert first != synth(tmp_path, "c.jsonl", "--spec", str(spec), "--seed", "8")
    jobs = list(read_trace_jobs(tmp_path / "a.jsonl"))
    assert len(jobs) == 120 and {job.labels.team for job in jobs} == {"research", "prod"}
    assert "wrote 120 spec jobs (seed 7)" in capsys.readouterr().out
    synth(tmp_path, "d.parquet", "--spec", str(spec), "--jobs", "40", "--arrival", "poisson")
    assert len(list(read_trace_jobs(tmp_path / "d.parquet"))) == 40


def test_synth_gavel_stream(tmp_path: Path) -> None:
    synth(tmp_path, "g.jsonl", "--generator", "gavel", "--multi-gpu", "--jobs", "300", "--jobs-per-hour", "12")
    jobs = list(read_trace_jobs(tmp_path / "g.jsonl"))
    assert len(jobs) == 300 and all(job.speedups and job.labels.model for job in jobs)
    assert {job.request.gpus for job in jobs} <= {1, 2, 4, 8}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobz = 3\n", ":1: jobz: unknown field"),
        ("jobs = 10\ngpu_mix = { 1 = 0.5 }\n", ":2: gpu_mix:"),
        ("gpu_mix = { one = 1.0 }\n", ":1: gpu_mix: keys must be whole numbers"),
        ("arrival = \"bursty\"\n", ":1: arrival: must be one of poisson, diurnal"),
        ("jobs = [\n", ":1: not valid TOML"),
    ],
    ids=["unknown-field", "mix-not-summing-to-one", "mix-key", "arrival", "syntax"],
)
def test_bad_specs_are_one_line_and_write_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    assert main(["trace", "synth", "--spec", str(spec), "--out", str(tmp_path / "out.jsonl")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"fleetsched: {spec}") and expected in error and error.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


@pytest.mark.skipif(not SHARED.exists(), reason="the shared traces are not beside this checkout")
@pytest.mark.parametrize(
    ("nodes", "gpus"),
    [("alibaba-gpu-v2023/openb_node_list_all_node.csv", 6212), ("alibaba-spot-gpu-v2026/node_info_df.csv", 10412)],
)
def test_cluster_from_node_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str], nodes: str, gpus: int) -> None:
    out = tmp_path / "cluster.toml"
    assert main(["trace", "cluster", str(SHARED / nodes), "--out", str(out)]) == 0
    assert f"{gpus:,} GPUs" in capsys.readouterr().out
    cluster = load_cluster(out)
    assert sum(p.nodes * p.gpus_per_node for p in cluster.pools.values()) == gpus
    assert all(p.usd_per_node_hour > 0 for p in cluster.pools.values())


def test_cluster_from_a_bad_node_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = tmp_path / "nodes.csv"
    nodes.write_text("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,Z9000\n")
    assert main(["trace", "cluster", str(nodes), "--out", str(tmp_path / "c.toml")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {nodes}:2: model:")
    assert not (tmp_path / "c.toml").exists()


# -- --out in a folder that does not exist: made, as simulate makes it, and removed on failure ---------------------

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"


def test_convert_makes_the_missing_folders_above_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = SAMPLES / "demo-jobs.jsonl"
    assert main(["trace", "convert", str(trace), "--out", str(tmp_path / "here.jsonl")]) == 0
    assert main(["trace", "convert", str(trace), "--out", str(tmp_path / "new/deeper/t.jsonl")]) == 0
    assert "wrote " in capsys.readouterr().out
    assert (tmp_path / "new/deeper/t.jsonl").read_bytes() == (tmp_path / "here.jsonl").read_bytes()
    assert sorted(path.name for path in (tmp_path / "new/deeper").iterdir()) == ["t.jsonl"]


def test_synth_makes_the_missing_folders_above_out(tmp_path: Path) -> None:
    assert synth(tmp_path, "new/s.parquet", "--jobs", "10") == synth(tmp_path, "s.parquet", "--jobs", "10")
    assert sorted(path.name for path in (tmp_path / "new").iterdir()) == ["s.parquet"]


def test_a_failed_convert_removes_the_folders_it_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "bad.jsonl"
    first = (SAMPLES / "demo-jobs.jsonl").read_text().splitlines()[0]
    second = re.sub(r'"duration_s": [0-9.]+', '"duration_s": "abc"', first.replace('"llm-pretrain"', '"other"'))
    trace.write_text(first + "\n" + second + "\n")
    assert main(["trace", "convert", str(trace), "--out", str(tmp_path / "new/deeper/t.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {trace}:2: duration_s: ")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.jsonl"]


def test_out_below_a_file_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("mine\n")
    assert main(["trace", "synth", "--jobs", "10", "--out", str(tmp_path / "file/new/s.jsonl")]) == 2
    error = capsys.readouterr().err
    assert error == f"fleetsched: --out: cannot write {tmp_path}/file/new/s.jsonl: {tmp_path}/file is not a folder\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"] and (tmp_path / "file").read_text() == "mine\n"


# -- trace cluster --out: a .toml file, as convert's --out is a trace file ------------------------------------------

NODES = "sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,A100-SXM4-80GB\nn1,1,1,2,T4\n"


def test_cluster_refuses_an_out_that_is_not_toml_and_keeps_the_file(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(NODES)
    trace = tmp_path / "mine.jsonl"
    trace.write_bytes((SAMPLES / "demo-jobs.jsonl").read_bytes())
    assert main(["trace", "cluster", str(nodes), "--out", str(trace)]) == 2
    assert capsys.readouterr().err == "fleetsched: --out: write a .toml cluster file, got 'mine.jsonl'\n"
    assert trace.read_bytes() == (SAMPLES / "demo-jobs.jsonl").read_bytes()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mine.jsonl", "nodes.csv"]


def test_cluster_refuses_an_out_that_is_its_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(NODES)
    assert main(["trace", "cluster", str(nodes), "--out", str(nodes)]) == 2
    assert capsys.readouterr().err == "fleetsched: --out: the output would overwrite the input\n"
    assert nodes.read_text() == NODES


def test_cluster_replaces_a_toml_out_and_makes_missing_folders(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    nodes = tmp_path / "nodes.csv"
    nodes.write_text(NODES)
    old = tmp_path / "old.toml"
    old.write_text("# an older cluster file\n")
    assert main(["trace", "cluster", str(nodes), "--out", str(old)]) == 0
    assert main(["trace", "cluster", str(nodes), "--out", str(tmp_path / "new/c.toml")]) == 0
    assert "2 pools, 2 nodes, 10 GPUs" in capsys.readouterr().out
    assert old.read_bytes() == (tmp_path / "new/c.toml").read_bytes()
    assert sum(pool.nodes * pool.gpus_per_node for pool in load_cluster(old).pools.values()) == 10


# -- trace synth options: checked as simulate checks its own, named as given -----------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--seed", "-1"], "fleetsched: --seed: must be a whole number from 0 to 4294967295, got -1\n"),
        (["--generator", "gavel", "--arrival", "diurnal"],
         "fleetsched: --arrival: has no effect with --generator gavel: its arrivals are Poisson\n"),
        (["--multi-gpu"], "fleetsched: --multi-gpu: has no effect with --generator spec: set gpu_mix in a --spec file\n"),
        (["--jobs-per-hour", "0"], "fleetsched: --jobs-per-hour: must be > 0, got 0.0\n"),
        (["--jobs", "-5"], "fleetsched: --jobs: must be a whole number >= 0, got -5\n"),
        (["--generator", "gavel", "--jobs-per-hour", "0"], "fleetsched: --jobs-per-hour: must be > 0, got 0.0\n"),
    ],
    ids=["negative-seed", "arrival-with-gavel", "multi-gpu-with-spec", "jobs-per-hour-zero", "jobs-negative",
         "gavel-jobs-per-hour-zero"],
)  # fmt: skip
def test_bad_synth_options_are_one_line_naming_the_option_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    assert main(["trace", "synth", *options, "--out", str(tmp_path / "new/out.jsonl")]) == 2
    assert capsys.readouterr().err == message
    assert list(tmp_path.iterdir()) == []


def test_a_bad_value_from_a_spec_file_names_the_files_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text("jobs = 10\njobs_per_hour = 0\n")
    assert main(["trace", "synth", "--spec", str(spec), "--jobs", "20", "--out", str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err == f"fleetsched: {spec}:2: jobs_per_hour: must be > 0, got 0\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["spec.toml"]


def test_a_spec_field_gavel_would_ignore_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text("jobs = 10\ngpu_mix = { 1 = 1.0 }\n")
    out = tmp_path / "out.jsonl"
    assert main(["trace", "synth", "--generator", "gavel", "--spec", str(spec), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (f"fleetsched: {spec}:2: gpu_mix: has no effect with --generator gavel: "
                                       "it uses jobs and jobs_per_hour only\n")  # fmt: skip
    spec.write_text("jobs = 10\njobs_per_hour = 5\n")
    assert main(["trace", "synth", "--generator", "gavel", "--spec", str(spec), "--out", str(out)]) == 0
    assert len(list(read_trace_jobs(out))) == 10
