"""The Alibaba DLRM serving trace (cluster-trace-gpu-v2025) reader: the real file, mappings, bad rows."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, JobKind, Labels, RequestKind
from traces.base import CPU_ONLY, ReadReport, first_line, read_rows, replayed
from traces.dlrm import COLUMNS, SERVICE_PRIORITY, DlrmInstances

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
DLRM = SHARED / "alibaba-gpu-v2025-dlrm" / "disaggregated_DLRM_trace.csv"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/traces is not checked out here")
HEADER = ",".join(COLUMNS)


def row(
    sn: str = "i0", *, role: str = "HN", app: str = "app_1", gpu: str = "1",
    created: str = "10", scheduled: str = "12", deleted: str = "100",
) -> str:
    return f"{sn},{role},{app},12,12,{gpu},{gpu},25,25,120.0,120.0,640.0,800.0,8,{created},{scheduled},{deleted}"


def write(tmp_path: Path, *rows: str, name: str = "disaggregated_DLRM_trace.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join((HEADER, *rows)) + "\n", encoding="utf-8")
    return path


def jobs(path: Path) -> list[Job]:
    return list(replayed(read_rows(path, DlrmInstances())))


def number(text: str) -> float | None:
    return None if text.strip().lower() in ("", "nan") else float(text)


# -- the real file --------------------------------------------------------------------------------


@needs_shared
def test_real_file_counts_and_times_match_an_independent_reading() -> None:
    with DLRM.open(encoding="utf-8", newline="") as handle:
        source = list(csv.DictReader(handle))
    times = [number(r[c]) for r in source for c in ("creation_time", "scheduled_time", "deletion_time")]
    trace_end_s = max(t for t in times if t is not None)
    gpu_rows = [r for r in source if float(r["gpu_request"]) > 0]
    # The README's counts hold for the whole file; our expectations for GPU rows come from it.
    assert len(source) == 23_871
    assert sum(number(r["creation_time"]) is None for r in source) == 7_280
    assert sum(number(r["deletion_time"]) is None for r in source) == 8_878
    assert len(gpu_rows) == 7_386
    assert {r["role"] for r in gpu_rows} == {"HN"}
    assert sum(r["role"] == "CN" for r in source) == len(source) - len(gpu_rows) == 16_485

    report = ReadReport(str(DLRM))
    read = {job.id: job for job in replayed(read_rows(DLRM, DlrmInstances(), report=report))}
    assert (report.rows, report.jobs, report.skipped) == (23_871, 7_386, [])
    assert report.dropped == {CPU_ONLY: 16_485}
    assert len(read) == len(gpu_rows)
    pre_window = outliving = 0
    for source_row in gpu_rows:
        job = read[source_row["instance_sn"]]
        created, scheduled, deleted = (number(source_row[c]) for c in ("creation_time", "scheduled_time", "deletion_time"))
        start_s = scheduled if scheduled is not None else created if created is not None else 0.0
        end_s = trace_end_s if deleted is None else deleted
        assert job.submit_s == (0.0 if created is None else created)
        assert math.isclose(job.duration_s, end_s - start_s)
        assert job.labels == Labels(project=source_row["app_name"], model=source_row["app_name"])
        pre_window += created is None
        outliving += deleted is None
    expected_pre = sum(number(r["creation_time"]) is None for r in gpu_rows)
    expected_out = sum(number(r["deletion_time"]) is None for r in gpu_rows)
    assert (pre_window, outliving) == (expected_pre, expected_out)
    assert 0 < expected_pre < 7_280 and 0 < expected_out < 8_878
    every = list(read.values())
    assert {job.kind for job in every} == {JobKind.SERVICE}
    assert {(job.priority, job.preemptible, job.request) for job in every} == {
        (SERVICE_PRIORITY, False, GpuRequest(kind=RequestKind.WHOLE, gpus=1))
    }
    assert len({job.labels.project for job in every}) <= 156


@needs_shared
def test_detects_the_real_header_and_not_other_traces() -> None:
    assert DlrmInstances().detect(DLRM, first_line(DLRM))
    openb = SHARED / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    assert not DlrmInstances().detect(openb, first_line(openb))


# -- mappings -------------------------------------------------------------------------------------


def test_one_instance_becomes_a_high_priority_service(tmp_path: Path) -> None:
    [job] = jobs(write(tmp_path, row("inst_7", app="app_3", created="10", scheduled="12", deleted="100")))
    assert job == Job(
        id="inst_7", request=GpuRequest(kind=RequestKind.WHOLE, gpus=1), submit_s=10.0, duration_s=88.0,
        priority=SERVICE_PRIORITY, preemptible=False, kind=JobKind.SERVICE,
        labels=Labels(project="app_3", model="app_3"),
    )


def test_window_edges_use_time_zero_and_the_trace_end(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        row("before", created="", scheduled="", deleted="50"),
        row("outlives", created="20", scheduled="25", deleted=""),
        row("both", created="nan", scheduled="NaN", deleted="nan"),
        row("unscheduled", created="30", scheduled="", deleted="60"),
        row("last", created="40", scheduled="41", deleted="500"),
    )
    by_id = {job.id: job for job in jobs(path)}
    assert (by_id["before"].submit_s, by_id["before"].duration_s) == (0.0, 50.0)
    assert (by_id["outlives"].submit_s, by_id["outlives"].duration_s) == (20.0, 475.0)
    assert (by_id["both"].submit_s, by_id["both"].duration_s) == (0.0, 500.0)
    assert (by_id["unscheduled"].submit_s, by_id["unscheduled"].duration_s) == (30.0, 30.0)


def test_cpu_only_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    report = ReadReport("t")
    rows = list(read_rows(write(tmp_path, row("c", role="CN", gpu="0"), row("g")), DlrmInstances(), report=report))
    assert [(r.job is None, r.dropped) for r in rows] == [(True, CPU_ONLY), (False, "")]
    assert (report.rows, report.jobs, report.dropped) == (2, 1, {CPU_ONLY: 1})


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [
        ("0.5", GpuRequest(kind=RequestKind.SHARE, milli=500)),
        ("0.25", GpuRequest(kind=RequestKind.SHARE, milli=250)),
        ("2", GpuRequest(kind=RequestKind.WHOLE, gpus=2)),
        ("1.0", GpuRequest(kind=RequestKind.WHOLE, gpus=1)),
    ],
)
def test_gpu_requests(tmp_path: Path, gpu: str, expected: GpuRequest) -> None:
    [job] = jobs(write(tmp_path, row(gpu=gpu)))
    assert job.request == expected


# -- bad rows -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (row(gpu="1.5"), "gpu_request"),
        (row(gpu="x"), "gpu_request"),
        (row(gpu="-1"), "gpu_request"),
        (row(role="XN"), "role"),
        (row(sn=""), "instance_sn"),
        (row(created="10", scheduled="5"), "scheduled_time"),
        (row(created="10", scheduled="20", deleted="15"), "deletion_time"),
        (row(deleted="soon"), "deletion_time"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, bad: str, field: str) -> None:
    path = write(tmp_path, row("ok"), bad)
    with pytest.raises(InputError) as caught:
        jobs(path)
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), 3, field)


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    report = ReadReport("t")
    path = write(tmp_path, row("a"), row("b", gpu="1.5"), row("c", role="?"), row("d"))
    read = list(replayed(read_rows(path, DlrmInstances(), skip_bad_rows=True, report=report)))
    assert [job.id for job in read] == ["a", "d"]
    assert [line for line, _ in report.skipped] == [3, 4]
    assert report.skipped[1][1].startswith("role:")


def test_missing_column_stops_at_line_one(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("instance_sn,role,app_name,gpu_request\ni,HN,a,1\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        jobs(path)
    assert (caught.value.line, caught.value.field) == (1, "creation_time")
