"""The PAI 2020 task-table and Helios cluster-log readers, on small files in the documented layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, Labels, RequestKind
from traces.base import CPU_ONLY, ReadReport, first_line, read_rows, replayed
from traces.helios import COLUMNS as HELIOS_COLUMNS
from traces.helios import NOT_FINISHED as HELIOS_NOT_FINISHED
from traces.helios import HeliosJobs
from traces.pai import NO_TIMES, NOT_FINISHED, PaiTasks

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/traces is not checked out here")


def whole(gpus: int) -> GpuRequest:
    return GpuRequest(kind=RequestKind.WHOLE, gpus=gpus)


def share(milli: int) -> GpuRequest:
    return GpuRequest(kind=RequestKind.SHARE, milli=milli)


# -- PAI 2020 -------------------------------------------------------------------------------------


def task(
    job: str = "j1", name: str = "worker", *, inst: str = "1", status: str = "Terminated",
    start: str = "1000", end: str = "1600", gpu: str = "100", gpu_type: str = "MISC",
) -> str:
    return f"{job},{name},{inst},{status},{start},{end},600,29.296875,{gpu},{gpu_type}"


def pai_file(tmp_path: Path, *rows: str, name: str = "pai_task_table.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def pai_jobs(path: Path) -> list[Job]:
    return list(replayed(read_rows(path, PaiTasks())))


def test_pai_task_becomes_a_gang_relative_to_the_earliest_start(tmp_path: Path) -> None:
    path = pai_file(
        tmp_path,
        task("a1", "worker", inst="4", start="1500", end="2100", gpu="200", gpu_type="V100"),
        task("a1", "ps", inst="2", start="1200", end="1300", gpu="50", gpu_type="T4"),
        task("b2", "tensorflow", start="900.0", end="901.5", gpu="100", gpu_type="V100M32", status="Failed"),
    )
    by_id = {job.id: job for job in pai_jobs(path)}
    assert by_id["a1/worker"] == Job(
        id="a1/worker", request=whole(2), submit_s=600.0, duration_s=600.0, replicas=4,
        gpu_models=frozenset({"V100-16GB"}),
    )
    assert by_id["a1/ps"].request == share(500)
    assert (by_id["a1/ps"].submit_s, by_id["a1/ps"].replicas, by_id["a1/ps"].gpu_models) == (
        300.0, 2, frozenset({"T4-16GB"}))
    assert (by_id["b2/tensorflow"].submit_s, by_id["b2/tensorflow"].duration_s) == (0.0, 1.5)
    assert (by_id["b2/tensorflow"].status, by_id["b2/tensorflow"].gpu_models) == ("failed", frozenset({"V100-32GB"}))


@pytest.mark.parametrize(
    ("gpu", "expected"),
    [("100", whole(1)), ("800", whole(8)), ("50", share(500)), ("25.0", share(250)), ("12.5", share(125))],
)
def test_pai_plan_gpu_is_a_percentage_of_one_gpu(tmp_path: Path, gpu: str, expected: GpuRequest) -> None:
    [job] = pai_jobs(pai_file(tmp_path, task(gpu=gpu)))
    assert job.request == expected


def test_pai_misc_and_empty_gpu_type_allow_any_model(tmp_path: Path) -> None:
    jobs = pai_jobs(pai_file(tmp_path, task("a", gpu_type="MISC"), task("b", gpu_type="")))
    assert [job.gpu_models for job in jobs] == [frozenset(), frozenset()]


def test_pai_drops_cpu_only_and_unfinished_tasks_with_reasons(tmp_path: Path) -> None:
    path = pai_file(
        tmp_path,
        task("cpu", gpu="0"),
        task("cpu2", gpu=""),
        task("run", status="Running", end=""),
        task("wait", status="Waiting", start="", end=""),
        task("noend", status="Terminated", end=""),
        task("ok"),
    )
    report = ReadReport(str(path))
    rows = list(read_rows(path, PaiTasks(), report=report))
    assert [row.dropped for row in rows] == [CPU_ONLY, CPU_ONLY, NOT_FINISHED, NOT_FINISHED, NO_TIMES, ""]
    assert rows[2].job is not None and rows[2].job.id == "run/worker"  # kept for inspection
    assert rows[3].job is None
    assert report.dropped == {CPU_ONLY: 2, NOT_FINISHED: 2, NO_TIMES: 1}
    assert report.jobs == 1


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (task(gpu="150"), "plan_gpu"),
        (task(gpu="abc"), "plan_gpu"),
        (task(gpu_type="K9000"), "gpu_type"),
        (task(status="Done"), "status"),
        (task(inst="0"), "inst_num"),
        (task(inst="1.5"), "inst_num"),
        (task(start="2000", end="1000"), "end_time"),
        (task(job=""), "job_name"),
    ],
)
def test_pai_bad_rows_name_file_line_and_field(tmp_path: Path, bad: str, field: str) -> None:
    path = pai_file(tmp_path, task("ok"), bad)
    with pytest.raises(InputError) as caught:
        pai_jobs(path)
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), 2, field)


def test_pai_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    report = ReadReport("t")
    path = pai_file(tmp_path, task("a"), task("b", gpu="150"), task("c"))
    read = list(replayed(read_rows(path, PaiTasks(), skip_bad_rows=True, report=report)))
    assert [job.id for job in read] == ["a/worker", "c/worker"]
    assert report.skipped == [(2, report.skipped[0][1])] and report.skipped[0][1].startswith("plan_gpu:")


def test_pai_wrong_width_names_the_line(tmp_path: Path) -> None:
    path = pai_file(tmp_path, task("a"), "j,t,1,Terminated")
    with pytest.raises(InputError) as caught:
        pai_jobs(path)
    assert caught.value.line == 2


def test_pai_detects_by_file_name(tmp_path: Path) -> None:
    assert PaiTasks().detect(Path("data/pai_task_table.csv"), "")
    assert not PaiTasks().detect(Path("pai_job_table.csv"), "")


# -- Helios ---------------------------------------------------------------------------------------

HELIOS_HEADER = ",".join(HELIOS_COLUMNS)


def log_row(
    job_id: str = "1", *, user: str = "u1", vc: str = "vc1", gpus: str = "8", nodes: str = "1",
    state: str = "COMPLETED", submit: str = "2020-04-01 00:00:10", start: str = "2020-04-01 00:00:20",
    end: str = "2020-04-01 01:00:20", duration: str = "3600", queue: str = "10",
) -> str:
    return f"{job_id},{user},{vc},{gpus},4,{nodes},{state},{submit},{start},{end},{duration},{queue}"


def helios_file(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "cluster_log.csv"
    path.write_text("\n".join((HELIOS_HEADER, *rows)) + "\n", encoding="utf-8")
    return path


def helios_jobs(path: Path) -> list[Job]:
    return list(replayed(read_rows(path, HeliosJobs())))


def test_helios_job_spreads_gpus_over_nodes_relative_to_the_first_submit(tmp_path: Path) -> None:
    path = helios_file(
        tmp_path,
        log_row("j2", user="alice", vc="vcA", gpus="16", nodes="2", submit="2020-04-01 01:00:00", duration="120"),
        log_row("j1", submit="2020-04-01 00:00:00", state="FAILED"),
    )
    by_id = {job.id: job for job in helios_jobs(path)}
    assert by_id["j2"] == Job(
        id="j2", request=whole(8), submit_s=3600.0, duration_s=120.0, replicas=2,
        labels=Labels(team="vcA", project="alice"), status="completed",
    )
    assert (by_id["j1"].submit_s, by_id["j1"].status, by_id["j1"].replicas) == (0.0, "failed", 1)


@pytest.mark.parametrize(
    ("state", "status"),
    [("COMPLETED", "completed"), ("FAILED", "failed"), ("NODE_FAIL", "failed"), ("TIMEOUT", "failed"),
     ("CANCELLED", "killed")],
)
def test_helios_states(tmp_path: Path, state: str, status: str) -> None:
    [job] = helios_jobs(helios_file(tmp_path, log_row(state=state)))
    assert job.status == status


def test_helios_duration_falls_back_to_end_minus_start(tmp_path: Path) -> None:
    path = helios_file(
        tmp_path,
        log_row("a", duration=""),
        log_row("b", state="CANCELLED", start="", end="", duration=""),
    )
    assert [job.duration_s for job in helios_jobs(path)] == [3600.0, 0.0]


def test_helios_drops_cpu_only_and_unfinished_jobs(tmp_path: Path) -> None:
    path = helios_file(tmp_path, log_row("cpu", gpus="0", nodes="1"), log_row("run", state="RUNNING"), log_row("ok"))
    report = ReadReport(str(path))
    rows = list(read_rows(path, HeliosJobs(), report=report))
    assert [row.dropped for row in rows] == [CPU_ONLY, HELIOS_NOT_FINISHED, ""]
    assert report.dropped == {CPU_ONLY: 1, HELIOS_NOT_FINISHED: 1}


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (log_row(gpus="6", nodes="4"), "gpu_num"),
        (log_row(gpus="8", nodes="0"), "node_num"),
        (log_row(gpus="two"), "gpu_num"),
        (log_row(state="DONE"), "state"),
        (log_row(submit="01/04/2020 10:00"), "submit_time"),
        (log_row(submit=""), "submit_time"),
        (log_row(duration="-5"), "duration"),
        (log_row(duration="", start="2020-04-01 02:00:00", end="2020-04-01 01:00:00"), "end_time"),
        (log_row(vc=""), "vc"),
    ],
)
def test_helios_bad_rows_name_file_line_and_field(tmp_path: Path, bad: str, field: str) -> None:
    path = helios_file(tmp_path, log_row("ok"), bad)
    with pytest.raises(InputError) as caught:
        helios_jobs(path)
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), 3, field)


def test_helios_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    report = ReadReport("t")
    path = helios_file(tmp_path, log_row("a"), log_row("b", gpus="3", nodes="2"), log_row("c"))
    read = list(replayed(read_rows(path, HeliosJobs(), skip_bad_rows=True, report=report)))
    assert [job.id for job in read] == ["a", "c"]
    assert [line for line, _ in report.skipped] == [3]


def test_helios_detects_its_header(tmp_path: Path) -> None:
    path = helios_file(tmp_path, log_row())
    assert HeliosJobs().detect(path, first_line(path))
    assert not HeliosJobs().detect(path, "job_id,user,vc,gpu_num")


@needs_shared
def test_helios_summary_is_not_a_cluster_log() -> None:
    summary = SHARED / "helios" / "helios_cluster_summary.csv"
    assert not HeliosJobs().detect(summary, first_line(summary))
    philly_vcs = SHARED / "helios" / "philly_vc_nodes_qssf.csv"
    assert not HeliosJobs().detect(philly_vcs, first_line(philly_vcs))
