"""The canonical job record: `to_job` defaults and request kinds, the .jsonl/.csv readers, errors."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, JobKind, Labels, RequestKind
from traces.canonical import read_jobs, to_job

DEMO = Path(__file__).resolve().parents[1] / "traces" / "samples" / "demo-jobs.jsonl"


def jsonl(*records: dict[str, Any] | str) -> str:
    """JSON lines: dicts are encoded, strings are written as they are (for blank and broken lines)."""
    return "".join((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- to_job --------------------------------------------------------------------------------------


def test_omitted_fields_take_their_defaults() -> None:
    job = to_job({"id": "j", "duration_s": 60})
    assert job == Job(id="j", duration_s=60.0)
    assert job.request == GpuRequest(kind=RequestKind.WHOLE, gpus=1)
    assert (job.submit_s, job.replicas, job.priority, job.preemptible) == (0.0, 1, 0, False)
    assert job.gpu_models == frozenset()
    assert (job.checkpoint_interval_s, job.checkpoint_overhead_s, job.restore_s) == (0.0, 0.0, 0.0)
    assert (job.kind, job.labels, job.status) == (JobKind.BATCH, Labels(), "completed")


def test_empty_and_null_values_count_as_omitted() -> None:
    job = to_job({"id": "j", "duration_s": 60, "submit_s": "", "priority": None, "team": "", "gpu_milli": ""})
    assert job == Job(id="j", duration_s=60.0)


def test_every_field() -> None:
    job = to_job({
        "id": " full ", "submit_s": 5, "duration_s": 3600.5, "gpus": 2, "replicas": 3, "gpu_models": ["H100"],
        "priority": -2, "preemptible": True, "checkpoint_interval_s": 600, "checkpoint_overhead_s": 20,
        "restore_s": 45, "kind": "service", "team": "t", "project": "p", "model": "m", "experiment": "e",
        "status": "killed",
    })
    assert job == Job(
        id="full", request=GpuRequest(kind=RequestKind.WHOLE, gpus=2), submit_s=5.0, duration_s=3600.5, replicas=3,
        gpu_models=frozenset({"H100-80GB"}), priority=-2, preemptible=True, checkpoint_interval_s=600.0,
        checkpoint_overhead_s=20.0, restore_s=45.0, kind=JobKind.SERVICE,
        labels=Labels(team="t", project="p", model="m", experiment="e"), status="killed",
    )
    assert job.checkpointable


@pytest.mark.parametrize(
    ("fields", "request_"),
    [
        pytest.param({}, GpuRequest(kind=RequestKind.WHOLE, gpus=1), id="whole-default"),
        pytest.param({"gpus": 4}, GpuRequest(kind=RequestKind.WHOLE, gpus=4), id="whole-4"),
        pytest.param({"gpus": 2, "gpu_milli": 1000}, GpuRequest(kind=RequestKind.WHOLE, gpus=2), id="whole-1000-milli"),
        pytest.param({"gpu_milli": 250}, GpuRequest(kind=RequestKind.SHARE, milli=250), id="share"),
        pytest.param(
            {"gpu_milli": 300, "gpu_memory_gb": 4}, GpuRequest(kind=RequestKind.SHARE, milli=300, memory_mib=4096),
            id="share-with-memory",
        ),
        pytest.param(
            {"gpu_milli": 100, "gpu_memory_gb": 0.5}, GpuRequest(kind=RequestKind.SHARE, milli=100, memory_mib=512),
            id="share-fractional-memory",
        ),
        pytest.param(
            {"mig_profile": "1g.5gb"}, GpuRequest(kind=RequestKind.MIG, gpus=1, mig_profile="1g.5gb"), id="mig",
        ),
        pytest.param(
            {"mig_profile": " 3g.20gb ", "gpus": 2}, GpuRequest(kind=RequestKind.MIG, gpus=2, mig_profile="3g.20gb"),
            id="mig-2-instances",
        ),
    ],
)
def test_request_kind_is_derived(fields: dict[str, Any], request_: GpuRequest) -> None:
    assert to_job({"id": "j", "duration_s": 1, **fields}).request == request_


@pytest.mark.parametrize(
    ("gpu_models", "keys"),
    [
        pytest.param(["A100-40GB"], {"A100-SXM4-40GB"}, id="short-form"),
        pytest.param(["NVIDIA-H100-80GB-HBM3"], {"H100-80GB"}, id="gfd-name"),
        pytest.param(["NVIDIA-A100-SXM4-40GB-MIG-1g.5gb"], {"A100-SXM4-40GB"}, id="gfd-mig-name"),
        pytest.param(["t4", "nvidia-tesla-t4", "T4-16GB"], {"T4-16GB"}, id="same-model-thrice"),
        pytest.param(["A10G", "H100"], {"A10G-24GB", "H100-80GB"}, id="two-models"),
        pytest.param("A10G| H100", {"A10G-24GB", "H100-80GB"}, id="pipe-separated-text"),
        pytest.param([], set(), id="empty-list-means-any"),
    ],
)
def test_gpu_models_resolve_to_catalog_keys(gpu_models: Any, keys: set[str]) -> None:
    assert to_job({"id": "j", "duration_s": 1, "gpu_models": gpu_models}).gpu_models == frozenset(keys)


def test_labels() -> None:
    job = to_job({"id": "j", "duration_s": 1, "team": "research", "project": "llm", "model": "llama", "experiment": 7})
    assert job.labels == Labels(team="research", project="llm", model="llama", experiment="7")


@pytest.mark.parametrize("version", [1, "1"])
def test_schema_version_1_is_accepted(version: Any) -> None:
    assert to_job({"schema_version": version, "id": "j", "duration_s": 1}) == Job(id="j", duration_s=1.0)


def test_to_job_names_source_and_line() -> None:
    with pytest.raises(InputError) as caught:
        to_job({"id": "j"}, source="jobs.jsonl", line=7)
    assert str(caught.value) == "jobs.jsonl:7: duration_s: required"


# -- reading files -------------------------------------------------------------------------------


def test_jsonl_file(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.jsonl", jsonl(
        {"id": "a", "duration_s": 10},
        "",
        {"id": "b", "duration_s": 20, "gpu_milli": 500, "gpu_memory_gb": 2},
    ))
    jobs = list(read_jobs(path))
    assert [job.id for job in jobs] == ["a", "b"]
    assert jobs[1].request == GpuRequest(kind=RequestKind.SHARE, milli=500, memory_mib=2048)


def test_csv_file_with_pipes_booleans_and_empty_cells(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", (
        "schema_version,id,submit_s,duration_s,gpus,gpu_models,preemptible,priority,team,kind\n"
        "1,a,5,3600,2,A100-40GB|NVIDIA-H100-80GB-HBM3,true,5,research,service\n"
        "1,b,,60,,,no,,,\n"
        ",c,,60,,T4,YES,-1,,\n"
        ",d,,60,,,0,,,\n"
    ))
    a, b, c, d = read_jobs(path)
    assert a == Job(
        id="a", request=GpuRequest(gpus=2), submit_s=5.0, duration_s=3600.0,
        gpu_models=frozenset({"A100-SXM4-40GB", "H100-80GB"}), priority=5, preemptible=True,
        kind=JobKind.SERVICE, labels=Labels(team="research"),
    )
    assert b == Job(id="b", duration_s=60.0)
    assert (c.preemptible, c.priority, c.gpu_models) == (True, -1, frozenset({"T4-16GB"}))
    assert d.preemptible is False


@pytest.mark.parametrize(("name", "text"), [("jobs.jsonl", '{"id": "a", "duration_s": 10}\n'),
                                           ("jobs.csv", "id,duration_s\na,10\n")], ids=["jsonl", "csv"])
def test_a_byte_order_mark_is_read_past(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())  # as Notepad saves "UTF-8 with BOM"
    (job,) = read_jobs(path)
    assert job.id == "a" and job.duration_s == 10


@pytest.mark.parametrize(
    ("name", "text", "line", "field", "problem"),
    [("jobs.csv", "id,duration_s,gpus,gpus\na,5,1,4\n", 1, "gpus", "column named twice in the header"),
     ("jobs.jsonl", '{"id": "a", "duration_s": 5}\n{"id": "n", "duration_s": 5, "gpus": 4, "gpus": 1}\n', 2, "gpus",
      "given twice in one record")],
    ids=["csv-column-twice", "json-key-twice"],
)
def test_a_field_given_twice_is_refused_not_the_last_one_kept(
    tmp_path: Path, name: str, text: str, line: int, field: str, problem: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as caught:
        list(read_jobs(path))
    assert str(caught.value) == f"{path}:{line}: {field}: {problem}"


def test_text_that_only_looks_like_a_second_key_is_read(tmp_path: Path) -> None:
    (job,) = read_jobs(write(tmp_path, "jobs.jsonl", '{"id": "a", "duration_s": 5, "team": "x\\":y"}\n'))
    assert job.labels.team == 'x":y'


def test_demo_jobs_read_fully() -> None:
    jobs = {job.id: job for job in read_jobs(DEMO)}
    assert len(jobs) == len([line for line in DEMO.read_text(encoding="utf-8").splitlines() if line.strip()]) == 17
    assert jobs["llm-pretrain"].request == GpuRequest(gpus=8)
    assert (jobs["llm-pretrain"].replicas, jobs["llm-pretrain"].priority) == (2, 10)
    assert jobs["llm-pretrain"].labels == Labels(team="research", project="llm", model="llama-70b")
    assert jobs["llm-sweep-1"].preemptible and jobs["llm-sweep-1"].checkpoint_interval_s == 900.0
    assert jobs["finetune-b"].gpu_models == frozenset({"A10G-24GB", "H100-80GB"})
    assert jobs["notebook-1"].request == GpuRequest(kind=RequestKind.SHARE, milli=300, memory_mib=4096)
    assert jobs["notebook-1"].kind is JobKind.SERVICE
    assert jobs["infer-medium"].request == GpuRequest(kind=RequestKind.MIG, gpus=2, mig_profile="3g.20gb")
    kinds = {kind: sum(job.request.kind is kind for job in jobs.values()) for kind in RequestKind}
    assert kinds == {RequestKind.WHOLE: 9, RequestKind.SHARE: 4, RequestKind.MIG: 4}


# -- bad records: one line naming file, line, field and problem ----------------------------------

OK = {"id": "ok", "duration_s": 1}


def jsonl_file(*records: dict[str, Any] | str) -> tuple[str, str]:
    return "jobs.jsonl", jsonl(*records)


def csv_file(text: str) -> tuple[str, str]:
    return "jobs.csv", text


def bad(record: dict[str, Any]) -> tuple[str, str]:
    """A .jsonl file whose second line is `record` (the first is a good record)."""
    return jsonl_file(OK, record)


BAD_FILES = [
    pytest.param(bad({"id": "b", "duration_s": 1, "submit_s": "soon"}), 2, "submit_s",
                 "not a number: 'soon'", id="bad-number"),
    pytest.param(bad({"id": "b", "duration_s": -5}), 2, "duration_s",
                 "must be a finite number >= 0, got -5", id="negative-duration"),
    pytest.param(bad({"id": "b", "duration_s": "NaN"}), 2, "duration_s",
                 "must be a finite number >= 0, got 'NaN'", id="nan-duration"),
    pytest.param(bad({"id": "b", "duration_s": True}), 2, "duration_s",
                 "must be a number, not true", id="boolean-duration"),
    pytest.param(bad({"id": "b", "submit_s": 3}), 2, "duration_s", "required", id="missing-duration"),
    pytest.param(bad({"duration_s": 3}), 2, "id", "required", id="missing-id"),
    pytest.param(bad({"id": "  ", "duration_s": 3}), 2, "id", "required", id="blank-id"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_count": 2}), 2, "gpu_count",
                 "unknown field; the canonical record has id, submit_s, ", id="unknown-field"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_models": ["H100", "H1000"]}), 2, "gpu_models",
                 "unknown GPU model 'H1000'; known: ", id="unknown-gpu-model"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_models": {"H100": 1}}), 2, "gpu_models",
                 "must be a list of GPU models", id="gpu-models-not-a-list"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_milli": 1500}), 2, "gpu_milli",
                 "a share is at most 1000 milli; use gpus for more", id="milli-over-1000"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_milli": 0}), 2, "gpu_milli",
                 "must be a whole number >= 1, got 0", id="milli-zero"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpu_milli": 500, "gpus": 2}), 2, "gpus",
                 "a share (gpu_milli < 1000) is part of one GPU; got gpus = 2", id="share-of-two-gpus"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpus": 2, "gpu_memory_gb": 8}), 2, "gpu_memory_gb",
                 "applies to shares only (gpu_milli < 1000)", id="memory-on-whole-gpus"),
    pytest.param(bad({"id": "b", "duration_s": 3, "mig_profile": "1g.5gb", "gpu_milli": 500}), 2,
                 "mig_profile", "a MIG request takes no gpu_milli or gpu_memory_gb", id="mig-with-milli"),
    pytest.param(bad({"id": "b", "duration_s": 3, "mig_profile": "1g.5gb", "gpu_memory_gb": 5}), 2,
                 "mig_profile", "a MIG request takes no gpu_milli or gpu_memory_gb", id="mig-with-memory"),
    pytest.param(bad({"id": "b", "duration_s": 3, "mig_profile": "9g.99gb"}), 2, "mig_profile",
                 "no GPU in the catalog has MIG profile '9g.99gb'; known: 1g.10gb, ", id="mig-profile-no-gpu-has"),
    pytest.param(bad({"id": "b", "duration_s": 3, "mig_profile": "1g.5gb", "gpus": 0}), 2,
                 "gpus", "a MIG request needs at least one instance", id="mig-zero-instances"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpus": 0}), 2, "gpus",
                 "the job asks for no GPU (CPU-only jobs are not scheduled here)", id="cpu-only"),
    pytest.param(bad({"id": "b", "duration_s": 3, "gpus": 1.5}), 2, "gpus",
                 "must be a whole number >= 0, got 1.5", id="fractional-gpus"),
    pytest.param(bad({"id": "b", "duration_s": 3, "replicas": 0}), 2, "replicas",
                 "must be a whole number >= 1, got 0", id="zero-replicas"),
    pytest.param(bad({"id": "b", "duration_s": 3, "preemptible": "maybe"}), 2, "preemptible",
                 "must be true or false, got 'maybe'", id="bad-boolean"),
    pytest.param(bad({"id": "b", "duration_s": 3, "preemptible": 2}), 2, "preemptible",
                 "must be true or false, got 2", id="number-as-boolean"),
    pytest.param(bad({"id": "b", "duration_s": 3, "kind": "cron"}), 2, "kind",
                 "must be one of batch, service, got 'cron'", id="bad-kind"),
    pytest.param(bad({"id": "b", "duration_s": 3, "status": "lost"}), 2, "status",
                 "must be one of completed, failed, killed, got 'lost'", id="bad-status"),
    pytest.param(bad({"id": "b", "duration_s": 3, "priority": 1.5}), 2, "priority",
                 "must be a whole number, got 1.5", id="fractional-priority"),
    pytest.param(bad({"id": "b", "duration_s": 3, "priority": "high"}), 2, "priority",
                 "not a number: 'high'", id="text-priority"),
    pytest.param(bad({"id": "b", "duration_s": 3, "priority": True}), 2, "priority",
                 "must be a whole number, got True", id="boolean-priority"),
    pytest.param(bad({"schema_version": 2, "id": "b", "duration_s": 3}), 2, "schema_version",
                 "this reader knows schema version 1", id="schema-version-2"),
    pytest.param(jsonl_file(OK, {"id": "other", "duration_s": 1}, "", {"id": "ok", "duration_s": 2}), 4,
                 "id", "duplicate job id 'ok'", id="duplicate-id"),
    pytest.param(jsonl_file(OK, '{"id": "b", duration_s: 1}'), 2, "",
                 "not valid JSON: Expecting property name enclosed in double quotes", id="invalid-json"),
    pytest.param(jsonl_file(OK, '["b", 1]'), 2, "", "a record must be a JSON object", id="json-array"),
    pytest.param(jsonl_file(OK, '"b"'), 2, "", "a record must be a JSON object", id="json-string"),
    pytest.param(csv_file("id,gpus\na,1\n"), 1, "duration_s", "missing column", id="csv-missing-column"),
    pytest.param(csv_file(""), 1, "id", "missing column", id="csv-empty-file"),
    pytest.param(csv_file("id,duration_s\na,1\nb,2,3\n"), 3, "", "3 values for 2 columns", id="csv-extra-value"),
    pytest.param(csv_file("id,duration_s,preemptible\na,1,no\n\nb,1,perhaps\n"), 4, "preemptible",
                 "must be true or false, got 'perhaps'", id="csv-bad-boolean-after-blank-line"),
    pytest.param(csv_file("id,duration_s,colour\na,1,red\n"), 2, "colour", "unknown field", id="csv-unknown-column"),
    pytest.param(csv_file("id,duration_s\na,1\na,2\n"), 3, "id", "duplicate job id 'a'", id="csv-duplicate-id"),
    pytest.param(csv_file("schema_version,id,duration_s\n2,a,1\n"), 2, "schema_version",
                 "this reader knows schema version 1", id="csv-schema-version-2"),
]


@pytest.mark.parametrize(("file", "line", "field", "problem"), BAD_FILES)
def test_bad_job_file(tmp_path: Path, file: tuple[str, str], line: int, field: str, problem: str) -> None:
    path = write(tmp_path, *file)
    with pytest.raises(InputError) as caught:
        list(read_jobs(path))
    error = caught.value
    assert (error.source, error.line, error.field) == (str(path), line, field)
    where = f"{path}:{line}: " + (f"{field}: " if field else "")
    assert str(error).startswith(where)
    assert problem in str(error)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        pytest.param(lambda tmp: tmp / "missing.jsonl", "No such file or directory", id="missing-jsonl"),
        pytest.param(lambda tmp: tmp / "missing.csv", "No such file or directory", id="missing-csv"),
        pytest.param(lambda tmp: tmp, "Is a directory", id="directory"),
    ],
)
def test_unreadable_file(tmp_path: Path, make: Any, problem: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as caught:
        list(read_jobs(path))
    assert str(caught.value) == f"{path}: {problem}"
    assert caught.value.line is None


# -- streaming -----------------------------------------------------------------------------------


def test_read_jobs_streams_and_fails_only_at_the_bad_line(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.jsonl", jsonl({"id": "a", "duration_s": 1}, {"id": "b", "duration_s": 2}, "{oops"))
    jobs = read_jobs(path)
    assert isinstance(jobs, types.GeneratorType)
    assert next(jobs).id == "a"
    assert next(jobs).id == "b"
    with pytest.raises(InputError) as caught:
        next(jobs)
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: not valid JSON: ")


def test_csv_streams_too(tmp_path: Path) -> None:
    path = write(tmp_path, "jobs.csv", "id,duration_s\na,1\nb,-1\n")
    jobs = read_jobs(path)
    assert next(jobs) == Job(id="a", duration_s=1.0)
    with pytest.raises(InputError, match=r":3: duration_s: "):
        next(jobs)


# -- non-finite numbers and top-level tables --------------------------------------------------


@pytest.mark.parametrize("text", ["nan", "inf", "-inf"])
def test_non_finite_priority_is_an_input_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, "jobs.csv", f"id,duration_s,priority\na,1,{text}\n")
    with pytest.raises(InputError) as caught:
        list(read_jobs(path))
    assert (caught.value.line, caught.value.field) == (2, "priority")


def test_repeated_ids_are_found_past_what_memory_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check spills ids' hashes to a file and reads it back a slice of hashes at a time; a
    repeat far from its first is named at its line, and the earliest repeat wins."""
    from traces import unique

    monkeypatch.setattr(unique, "PAIRS_IN_MEMORY", 64)
    monkeypatch.setattr(unique, "SLICE_PAIRS", 100)
    lines = [json.dumps({"id": f"job-{n}", "duration_s": 1}) for n in range(5000)]
    lines.insert(4000, json.dumps({"id": "job-3999", "duration_s": 1}))  # line 4001 repeats line 4000
    lines.insert(4500, json.dumps({"id": "job-17", "duration_s": 1}))  # line 4501 repeats line 18: later
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as raised:
        list(read_jobs(path))
    assert (raised.value.line, raised.value.field) == (4001, "id")
    assert raised.value.problem == "duplicate job id 'job-3999' (first at line 4000)"
    distinct = tmp_path / "distinct.jsonl"
    distinct.write_text("\n".join(line for n, line in enumerate(lines) if n not in (4000, 4500)) + "\n")
    assert len(list(read_jobs(distinct))) == 5000
