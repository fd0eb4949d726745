"""Trace readers (openb, Philly), detection, inspection, conversion and bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetsched.cli import main
from scheduler.errors import InputError
from scheduler.model import JobKind, RequestKind
from tests.builders import make_job, mig_request, share, whole
from traces.base import CPU_ONLY, ReadReport
from traces.canonical import to_job, to_record
from traces.formats import FORMATS, detect, read_trace, read_trace_jobs
from traces.inspect import summarise
from traces.openb import NEVER_SCHEDULED
from traces.philly import gang, json_objects

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = SHARED / "alibaba-gpu-v2023"
PHILLY = SHARED / "pollux-adaptdl" / "traces" / "philly.csv"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="the shared traces are not beside this checkout")


def inspect(path: Path, name: str | None = None, skip: bool = False) -> dict[str, object]:
    report = ReadReport(str(path))
    return summarise(read_trace(path, name, skip_bad_rows=skip, report=report), report).as_dict()


@needs_shared
def test_openb_default_matches_its_readme() -> None:
    data = inspect(OPENB / "openb_pod_list_default.csv")
    requests = data["requests"]
    assert data["format"] == "openb" and data["rows"] == 8152
    # README: 1088 CPU-only, 6989 1-GPU (3078 of them fractional), 16 x 2-GPU, 15 x 4-GPU, 44 x 8-GPU.
    assert requests["cpu_only"] == 1088
    assert requests["shares"] == 3078 and requests["whole_by_gpus"]["1"] + requests["shares"] == 6989
    assert {k: v for k, v in requests["whole_by_gpus"].items() if k != "1"} == {"2": 16, "4": 15, "8": 44}
    # README: 897 pods never scheduled (empty scheduled_time); 36 of them are CPU-only.
    assert data["dropped"] == {CPU_ONLY: 1088, NEVER_SCHEDULED: 861}
    assert data["jobs"] == 8152 - 1088 - 861
    assert round(data["submit_span_s"] / 86400, 1) == 149.3
    assert requests["top_share_milli"]["810"] == 1078


@needs_shared
def test_openb_variants_model_constraints_and_five_column_files() -> None:
    jobs = list(read_trace_jobs(OPENB / "openb_pod_list_gpuspec33.csv"))
    constrained = [job for job in jobs if job.gpu_models]
    assert constrained and all(job.preemptible == (job.priority == 0) for job in jobs)
    assert {"T4-16GB", "openb-G2", "V100-32GB"} <= set().union(*(job.gpu_models for job in constrained))
    rows = list(read_trace(OPENB / "openb_pod_list_multigpu50.csv"))
    assert all(row.job is None or (row.job.submit_s == 0 and row.job.duration_s == 0) for row in rows)
    assert any(row.job and row.job.request.gpus == 8 for row in rows)


@needs_shared
def test_philly_extract_matches_its_readme() -> None:
    data = inspect(PHILLY)
    assert (data["rows"], data["jobs"], data["dropped"]) == (82247, 82247, {})
    expected = {1: 76627, 2: 1818, 4: 1870, 8: 1643, 16: 199, 32: 67, 12: 7, 24: 7, 64: 6, 128: 3}
    assert data["requests"]["whole_by_gpus"] == {str(k): v for k, v in sorted(expected.items())}
    assert data["duration_s"]["p50"] == 1144
    assert len(data["teams"]) == 15
    jobs = list(read_trace_jobs(PHILLY))
    assert min(job.submit_s for job in jobs) == 0
    big = [job for job in jobs if job.replicas > 1]
    assert {(job.replicas, job.request.gpus) for job in big} == {(2, 8), (3, 4), (3, 8), (4, 8), (8, 8), (16, 8)}


def test_gang_rule() -> None:
    assert [gang(n) for n in (1, 8, 12, 16, 24, 6)] == [(1, 1), (1, 8), (3, 4), (2, 8), (3, 8), (1, 6)]


JOB_LOG = [
    {"status": "Pass", "vc": "vc1", "jobid": "a", "user": "u1", "submitted_time": "2017-10-01 00:00:10",
     "attempts": [{"start_time": "2017-10-01 00:01:00", "end_time": "2017-10-01 00:02:00",
                   "detail": [{"ip": "m1", "gpus": ["gpu0", "gpu1"]}]},
                  {"start_time": "2017-10-01 00:03:00", "end_time": "2017-10-01 00:05:00",
                   "detail": [{"ip": "m2", "gpus": [f"gpu{i}" for i in range(8)]},
                              {"ip": "m3", "gpus": [f"gpu{i}" for i in range(8)]}]}]},
    {"status": "Killed", "vc": "vc2", "jobid": "b", "user": "u2", "submitted_time": "2017-10-01 00:00:00",
     "attempts": [{"start_time": None, "end_time": None, "detail": [{"ip": "m4", "gpus": ["gpu0"]}]}]},
    {"status": "Failed", "vc": "vc2", "jobid": "c", "user": "u2", "submitted_time": "2017-10-01 00:00:05",
     "attempts": []},
]


def test_philly_job_log_streams_objects_with_attempts(tmp_path: Path) -> None:
    path = tmp_path / "cluster_job_log"
    path.write_text(json.dumps(JOB_LOG, indent=1))
    assert detect(path).name == "philly-log"
    rows = list(read_trace(path))
    first = rows[0].job
    assert first is not None and not rows[0].dropped
    assert (first.submit_s, first.duration_s, first.replicas, first.request.gpus) == (10.0, 180.0, 2, 8)
    assert (first.labels.team, first.labels.project, first.status) == ("vc1", "u1", "completed")
    assert rows[1].dropped == "no attempt with start and end times" and rows[1].job and rows[1].job.status == "killed"
    assert rows[2].dropped == "no GPU recorded in any attempt" and rows[2].job is None
    # Tiny chunks force objects to straddle reads; lines still point at each object.
    lines = [line for line, _ in json_objects(path, chunk_chars=7)]
    assert lines == [line for line, _ in json_objects(path)] and lines[0] == 2


def test_philly_job_log_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster_job_log"
    path.write_text('[\n{"jobid": "a", "status": "Pass", "submitted_time": "2017-10-01 00:00:00", "attempts": []},\n{"jobid": \n')
    with pytest.raises(InputError, match=r"cluster_job_log:3: not valid JSON"):
        list(read_trace(path))
    path.write_text('{"not": "a list"}')
    with pytest.raises(InputError, match="not a JSON list"):
        list(read_trace(path, "philly-log"))
    bad = [dict(JOB_LOG[0], status="Lost")]
    path.write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"cluster_job_log:1: status: must be one of Pass, Failed, Killed"):
        list(read_trace(path, "philly-log"))


BAD_FILES = {
    "openb-bad-number": ("pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1,1,1,1000\np1,1,1,two,1000\n", 3, "num_gpu", "not a number"),
    "openb-missing-column": ("pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time\n", None, "", ""),
    "openb-negative-duration": ("pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\np0,1,1,1,1000,,LS,Running,50,40,45\n", 2, "deletion_time", "before creation_time"),
    "openb-unknown-model": ("pods.csv", "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\np0,1,1,1,1000,Z9000,LS,Running,0,40,5\n", 2, "gpu_spec", "unknown GPU model 'Z9000'"),
    "philly-negative-duration": ("philly.csv", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,-66.0,1,-66.0,vc\n", 2, "duration", "must be a finite number >= 0"),
    "philly-bad-time": ("philly.csv", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,6,1,6,vc\nyesterday,6,1,6,vc\n", 3, "timestamp", "not a time"),
    "philly-gpu-time": ("philly.csv", "timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,6,2,6,vc\n", 2, "gpu_time", "is not duration x num_gpus"),
    "canonical-unknown-model": ("jobs.jsonl", '{"id": "a", "duration_s": 1, "gpu_models": ["Z9000"]}\n', 1, "gpu_models", "unknown GPU model"),
}


@pytest.mark.parametrize(("name", "text", "line", "field", "problem"), list(BAD_FILES.values()), ids=list(BAD_FILES))
def test_bad_files_stop_with_one_line_and_leave_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: int | None, field: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "out.jsonl"
    assert main(["trace", "convert", str(path), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith(f"fleetsched: {path}:")
    if line is None:
        assert "missing column" in error and "scheduled_time" in error
    else:
        assert error.startswith(f"fleetsched: {path}:{line}: {field}: ") and problem in error
    assert sorted(p.name for p in tmp_path.iterdir()) == [name], "no output, partial or complete, is left behind"
    assert main(["trace", "inspect", str(path)]) == 2


def test_skip_bad_rows_counts_and_reports_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "philly.csv"
    path.write_text("timestamp,duration,num_gpus,gpu_time,cluster\n2017-10-09 07:01:55,6,1,6,vc\nbad,6,1,6,vc\n"
                    "2017-10-09 07:02:55,-1,1,-1,vc\n2017-10-09 08:01:55,60,2,120,vc\n")
    data = inspect(path, skip=True)
    assert (data["rows"], data["jobs"], data["skipped_bad_rows"]) == (4, 2, 2)
    assert [e["line"] for e in data["skipped_examples"]] == [3, 4]
    out = tmp_path / "out.jsonl"
    assert main(["trace", "convert", str(path), "--out", str(out), "--skip-bad-rows"]) == 0
    assert "wrote 2 jobs" in capsys.readouterr().out and len(out.read_text().splitlines()) == 2
    assert main(["trace", "inspect", str(path), "--skip-bad-rows"]) == 0
    assert "bad rows skipped 2" in capsys.readouterr().out


@needs_shared
@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_convert_round_trips_and_is_byte_identical(tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    source = OPENB / "openb_pod_list_gpuspec33.csv"
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    assert main(["trace", "convert", str(source), "--out", str(first)]) == 0
    assert main(["trace", "convert", str(source), "--format", "openb", "--out", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert list(read_trace_jobs(first)) == list(read_trace_jobs(source))
    capsys.readouterr()


def test_detection_and_unknown_formats(tmp_path: Path) -> None:
    mystery = tmp_path / "mystery.txt"
    mystery.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(InputError, match="cannot tell the trace format; give --format, one of"):
        detect(mystery)
    with pytest.raises(InputError, match="unknown format 'nope'"):
        list(read_trace(mystery, "nope"))
    with pytest.raises(InputError, match="no such file"):
        detect(tmp_path / "absent.csv")
    assert {"openb", "philly", "philly-log", "jsonl", "csv", "parquet"} <= set(FORMATS)


def test_convert_refuses_other_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"id": "a", "duration_s": 1}\n')
    assert main(["trace", "convert", str(path), "--out", str(tmp_path / "out.txt")]) == 2
    assert main(["trace", "convert", str(path), "--out", str(path)]) == 2
    assert "--out: the output would overwrite the input" in capsys.readouterr().err


def test_inspect_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "jobs.jsonl"
    records = [to_record(make_job("a", whole(2), replicas=2, team="ml")), to_record(make_job("b", share(250), team="bi")),
               to_record(make_job("c", mig_request("3g.40gb", 2), team="ml"))]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["trace", "inspect", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["requests"]["whole_by_gpus"] == {"4": 1} and data["requests"]["gangs"] == 1
    assert data["requests"]["mig_instances_by_profile"] == {"3g.40gb": 2}
    assert data["teams"]["ml"]["jobs"] == 2 and data["gpu_hours"] == pytest.approx(4 + 0.25 + 6 / 7, abs=1e-3)
    assert main(["trace", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "whole GPUs per job: 4 GPU x 1" in text and "MIG instances: 3g.40gb x 2" in text


_JOBS = st.builds(
    make_job,
    st.text("abcdef0123", min_size=1, max_size=8),
    st.one_of(st.builds(whole, st.integers(1, 8)), st.builds(share, st.integers(1, 999), st.sampled_from([0, 1.5, 8])),
              st.builds(mig_request, st.sampled_from(["1g.10gb", "3g.40gb"]), st.integers(1, 4))),
    replicas=st.integers(1, 4), priority=st.integers(-3, 9), preemptible=st.booleans(),
    submit_s=st.floats(0, 1e7), duration_s=st.floats(0, 1e7), team=st.sampled_from(["", "ml", "bi"]),
    models=st.sampled_from([(), ("H100-80GB",), ("T4-16GB", "A10G-24GB")]),
)


@settings(max_examples=80)
@given(_JOBS)
def test_canonical_records_round_trip(job: object) -> None:
    assert to_job(json.loads(json.dumps(to_record(job)))) == job  # type: ignore[arg-type]


def test_canonical_speedups_and_services() -> None:
    job = to_job({"id": "g", "duration_s": 60, "kind": "service", "speedups": {"V100": 1.0, "K80": 0.25}})
    assert job.kind is JobKind.SERVICE and job.speedups == (("K80-12GB", 0.25), ("V100-16GB", 1.0))
    assert to_job({"id": "g", "duration_s": 60, "speedups": "P100:0.5|V100M32:1"}).speedups == (
        ("P100-16GB", 0.5), ("V100-32GB", 1.0))
    for bad, message in ((3, "must map GPU models"), ({"Z": 1}, "unknown GPU model"), ({"T4": "x"}, "not a number"),
                         ({"T4": 0}, "must be > 0")):
        with pytest.raises(InputError, match=message):
            to_job({"id": "g", "duration_s": 60, "speedups": bad})
    assert to_job({"id": "s", "duration_s": 1, "gpu_milli": 300}).request.kind is RequestKind.SHARE
