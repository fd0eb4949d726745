"""The HTML report (`fleetsched report`): its figures, its statistics, its atomic write, its bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import fleetsched
from fleetsched.cli import main
from fleetsched.report import render, write_report
from fleetsched.report_comparison import paired_differences
from fleetsched.report_html import count, money, number, percent
from fleetsched.report_svg import ticks
from scheduler.errors import InputError
from tests.test_economics import JOBS, elastic_cluster

ROOT = Path(__file__).resolve().parent.parent
T_975_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom (printed tables: 4.303)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    fleetsched.simulate(JOBS, elastic_cluster(), "default", out=out)
    return out


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "comparison"
    code = main(["compare", "--trace", str(ROOT / "traces/samples/demo-jobs.jsonl"), "--cluster",
                 str(ROOT / "traces/samples/demo-cluster.toml"), "--profiles", "default,cost-greedy", "--seeds", "2",
                 "--workers", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_a_run_report_holds_the_summary_and_economics(run_dir: Path) -> None:
    html = render(run_dir)
    document = json.loads((run_dir / "summary.json").read_text())
    for usd in (document["cost_usd"]["total"], document["cost_usd"]["idle"], document["cost_usd"]["attributed"]):
        assert f"<td class=\"number\">{money(usd)}</td>" in html
    assert money(document["economics"]["unit"]["usd_per_completed_job"]) in html
    # The hand-computed idle causes of tests/test_economics.py, in the report's order.
    causes = re.findall(r"<tr><td>([a-z ()]+)</td><td class=\"number\">(\$[0-9.,]+)</td>", html.split("<h2>Idle cost by cause</h2>")[1])
    assert causes[:6] == [("booting (provisioning)", "$0.40"), ("reserved and unused", "$0.00"),
                          ("waiting for release", "$0.20"), ("fragmentation (jobs waited)", "$0.10"),
                          ("no demand", "$0.20"), ("all idle", "$0.90")]  # fmt: skip
    for heading in ("By team", "By project", "By model", "By day", "Training against inference", "Spot counterfactual",
                    "JCT CDF", "GPUs busy per pool"):  # fmt: skip
        assert heading in html


def test_the_report_fetches_nothing_and_runs_no_script(run_dir: Path, comparison_dir: Path) -> None:
    for html in (render(run_dir), render(comparison_dir)):
        assert "<script" not in html and "<link" not in html and "<img" not in html
        assert not re.search(r"(src|href)=", html)
        assert set(re.findall(r"https?://[^\"' )]+", html)) == {"http://www.w3.org/2000/svg"}  # a namespace, not fetched


def test_a_comparison_report_shows_profiles_runs_and_paired_differences(comparison_dir: Path) -> None:
    html = render(comparison_dir)
    comparison = fleetsched.load_comparison(comparison_dir)
    for run in comparison.runs.values():
        assert money(run.document["cost_usd"]["total"]) in html
        assert number(run.document["queue_s"]["p95"]) in html
    assert "cost-greedy − default" in html and "95% interval" in html
    assert "Cost against p95 queue time" in html and "JCT CDF (all seeds)" in html


def test_paired_differences_match_a_hand_computed_t_interval() -> None:
    frame = pd.DataFrame({"profile": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
                          "cost_usd": [10.0, 20.0, 30.0, 11.0, 22.0, 33.0]})  # fmt: skip
    (difference,) = paired_differences(frame, "cost_usd")
    # Differences 1, 2, 3: mean 2, standard deviation 1, half-width t(0.975, 2) x 1 / sqrt(3).
    half = T_975_2 / math.sqrt(3)
    assert (difference.baseline, difference.profile, difference.seeds) == ("a", "b", 3)
    assert difference.mean == 2.0
    assert difference.low == pytest.approx(2.0 - half, abs=1e-9)
    assert difference.high == pytest.approx(2.0 + half, abs=1e-9)


def test_pairs_are_matched_by_seed_not_by_row_order() -> None:
    frame = pd.DataFrame({"profile": ["a", "a", "b", "b"], "seed": [0, 1, 1, 0], "x": [1.0, 5.0, 7.0, 2.0]})
    (difference,) = paired_differences(frame, "x")
    assert difference.mean == 1.5  # (2 - 1 + 7 - 5) / 2


def test_a_single_seed_has_no_interval() -> None:
    frame = pd.DataFrame({"profile": ["a", "b"], "seed": [0, 0], "x": [1.0, 4.0]})
    (difference,) = paired_differences(frame, "x")
    assert (difference.mean, difference.low, difference.high) == (3.0, None, None)


def test_number_formats() -> None:
    assert (money(1234.5), money(None), number(1234.56), count(3.0), percent(0.5134)) == \
        ("$1,234.50", "—", "1,234.6", "3", "51.3%")


def test_axis_ticks_are_round_and_cover_the_range() -> None:
    assert ticks(0, 95) == [0, 20, 40, 60, 80, 100]
    assert ticks(300, 300)[0] <= 300 <= ticks(300, 300)[-1]  # one value still gets an axis around it


def test_the_command_writes_the_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert f"wrote {out}" in capsys.readouterr().out
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]


def test_a_failed_render_leaves_the_previous_report_and_no_partial_file(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text("previous")

    def broken(source: object) -> str:
        raise RuntimeError("rendering failed")

    with pytest.raises(RuntimeError):
        write_report(run_dir, out, broken)
    assert out.read_text() == "previous"
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]


def test_a_failed_write_leaves_no_partial_file(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"

    def refuse(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("fleetsched.report.os.replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_report(run_dir, out)
    assert list(tmp_path.iterdir()) == []


def test_a_directory_that_is_neither_run_nor_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == (f"fleetsched: {tmp_path}: neither a run directory (summary.json), a "
                                       "comparison (comparison.csv) nor a sweep (results.parquet)\n")  # fmt: skip
    assert not (tmp_path / "r.html").exists()


def test_a_corrupt_file_in_the_run_is_named_and_nothing_written(run_dir: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "events.jsonl").write_text('{"t_s": 0, "event": "arrive"}\n{"t_s": \n')
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {run / 'events.jsonl'}:2: not valid JSON")
    assert not (tmp_path / "r.html").exists()


def test_out_must_be_an_html_file(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "results.csv"
    data.write_text("keep me")
    assert main(["report", str(run_dir), "--out", str(data)]) == 2
    assert "--out: the report is an .html file" in capsys.readouterr().err
    assert data.read_text() == "keep me"


def test_out_in_a_missing_folder_makes_it(run_dir: Path, tmp_path: Path) -> None:
    assert main(["report", str(run_dir), "--out", str(tmp_path / "here.html")]) == 0
    assert main(["report", str(run_dir), "--out", str(tmp_path / "absent" / "deeper" / "r.html")]) == 0
    assert (tmp_path / "absent/deeper/r.html").read_bytes() == (tmp_path / "here.html").read_bytes()
    assert [path.name for path in (tmp_path / "absent/deeper").iterdir()] == ["r.html"]


def test_a_failed_report_removes_the_folders_it_made(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not-a-run").mkdir()
    assert main(["report", str(tmp_path / "not-a-run"), "--out", str(tmp_path / "absent" / "r.html")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {tmp_path / 'not-a-run'}")
    assert [path.name for path in tmp_path.iterdir()] == ["not-a-run"]


def test_out_naming_a_directory(run_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "r.html"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        write_report(run_dir, folder)


def sweep_table() -> pd.DataFrame:
    """Six cells of two profiles: (cost, p95 queue) with a front of a2 ($10, 90 s), b1 ($12, 50 s), b3 ($20, 10 s)."""
    return pd.DataFrame({
        "cell": ["a1", "a2", "a3", "b1", "b2", "b3"], "profile": ["a", "a", "a", "b", "b", "b"],
        "spot_share": [0.0, 0.5, 1.0, 0.0, 0.5, 1.0],
        "cost_usd": [15.0, 10.0, 13.0, 12.0, 25.0, 20.0], "queue_p95_s": [95.0, 90.0, 60.0, 50.0, 40.0, 10.0],
    })  # fmt: skip


def test_the_pareto_front_keeps_the_cells_nothing_beats_on_both() -> None:
    from fleetsched.report_sweep import pareto_front

    assert pareto_front(sweep_table())["cell"].tolist() == ["a2", "b1", "b3"]


def test_a_sweep_report_shows_every_cell_and_its_front(tmp_path: Path) -> None:
    sweep_table().to_parquet(tmp_path / "results.parquet")
    out = tmp_path / "sweep.html"
    assert main(["report", str(tmp_path), "--out", str(out)]) == 0
    html = out.read_text()
    front = html.split("<h3>Pareto front</h3>")[1].split("</table>")[0]
    assert re.findall(r"<tr><td>(\w+)</td>", front) == ["a2", "b1", "b3"]
    cells = html.split("<h2>Cells</h2>")[1]
    assert re.findall(r"<tr><td>(\w+)</td>", cells) == ["a1", "a2", "a3", "b1", "b2", "b3"]
    assert money(25.0) in cells and "Cost against p95 queue time, every cell" in html


def test_the_front_is_drawn_as_the_staircase_bounding_what_it_beats() -> None:
    """By rising queue: b3 (10 s, $20), b1 (50 s, $12), a2 (90 s, $10); each step runs right at
    the cost of the point before, then down: corners (50, 20) and (90, 12), the worse of two neighbours."""
    from fleetsched import report_svg
    from fleetsched.report_sweep import _chart, pareto_front

    svg = _chart(sweep_table(), pareto_front(sweep_table()))
    frame = report_svg._frame([report_svg.Series("all", [(q, c) for q, c in zip(sweep_table()["queue_p95_s"],
                                                                                sweep_table()["cost_usd"], strict=True)])],
                              y_from_zero=True)
    expected = [(10, 20), (50, 20), (50, 12), (90, 12), (90, 10)]
    points = " ".join(f"{frame.x(q):.1f},{frame.y(c):.1f}" for q, c in expected)
    assert f'<polyline points="{points}"' in svg


def test_a_sweep_table_that_is_not_parquet_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.parquet").write_text("cell,cost_usd\na,1\n")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err.startswith(f"fleetsched: {tmp_path / 'results.parquet'}: not a readable Parquet table")
    assert not (tmp_path / "r.html").exists()


def test_an_empty_sweep_table_is_named(tmp_path: Path) -> None:
    sweep_table().head(0).to_parquet(tmp_path / "results.parquet")
    with pytest.raises(InputError, match=r"results.parquet: the sweep's results table has no rows"):
        render(tmp_path)


def _edited(run_dir: Path, tmp_path: Path, edit: Any) -> Path:
    """A copy of the run whose summary.json `edit` changed."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    document = json.loads((run / "summary.json").read_text())
    edit(document)
    (run / "summary.json").write_text(json.dumps(document))
    return run


