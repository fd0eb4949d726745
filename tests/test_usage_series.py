"""`fleetsched usage report`: series it cannot classify are said, never skipped quietly: a series without
`__name__`, a file with no utilisation series, a pod's series without samples (empty, not an
unallocated device), and a query_range series without `modelName` named by its JSON path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetsched.cli import main
from tests.test_usage import P1, element, refused, report, write_record


def query_range(path: Path, result: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": result}}),
                    encoding="utf-8")  # fmt: skip
    return path


def nameless(pod: str, values: list[float]) -> dict[str, Any]:
    series = element(pod, "a", values)
    del series["metric"]["__name__"]
    return series


def test_a_record_line_without_a_metric_name_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = nameless("p2", [0.0, 1.0])
    line["values"][1][1] = "x"  # read as another metric, its bad value went unsaid too
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1), line])
    message = refused(capsys, [str(path), "--price", "H100=4"])
    assert message.startswith(f"fleetsched: {path}:2: metric.__name__: no __name__: cannot tell which metric")


def test_a_query_range_series_without_a_metric_name_is_named_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = query_range(tmp_path / "q.json", [element("p1", "a", P1), nameless("p2", [0.0, 1.0])])
    message = refused(capsys, [str(path), "--price", "H100=4"])
    assert message.startswith(f"fleetsched: {path}: data.result[1].metric.__name__: no __name__")


def test_an_empty_record_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("", encoding="utf-8")
    assert refused(capsys, [str(path), "--price", "H100=4"]) == f"fleetsched: {path}: is empty: nothing to report\n"


def test_a_file_without_utilisation_series_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    memory = element("p1", "a", [9.0])
    memory["metric"]["__name__"] = "DCGM_FI_DEV_FB_USED"
    path = write_record(tmp_path / "r.jsonl", [memory])
    assert refused(capsys, [str(path), "--price", "H100=4"]) == (
        f"fleetsched: {path}: holds no DCGM_FI_DEV_GPU_UTIL series: nothing to report\n"
    )


def test_a_pods_series_without_samples_is_empty_not_unallocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1), element("p2", "a", [], UUID="GPU-2")])
    document = report(capsys, str(path))
    assert (document["series"], document["unallocated_series"], document["empty_series"]) == (1, 0, 1)
    assert main(["usage", "report", str(path), "--price", "H100=4"]) == 0
    assert "1 pod series (0 series of unallocated devices, 1 empty series skipped)" in capsys.readouterr().out


def test_a_query_range_series_without_a_model_is_named_by_its_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unnamed = element("p2", "a", [0.0, 1.0], UUID="GPU-2")
    del unnamed["metric"]["modelName"]
    path = query_range(tmp_path / "q.json", [element("p1", "a", P1), unnamed])
    assert refused(capsys, [str(path), "--price", "H100=4"]) == (
        f"fleetsched: {path}: data.result[1].metric.modelName: no modelName label: the series' GPU model, and so "
        "its price, is unknown\n"
    )
