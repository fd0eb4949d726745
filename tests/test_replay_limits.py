"""Replays at the edges: one that would never end is refused up front, a long one reads in the
clock's order, and one where no job started says so rather than 0 s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fleetsched
from fleetsched.cli import main
from fleetsched.report import write_report
from scheduler.errors import InputError
from scheduler.model import Job
from traces.base import MAX_REPLAY_S

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "traces/samples/demo-cluster.toml"


@pytest.mark.parametrize(
    ("record", "field"),
    [({"id": "late", "submit_s": 1e15, "duration_s": 60}, "submit_s"),
     ({"id": "huge", "submit_s": 0, "duration_s": 1e15}, "duration_s")],
    ids=["submit-far-away", "duration-past-a-century"],
)
def test_a_canonical_time_past_a_century_names_its_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], record: dict[str, object], field: str
) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_text(json.dumps({"id": "a", "duration_s": 60}) + "\n" + json.dumps(record) + "\n", encoding="utf-8")
    assert main(["simulate", "--trace", str(trace), "--cluster", str(CLUSTER), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"fleetsched: {trace}:2: {field}: must be at most {MAX_REPLAY_S:g}, got 1000000000000000.0\n"
    assert not (tmp_path / "run").exists()


def test_jobs_from_any_reader_past_a_century_are_refused_by_the_replay() -> None:
    jobs = [Job(id="a", duration_s=60.0), Job(id="b", submit_s=MAX_REPLAY_S * 2, duration_s=60.0)]
    with pytest.raises(InputError, match=r"job b: submit_s .* must each be at most"):
        fleetsched.simulate(jobs, CLUSTER)


def test_the_report_lists_days_in_the_clocks_order(tmp_path: Path) -> None:
    trace = tmp_path / "days.jsonl"
    trace.write_text("".join(json.dumps({"id": f"d{day}", "submit_s": day * 86_400, "duration_s": 600}) + "\n"
                             for day in range(12)), encoding="utf-8")  # fmt: skip
    fleetsched.simulate(trace, CLUSTER, out=tmp_path / "run")
    page = write_report(tmp_path / "run", tmp_path / "report.html").read_text(encoding="utf-8")
    positions = [page.index(f"<td>day-{day}</td>") for day in (0, 1, 2, 9, 10, 11)]
    assert positions == sorted(positions)


def test_a_replay_where_no_job_started_has_no_queue_time_rather_than_0_s(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "never.jsonl"
    trace.write_text('{"id": "a", "duration_s": 60, "gpus": 16}\n', encoding="utf-8")  # 8-GPU nodes at most
    assert main(["simulate", "--trace", str(trace), "--cluster", str(CLUSTER), "--out", str(tmp_path / "run")]) == 0
    assert "  queue       mean -, p50 -, p95 -, p99 -\n" in capsys.readouterr().out
    document = json.loads((tmp_path / "run/summary.json").read_text(encoding="utf-8"))
    assert document["queue_s"] == {"mean": None, "p50": None, "p95": None, "p99": None}
    assert document["jct_s"] == {"mean": None, "p50": None, "p95": None}
    assert main(["compare", "--trace", str(trace), "--cluster", str(CLUSTER), "--profiles", "default,binpack",
                 "--workers", "1", "--out", str(tmp_path / "cmp")]) == 0  # fmt: skip
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[5:7] == ["-", "-"]  # p95 queue, mean JCT
    page = write_report(tmp_path / "cmp", tmp_path / "report.html").read_text(encoding="utf-8")
    assert "nan" not in page.lower()
