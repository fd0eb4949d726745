"""Run and comparison directories read as DataFrames (`fleetsched.frames`), and every bad input
named: the file, the line and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fleetsched
from fleetsched.cli import main
from scheduler.errors import InputError
from tests.test_economics import JOBS, elastic_cluster

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frames") / "run"
    fleetsched.simulate(JOBS, elastic_cluster(), "default", out=out)
    return out


@pytest.fixture(scope="module")
def comparison_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("frames") / "comparison"
    code = main(["compare", "--trace", str(ROOT / "traces/samples/demo-jobs.jsonl"), "--cluster",
                 str(ROOT / "traces/samples/demo-cluster.toml"), "--profiles", "default,binpack", "--seeds", "2",
                 "--workers", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / source.name
    shutil.copytree(source, target)
    return target


def test_a_run_reads_as_frames_with_the_files_numbers(run_dir: Path) -> None:
    run = fleetsched.load_run(run_dir)
    document = json.loads((run_dir / "summary.json").read_text())
    assert run.document == document
    assert run.summary.loc[0, "cost_usd.total"] == document["cost_usd"]["total"] == 1.4
    assert run.summary.loc[0, "economics.idle_by_cause_usd.booting"] == 0.4
    assert list(run.jobs["id"]) == ["J1", "J2", "S3"]
    assert run.jobs["cost_usd"].sum() == pytest.approx(0.5)
    assert str(run.jobs["preemptions"].dtype) == "Int64" and run.jobs["queue_s"].dtype == "float64"
    assert run.jobs.loc[run.jobs["id"] == "J2", "queue_s"].item() == 100.0
    assert list(run.events.columns[:2]) == ["t_s", "event"]
    assert (run.events["event"] == "node-add").sum() == 2
    assert run.events.loc[run.events["event"] == "start", "job"].tolist() == ["J1", "J2", "S3"]
    assert set(run.timeline["pool"]) == {"od"} and run.timeline["nodes"].max() == 2
    assert run.solver is None and run.name == "run"


def test_a_replay_kept_in_memory_reads_as_the_same_frames(run_dir: Path) -> None:
    """`load_run(fleetsched.simulate(...))`: no --out folder, the same frames as the run directory."""
    from pandas.testing import assert_frame_equal

    run = fleetsched.load_run(fleetsched.simulate(JOBS, elastic_cluster(), "default"))
    written = fleetsched.load_run(run_dir)
    assert run.name == "default-seed0" and not run.path.exists()
    for frame in ("jobs", "events", "timeline"):
        assert_frame_equal(getattr(run, frame), getattr(written, frame))
    assert run.document["cost_usd"] == written.document["cost_usd"]
    assert run.document["economics"] == written.document["economics"]


def test_a_comparison_stacks_its_runs_in_comparison_order(comparison_dir: Path) -> None:
    comparison = fleetsched.load_comparison(comparison_dir)
    assert list(comparison.runs) == ["default-seed0", "default-seed1", "binpack-seed0", "binpack-seed1"]
    assert list(comparison.comparison["profile"]) == ["default", "default", "binpack", "binpack"]
    assert list(comparison.summary.columns[:3]) == ["run", "profile", "seed"]
    assert comparison.summary["cost_usd.total"].tolist() == comparison.comparison["cost_usd"].tolist()
    jobs = comparison.jobs
    assert len(jobs) == 4 * len(comparison.runs["default-seed0"].jobs)
    assert set(jobs["profile"]) == {"default", "binpack"} and set(jobs["seed"]) == {0, 1}
    assert len(comparison.events) == sum(len(run.events) for run in comparison.runs.values())


def test_a_directory_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        fleetsched.load_run(tmp_path / "absent")


def test_a_directory_without_a_summary_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"no summary.json: not a fleetsched run directory"):
        fleetsched.load_run(tmp_path)


def test_a_run_missing_a_file_is_incomplete(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "timeline.csv").unlink()
    with pytest.raises(InputError, match=r"no timeline.csv: the run directory is incomplete"):
        fleetsched.load_run(run)


def test_a_summary_that_is_not_json_names_its_line(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "summary.json").write_text('{\n  "run": {\n  oops\n}\n')
    with pytest.raises(InputError, match=r"summary.json:3: not valid JSON"):
        fleetsched.load_run(run)


def test_a_summary_without_its_keys(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "summary.json").write_text('{"run": {}}')
    with pytest.raises(InputError, match=r"summary.json: schema_version: missing"):
        fleetsched.load_run(run)


def test_a_jobs_row_with_a_field_too_many_names_its_line(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    lines = (run / "jobs.csv").read_text().splitlines()
    lines[2] += ",extra"
    (run / "jobs.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"jobs.csv:3: 20 fields where the header has 19"):
        fleetsched.load_run(run)


def test_a_jobs_cost_that_is_not_a_number_names_line_and_field(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    text = (run / "jobs.csv").read_text().replace(",0.2,", ",twenty cents,", 1)
    (run / "jobs.csv").write_text(text)
    with pytest.raises(InputError, match=r"jobs.csv:2: cost_usd: not a number: 'twenty cents'"):
        fleetsched.load_run(run)


def test_a_timeline_without_its_pool_column(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "timeline.csv").write_text("t_s,nodes,provisioning,gpus_busy,usd_per_hour\n0,1,0,0,7.2\n")
    with pytest.raises(InputError, match=r"timeline.csv:1: pool: missing column"):
        fleetsched.load_run(run)


def test_an_empty_csv_has_no_header(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "timeline.csv").write_text("")
    with pytest.raises(InputError, match=r"timeline.csv: empty file: no header row"):
        fleetsched.load_run(run)


def test_an_event_line_that_is_not_json_names_its_line(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    lines = (run / "events.jsonl").read_text().splitlines()
    lines[3] = lines[3][:-1]
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"events.jsonl:4: not valid JSON"):
        fleetsched.load_run(run)


def test_an_event_without_its_time(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    with (run / "events.jsonl").open("a") as handle:
        handle.write('{"event": "arrive", "job": "x"}\n')
    count = len((run / "events.jsonl").read_text().splitlines())
    with pytest.raises(InputError, match=rf"events.jsonl:{count}: t_s: missing or not a number"):
        fleetsched.load_run(run)


def test_a_file_that_is_not_utf8(run_dir: Path, tmp_path: Path) -> None:
    run = copy(run_dir, tmp_path)
    (run / "jobs.csv").write_bytes(b"id\xe9\n")
    with pytest.raises(InputError, match=r"jobs.csv: not UTF-8 text"):
        fleetsched.load_run(run)


def test_a_directory_without_comparison_csv_is_not_a_comparison(run_dir: Path) -> None:
    with pytest.raises(InputError, match=r"no comparison.csv: not a fleetsched comparison directory"):
        fleetsched.load_comparison(run_dir)


def test_a_comparison_naming_a_run_it_lacks(comparison_dir: Path, tmp_path: Path) -> None:
    comparison = copy(comparison_dir, tmp_path)
    shutil.rmtree(comparison / "runs" / "binpack-seed1")
    with pytest.raises(InputError, match=r"comparison.csv: comparison.csv names run 'binpack-seed1'"):
        fleetsched.load_comparison(comparison)


def test_a_bad_run_inside_a_comparison_is_named(comparison_dir: Path, tmp_path: Path) -> None:
    comparison = copy(comparison_dir, tmp_path)
    (comparison / "runs" / "default-seed1" / "summary.json").write_text("[]")
    with pytest.raises(InputError, match=r"default-seed1/summary.json: must be a JSON object"):
        fleetsched.load_comparison(comparison)


def test_economics_tables_of_a_run_and_of_a_comparison(run_dir: Path, comparison_dir: Path) -> None:
    run = fleetsched.load_run(run_dir)
    teams = run.economics("showback", "team")
    assert list(teams.index) == ["a", "b"] and teams.loc["a", "usd"] == 0.3 and teams.loc["b", "jobs"] == 1
    idle = run.economics("idle_by_cause_usd")
    assert idle.loc["booting", "value"] == 0.4 and round(idle["value"].sum(), 2) == 0.9
    comparison = fleetsched.load_comparison(comparison_dir)
    stacked = comparison.economics("idle_by_cause_usd")
    assert list(stacked.columns) == ["run", "profile", "seed", "key", "value"]
    assert len(stacked) == 4 * 5
    first = comparison.runs["default-seed0"].document["economics"]["idle_by_cause_usd"]
    assert stacked[stacked["run"] == "default-seed0"].set_index("key")["value"].to_dict() == first


def test_an_economics_table_the_run_lacks_is_named(run_dir: Path) -> None:
    run = fleetsched.load_run(run_dir)
    with pytest.raises(InputError, match=r"summary.json: economics.showback.queue: no such table"):
        run.economics("showback", "queue")
    with pytest.raises(InputError, match=r"summary.json: economics.unit.usd_per_completed_job: a figure, not a table"):
        run.economics("unit", "usd_per_completed_job")