def test_a_run_written_before_the_economics_section_still_reports(run_dir: Path, tmp_path: Path) -> None:
    html = render(_edited(run_dir, tmp_path, lambda document: document.pop("economics")))
    assert "has no economics section" in html and money(1.4) in html


def test_a_spot_pool_without_an_on_demand_price_says_so(run_dir: Path, tmp_path: Path) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["economics"]["spot"]["pools"] = {"odd-spot": {"spot_usd": 3.5, "on_demand_price": None}}

    html = render(_edited(run_dir, tmp_path, edit))
    assert "<td>odd-spot</td><td class=\"number\">$3.50</td>" in html and "no on-demand price for its GPU model" in html


def test_a_cluster_without_spot_has_no_counterfactual(run_dir: Path) -> None:
    assert "No spot pool in this cluster." in render(run_dir)


def test_a_summary_missing_a_figure_is_named(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _edited(run_dir, tmp_path, lambda document: document["queue_s"].pop("p95"))
    assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    assert capsys.readouterr().err == f"fleetsched: {run / 'summary.json'}: no 'p95': not a summary this fleetsched wrote\n"


def test_a_summary_figure_of_the_wrong_type_is_named(run_dir: Path, tmp_path: Path) -> None:
    def edit(document: dict[str, Any]) -> None:
        document["cost_usd"]["total"] = "a lot"

    with pytest.raises(InputError, match=r"summary.json: a figure of the wrong type"):
        render(_edited(run_dir, tmp_path, edit))


def test_a_long_timeline_is_thinned_to_the_peak_of_each_interval() -> None:
    from fleetsched.report_svg import thin

    points = [(float(x), float(x % 10)) for x in range(10_000)]
    kept = thin(points, limit=100)
    assert len(kept) == 100 and kept[0] == (0.0, 9.0) and kept[-1] == (9900.0, 9.0)  # each interval's peak is 9
    assert thin(points[:50], limit=100) == points[:50]


def test_the_command_starts_without_pandas_or_scipy() -> None:
    """Every `fleetsched` command (the extender's included) imports the CLI; the report's pandas
    and scipy.stats (about a second) are loaded only by `report` and the DataFrame API."""
    import subprocess
    import sys

    code = "import sys, fleetsched.cli; print(sorted({'pandas', 'scipy.stats'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]"
