"""The GenTD26 duty-cycle reader: pods as one-GPU services carrying their utilisation series."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from scheduler.errors import InputError
from scheduler.model import JobKind
from traces.canonical import write_jsonl
from traces.formats import detect, read_trace_jobs
from traces.parquet import write_parquet

SAMPLE = Path(__file__).resolve().parent.parent / "traces" / "samples" / "gentd26"
HEADER = "value,timestamp_anon,container_ip\n"
# podA: 1000, 1060, (1120 missing), 1180; podB: 1060, 1120. The grid's step is 60 s.
TINY = HEADER + "0.0,1000.0,podA\n5.5,1060.0,podA\n30.0,1060.0,podB\n0.0,1120.0,podB\n100.0,1180.0,podA\n"


def write(tmp_path: Path, text: str, name: str = "duty.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_each_pod_becomes_a_service_holding_one_gpu_for_its_span_with_its_series(tmp_path: Path) -> None:
    jobs = list(read_trace_jobs(write(tmp_path, TINY)))
    assert [job.id for job in jobs] == ["podA", "podB"]  # in the order of their first samples
    pod_a, pod_b = jobs
    assert (pod_a.submit_s, pod_a.duration_s) == (0.0, 240.0)  # 1000 .. 1180 + one period
    assert (pod_b.submit_s, pod_b.duration_s) == (60.0, 120.0)
    assert pod_a.measured is not None and pod_b.measured is not None
    assert pod_a.measured.samples_percent == (0.0, 5.5, None, 100.0)
    assert pod_a.measured.period_s == 60.0
    assert pod_b.measured.samples_percent == (30.0, 0.0)
    assert pod_a.kind is JobKind.SERVICE and pod_a.request.gpus == 1 and not pod_a.preemptible
    assert pod_a.labels.team == ""  # no qps file beside it: the grouping is unknown
    assert pod_a.labels.project == "gentd26"


def test_the_qps_file_beside_it_groups_pods_by_what_they_served(tmp_path: Path) -> None:
    write(
        tmp_path,
        "timestamp_anon,value,container_ip,request_type\n1.0,0.1,podB,API Requests\n"
        "2.0,0.1,,API Requests\n3.0,0.2,podC,Generative Requests\n",
        "qps.csv",
    )
    jobs = list(read_trace_jobs(write(tmp_path, TINY), "gentd26"))
    assert {job.id: job.labels.team for job in jobs} == {"podA": "no-requests", "podB": "api"}


def test_the_bundled_sample_reads_four_pods_on_the_57_second_grid() -> None:
    path = SAMPLE / "pod_gpu_duty_cycle_anon.csv"
    assert detect(path).name == "gentd26"
    jobs = {job.id[:8]: job for job in read_trace_jobs(path)}
    assert sorted(jobs) == ["0ec705c2", "3c7ef978", "9032a010", "ae3389e2"]
    teams = {key: job.labels.team for key, job in jobs.items()}
    assert teams == {"0ec705c2": "no-requests", "3c7ef978": "generative", "9032a010": "no-requests",
                     "ae3389e2": "generative"}  # fmt: skip
    rows = [line.split(",") for line in path.read_text(encoding="utf-8").splitlines()[1:]]
    for key, job in jobs.items():
        mine = [(float(t), float(v)) for v, t, pod in rows if pod.startswith(key)]
        assert job.measured is not None and job.measured.period_s == 57.0
        present = [(i, v) for i, v in enumerate(job.measured.samples_percent) if v is not None]
        assert [(mine[0][0] + 57.0 * i, v) for i, v in present] == mine
        assert job.duration_s == mine[-1][0] - mine[0][0] + 57.0


def test_a_tar_gz_is_read_as_the_csv_inside_it(tmp_path: Path) -> None:
    data = TINY.encode()
    archive = tmp_path / "pod_gpu_duty_cycle_anon.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("pod_gpu_duty_cycle_anon.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert list(read_trace_jobs(archive)) == list(read_trace_jobs(write(tmp_path, TINY)))


def test_the_same_file_converts_to_the_same_bytes(tmp_path: Path) -> None:
    path = SAMPLE / "pod_gpu_duty_cycle_anon.csv"
    write_jsonl(read_trace_jobs(path), tmp_path / "one.jsonl")
    write_jsonl(read_trace_jobs(path), tmp_path / "two.jsonl")
    assert (tmp_path / "one.jsonl").read_bytes() == (tmp_path / "two.jsonl").read_bytes()
    assert list(read_trace_jobs(tmp_path / "one.jsonl")) == list(read_trace_jobs(path))


def bad(tmp_path: Path, text: str) -> InputError:
    with pytest.raises(InputError) as caught:
        list(read_trace_jobs(write(tmp_path, text), "gentd26"))
    return caught.value


def test_a_value_that_is_not_a_number_names_its_line(tmp_path: Path) -> None:
    error = bad(tmp_path, HEADER + "0.0,1000.0,podA\nbusy,1060.0,podA\n")
    assert (error.line, error.field) == (3, "value") and "not a number" in str(error)


def test_a_utilisation_over_100_percent_is_refused(tmp_path: Path) -> None:
    error = bad(tmp_path, HEADER + "100.5,1000.0,podA\n")
    assert (error.line, error.field) == (2, "value") and "0 to 100" in str(error)


def test_a_sample_off_the_grid_is_refused(tmp_path: Path) -> None:
    text = HEADER + "0.0,1000.0,podA\n0.0,1060.0,podA\n0.0,1120.0,podA\n0.0,1180.0,podA\n"
    text += "0.0,1200.0,podA\n"  # 200 s after podA's first sample: 3.3 steps of 60 s
    error = bad(tmp_path, text)
    assert (error.line, error.field) == (6, "timestamp_anon") and "grid" in str(error)


def test_a_pod_sampled_twice_at_one_instant_is_refused(tmp_path: Path) -> None:
    error = bad(tmp_path, HEADER + "0.0,1000.0,podA\n1.0,1000.0,podA\n")
    assert (error.line, error.field) == (3, "timestamp_anon") and "line 2" in str(error)


def test_rows_out_of_time_order_are_refused(tmp_path: Path) -> None:
    error = bad(tmp_path, HEADER + "0.0,1060.0,podA\n0.0,1000.0,podB\n")
    assert (error.line, error.field) == (3, "timestamp_anon") and "time order" in str(error)


def test_a_row_without_a_pod_is_refused(tmp_path: Path) -> None:
    error = bad(tmp_path, HEADER + "0.0,1000.0,\n")
    assert (error.line, error.field) == (2, "container_ip")


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    error = bad(tmp_path, "value,container_ip\n0.0,podA\n")
    assert (error.line, error.field) == (1, "timestamp_anon")


def test_an_archive_without_a_csv_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "pod_gpu_duty_cycle_anon.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("README")
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(InputError, match=r"no \.csv"):
        list(read_trace_jobs(archive))


def test_a_bad_request_type_in_the_qps_file_names_it(tmp_path: Path) -> None:
    write(tmp_path, "timestamp_anon,value,container_ip,request_type\n1.0,0.1,podB,Batch\n", "qps.csv")
    with pytest.raises(InputError) as caught:
        list(read_trace_jobs(write(tmp_path, TINY), "gentd26"))
    assert caught.value.source.endswith("qps.csv") and (caught.value.line, caught.value.field) == (2, "request_type")


def test_parquet_refuses_measured_series_rather_than_dropping_them(tmp_path: Path) -> None:
    out = tmp_path / "gentd26.parquet"
    with pytest.raises(InputError, match="Parquet does not carry measured utilisation"):
        write_parquet(read_trace_jobs(SAMPLE / "pod_gpu_duty_cycle_anon.csv"), out)
    assert not out.exists() and not list(tmp_path.iterdir())
