"""Gavel traces: the real msr and physical-cluster files, timing from throughputs, bad rows and tables."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest
from traces.base import ReadReport, TraceFormat, first_line, read_rows, replayed
from traces.canonical import to_job, to_record
from traces.gavel import (
    WORKER_MODELS,
    GavelMsrTrace,
    GavelPhysicalTrace,
    GavelThroughputs,
    shipped_throughputs,
)

GAVEL = Path(__file__).resolve().parents[2] / "shared" / "traces" / "gavel"
needs_gavel = pytest.mark.skipif(not GAVEL.is_dir(), reason="the shared Gavel traces are not here")
MSR = GAVEL / "msr" / "seed=0"
DEBUG = GAVEL / "physical_cluster" / "debug.trace"
MSR_LINE = "ResNet-18 (batch size 64)\tpython3 main.py\t--num_steps\t1\t{steps}\t{arrival}\t{scale}\n"
PHYSICAL_LINE = "ResNet-18 (batch size 64)\tpython3 main.py\tcifar10\t--num_steps\t1\t1000\t{scale}\t{weight}\t-1\t30\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def read_all(path: Path, trace_format: TraceFormat, report: ReadReport | None = None, skip: bool = False) -> list[Any]:
    return list(replayed(read_rows(path, trace_format, skip_bad_rows=skip, report=report)))


def isolated(data: dict[str, Any], worker: str, job_type: str, scale_factor: int) -> float:
    return float(data[worker][str((job_type, scale_factor))]["null"])


# -- the real files -----------------------------------------------------------------------------


@needs_gavel
def test_msr_vc_trace_has_the_readme_job_count_and_times_every_row() -> None:
    path = MSR / "0e4a51.trace"
    report = ReadReport(str(path))
    jobs = read_all(path, GavelMsrTrace(), report)
    assert report.rows == 1181  # README: seed 0, VC 0e4a51, 1,181 jobs
    assert report.jobs == len(jobs) == 1181 and report.skipped == []
    table = shipped_throughputs()
    extrapolated = [job for job in jobs if table.timing(job.labels.model, job.request.gpus * job.replicas) is None]
    assert extrapolated, "sizes the table never measured are timed by extrapolation"
    assert [job.id for job in jobs[:2]] == ["0e4a51-1", "0e4a51-2"]
    assert {job.labels.team for job in jobs} == {"0e4a51"}
    assert all(a.submit_s <= b.submit_s for a, b in itertools.pairwise(jobs))


@needs_gavel
def test_msr_first_row_is_timed_by_hand_from_gavels_json() -> None:
    data = json.loads((GAVEL / "simulation_throughputs.json").read_text(encoding="utf-8"))
    job = read_all(MSR / "0e4a51.trace", GavelMsrTrace(), skip=True)[0]
    # line 1: Transformer (batch size 128), 95121 steps, arrival 0, 1 GPU
    v100 = isolated(data, "v100", "Transformer (batch size 128)", 1)
    assert job.duration_s == pytest.approx(95121 / v100)
    assert (job.submit_s, job.request, job.replicas) == (0.0, GpuRequest(gpus=1), 1)
    assert job.labels.model == "Transformer (batch size 128)"
    expected = {WORKER_MODELS[w]: isolated(data, w, "Transformer (batch size 128)", 1) / v100 for w in WORKER_MODELS}
    assert dict(job.speedups) == pytest.approx(expected)


@needs_gavel
def test_physical_debug_trace_maps_every_row() -> None:
    data = json.loads((GAVEL / "simulation_throughputs.json").read_text(encoding="utf-8"))
    jobs = read_all(DEBUG, GavelPhysicalTrace())
    assert len(jobs) == 14
    first = jobs[0]  # Recommendation (batch size 8192), 14775 steps, 1 GPU, weight 1, arrival 0
    v100 = isolated(data, "v100", "Recommendation (batch size 8192)", 1)
    assert first.id == "debug-1" and first.labels.team == "debug" and first.priority == 1
    assert first.duration_s == pytest.approx(14775 / v100)
    assert dict(first.speedups)["K80-12GB"] == pytest.approx(isolated(data, "k80", first.labels.model, 1) / v100)
    assert dict(first.speedups)["P100-16GB"] == pytest.approx(isolated(data, "p100", first.labels.model, 1) / v100)
    assert to_job(to_record(first)) == first  # the canonical record keeps speedups and labels


@needs_gavel
def test_detection_by_suffix_and_field_count() -> None:
    msr, physical = GavelMsrTrace(), GavelPhysicalTrace()
    vc = MSR / "0e4a51.trace"
    assert msr.detect(vc, first_line(vc)) and not physical.detect(vc, first_line(vc))
    assert physical.detect(DEBUG, first_line(DEBUG)) and not msr.detect(DEBUG, first_line(DEBUG))
    assert not msr.detect(vc.with_suffix(".csv"), first_line(vc))


@needs_gavel
def test_shipped_table_is_exactly_the_isolated_numbers_of_gavels_json() -> None:
    full = GavelThroughputs.load(GAVEL / "simulation_throughputs.json")
    assert full.steps_per_s == shipped_throughputs().steps_per_s
    assert set(full.steps_per_s) == {"k80", "p100", "v100"}  # *_unconsolidated left out
    assert len(full.steps_per_s["v100"]) == 83 and len(shipped_throughputs().job_types()) == 26


# -- the shipped table and timing ---------------------------------------------------------------


def test_shipped_table_keeps_attribution() -> None:
    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "traces" / "samples" / "gavel_throughputs.json").read_text(encoding="utf-8"))
    assert "stanford-futuredata/gavel" in data["source"] and "c4fa40097339" in data["source"]
    assert data["licence"].startswith("MIT License")


def test_worker_types_are_catalog_models() -> None:
    catalog = default_catalog()
    for worker, model in WORKER_MODELS.items():
        assert catalog.key_of(worker) == model == catalog.key_of(model)


def test_a_model_that_cannot_run_the_job_is_left_out() -> None:
    timing = shipped_throughputs().timing("ResNet-50 (batch size 128)", 2)  # 0 steps/s on K80s
    assert timing is not None
    assert timing.gpu_models == frozenset({"P100-16GB", "V100-16GB"})
    assert "K80-12GB" not in dict(timing.speedups)
    assert shipped_throughputs().timing("A3C", 2) is None


def test_custom_table_from_the_constructor_and_gangs_of_eight(tmp_path: Path) -> None:
    table = GavelThroughputs.from_json(
        {"v100": {"('ResNet-18 (batch size 64)', 16)": {"null": 10.0}},
         "k80": {"('ResNet-18 (batch size 64)', 16)": {"null": 2.5}}},
        "test",
    )
    path = write(tmp_path, "vc.trace", MSR_LINE.format(steps=1000, arrival=5, scale=16))
    (job,) = read_all(path, GavelMsrTrace(table))
    assert (job.request, job.replicas) == (GpuRequest(gpus=8), 2)
    assert (job.duration_s, job.submit_s, job.speedups) == (100.0, 5.0, (("K80-12GB", 0.25), ("V100-16GB", 1.0)))


# -- bad rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ("ResNet-18 (batch size 64)\tpython3 main.py\t--num_steps\t1\t1000\t0\n", "scale_factor", "missing"),
        (MSR_LINE.format(steps=1000, arrival=0, scale=1).replace("\n", "\textra\n"), "scale_factor", "extra"),
        (MSR_LINE.format(steps="many", arrival=0, scale=1), "total_steps", "not a number"),
        (MSR_LINE.format(steps=1000, arrival=-3, scale=1), "arrival_time", "must be a finite number"),
        (MSR_LINE.format(steps=1000, arrival=0, scale=0), "scale_factor", "must be"),
        (MSR_LINE.format(steps=1000, arrival=0, scale=1).replace("ResNet-18", "ResNet-1000"), "job_type", "no V100"),
    ],
)
def test_bad_msr_rows_name_file_line_and_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    good = MSR_LINE.format(steps=1000, arrival=0, scale=1)
    path = write(tmp_path, "vc.trace", good + "\n" + text)
    with pytest.raises(InputError) as caught:
        read_all(path, GavelMsrTrace())
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), 3, field)
    assert problem in caught.value.problem


def test_bad_physical_rows_name_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "p.trace", PHYSICAL_LINE.format(scale=1, weight=1.5))
    with pytest.raises(InputError, match="priority_weight") as caught:
        read_all(path, GavelPhysicalTrace())
    assert caught.value.line == 1


def test_skip_bad_rows_counts_them(tmp_path: Path) -> None:
    lines = [
        PHYSICAL_LINE.format(scale=1, weight=2),
        PHYSICAL_LINE.format(scale=1, weight="x"),
        PHYSICAL_LINE.format(scale=2, weight=1).replace("ResNet-18", "Nope"),
        "just\tthree\tfields\n",
        PHYSICAL_LINE.format(scale=4, weight=0),
    ]
    path = write(tmp_path, "p.trace", "".join(lines))
    report = ReadReport(str(path))
    jobs = read_all(path, GavelPhysicalTrace(), report, skip=True)
    assert [(job.id, job.priority, job.request.gpus) for job in jobs] == [("p-1", 2, 1), ("p-5", 0, 4)]
    assert (report.rows, report.jobs) == (5, 2)
    assert [(line, problem.split(":")[0]) for line, problem in report.skipped] == [
        (2, "priority_weight"), (3, "job_type"), (4, "num_steps_arg"),
    ]


# -- bad tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"a100": {}}, "a100"),
        ({"v100": {"ResNet-18": {"null": 1.0}}}, "v100"),
        ({"v100": {"('A3C', 1)": {"('A3C', 1)": [1.0, 1.0]}}}, "v100 ('A3C', 1)"),
        ({"v100": {"('A3C', 1)": {"null": -1}}}, "v100 ('A3C', 1)"),
        ({"v100": []}, "v100"),
        ({"k80": {}}, ""),
    ],
)
def test_bad_throughput_tables_name_the_entry(data: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        GavelThroughputs.from_json(data, "t.json")
    assert (caught.value.source, caught.value.field) == ("t.json", field)


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        GavelThroughputs.load(write(tmp_path, "t.json", "{"))
    with pytest.raises(InputError, match=r"(?i)no such file"):
        GavelThroughputs.load(tmp_path / "absent.json")
    table = GavelThroughputs.load(write(tmp_path, "ok.json", json.dumps({"v100_unconsolidated": {}, "v100": {}})))
    assert table.job_types() == ()


@needs_gavel
def test_sizes_past_the_table_are_extrapolated_linearly_from_the_largest_measured() -> None:
    data = json.loads((GAVEL / "simulation_throughputs.json").read_text(encoding="utf-8"))
    table = shipped_throughputs()
    timing = table.timing("ResNet-18 (batch size 64)", 16, extrapolate=True)
    assert timing is not None
    assert timing.v100_steps_per_s == pytest.approx(2 * isolated(data, "v100", "ResNet-18 (batch size 64)", 8))
    assert table.timing("ResNet-18 (batch size 64)", 16) is None
    single = table.timing("A3C", 4, extrapolate=True)
    assert single is not None and single.v100_steps_per_s == pytest.approx(4 * isolated(data, "v100", "A3C", 1))
