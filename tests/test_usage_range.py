"""`fleetsched usage report --prometheus`: `--start`, `--end` and `--step` are checked before Prometheus
is asked (times as unix seconds or RFC 3339, start before end, a step over 0 seconds), each
mistake one line naming the option; with a file, a range it would not apply is refused; and
Prometheus answering no series is said, not printed as zeros."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.loopback_http import LoopbackHttp
from tests.test_usage import P1, _query_range, element, refused, report, write_record

NO_SERIES = json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode()


@pytest.fixture
def prometheus() -> Iterator[LoopbackHttp]:
    server = LoopbackHttp(_query_range)
    yield server
    server.stop()


def refused_unasked(capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp, *range_: str) -> str:
    """The one line the report stops with for `--start --end --step` = `range_`, Prometheus never asked."""
    start, end, step = range_
    message = refused(capsys, ["--prometheus", prometheus.url, "--start", start, "--end", end, "--step", step,
                               "--price", "H100=4"])  # fmt: skip
    assert prometheus.paths == []
    return message


def test_a_start_that_is_no_time_is_named_before_the_query(
    capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp
) -> None:
    assert refused_unasked(capsys, prometheus, "yesterday", "1700003600", "60") == (
        "fleetsched: --start: must be unix seconds or an RFC 3339 time (2024-12-05T00:00:00Z), got 'yesterday'\n"
    )


def test_an_end_before_the_start_is_named_before_the_query(
    capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp
) -> None:
    assert refused_unasked(capsys, prometheus, "100", "0", "60") == (
        "fleetsched: --end: must come after --start (100), got '0'\n"
    )


def test_a_step_of_zero_is_named_before_the_query(capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp) -> None:
    assert refused_unasked(capsys, prometheus, "1700000000", "1700003600", "0") == (
        "fleetsched: --step: must be a number of seconds over 0, got '0'\n"
    )


def test_an_rfc3339_time_without_its_offset_is_named(
    capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp
) -> None:
    assert refused_unasked(capsys, prometheus, "2023-11-14T22:13:20", "1700003600", "60") == (
        "fleetsched: --start: an RFC 3339 time names its offset (Z or +01:00), got '2023-11-14T22:13:20'\n"
    )


def test_rfc3339_times_are_taken_and_sent_as_given(
    capsys: pytest.CaptureFixture[str], prometheus: LoopbackHttp
) -> None:
    document = report(capsys, "--prometheus", prometheus.url, "--start", "2023-11-14T22:13:20Z", "--end",
                      "2023-11-14T23:13:20+00:00", "--step", "60")  # fmt: skip
    assert document["series"] == 2
    assert parse_qs(urlparse(prometheus.paths[0]).query)["start"] == ["2023-11-14T22:13:20Z"]


def test_a_range_with_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    assert refused(capsys, [str(path), "--start", "1700000000", "--price", "H100=4"]) == (
        "fleetsched: --start: only with --prometheus: a file is read whole\n"
    )


def test_prometheus_answering_no_series_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    server = LoopbackHttp(lambda path: (200, NO_SERIES))
    try:
        message = refused(capsys, ["--prometheus", server.url, "--start", "0", "--end", "60", "--step", "60",
                                   "--price", "H100=4"])  # fmt: skip
    finally:
        server.stop()
    assert message == (
        f"fleetsched: {server.url}: no DCGM_FI_DEV_GPU_UTIL series from --start 0 to --end 60: nothing to report\n"
    )
