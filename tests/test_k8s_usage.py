"""The extender's idle cost per team: the GPU agents' idle seconds from a real HTTP Prometheus stand-in, priced at its pools."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender.config import load_config
from extender.server import Metrics
from extender.usage import METRIC, IdleCost, UsageSettings, price, vector, with_usage
from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.model import ClusterSnapshot
from tests.builders import make_pool, make_snapshot
from tests.loopback_http import LoopbackHttp


def cluster() -> ClusterSnapshot:
    """h100: $80 a node-hour for 8 GPUs, $10 a GPU-hour; a100: A100-40GB (MIG), $28 for 8, $3.50 a GPU-hour."""
    return make_snapshot(make_pool("h100", usd_per_node_hour=80.0, nodes=2),
                         make_pool("a100", gpu="A100-40GB", usd_per_node_hour=28.0, nodes=1))  # fmt: skip


def sample(team: str, node: str, seconds: float, profile: str = "") -> dict[str, object]:
    return {"metric": {"team": team, "Hostname": node, "GPU_I_PROFILE": profile}, "value": [1_733_000_000, str(seconds)]}


SAMPLES = [
    sample("a", "h100-0", 7200),  # 2 GPU-hours at $10
    sample("a", "a100-0", 7200, "3g.20gb"),  # 2 hours of 3 of 7 compute slices: 6/7 GPU-hour at $3.50: $3
    sample("b", "h100-1", 3600),  # 1 GPU-hour, $10
    sample("", "gone-node", 1800),  # a node the extender does not know: half an hour unpriced
]


def answer(result: list[dict[str, object]]) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


def test_idle_seconds_are_priced_at_each_nodes_pool_and_mig_slice() -> None:
    teams, unpriced = price(vector(answer(SAMPLES)), cluster())
    assert {team: (idle.gpu_hours, idle.usd) for team, idle in teams.items()} == {
        "a": (round(2 + 6 / 7, 6), 23.0), "b": (1.0, 10.0)}  # fmt: skip
    assert unpriced == 0.5


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>", "not JSON"),
        (b"[1, 2]", "not a Prometheus answer"),
        (json.dumps({"status": "error", "error": "bad query"}).encode(), "status is 'error': bad query"),
        (json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode(), "not a vector"),
        (answer([{"metric": {}, "value": [0]}]), r"data.result\[0\] is not a sample"),
        (answer([{"metric": {}, "value": [0, "-5"]}]), r"data.result\[0\] is not a sample"),
        (answer([{"metric": {}, "value": [0, "NaN"]}]), r"data.result\[0\] is not a sample"),
    ],
    ids=["html", "list", "error", "matrix", "short", "negative", "nan"],
)
def test_an_answer_that_is_not_a_vector_of_idle_seconds_is_refused(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        vector(body)


class FakePrometheus(LoopbackHttp):
    """Prometheus's /api/v1/query on a loopback port: answers `result`, remembers each query."""

    def __init__(self) -> None:
        self.result: list[dict[str, object]] = SAMPLES
        super().__init__(self._query)

    @property
    def queries(self) -> list[str]:
        return [urllib.parse.parse_qs(urllib.parse.urlparse(path).query).get("query", [""])[0] for path in self.paths]

    def _query(self, path: str) -> tuple[int, bytes]:
        if urllib.parse.urlparse(path).path != "/api/v1/query":
            return 404, b"not found"
        return 200, answer(self.result)


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    fake = FakePrometheus()
    yield fake
    fake.stop()


def test_the_extender_serves_idle_hours_and_dollars_per_team_on_its_metrics(prometheus: FakePrometheus) -> None:
    now = [100.0]
    usage = IdleCost(UsageSettings(prometheus.url + "/", window_s=3600, timeout_s=2.0), clock=lambda: now[0])
    assert usage.refresh(cluster())
    assert prometheus.queries == [f"sum by (team, Hostname, GPU_I_PROFILE) (increase({METRIC}[3600s]))"]
    now[0] = 130.0
    guardrails = {"fleetsched_budget_spent_usd": {(("budget", "x"),): 1.0}}
    text = Metrics().render(with_usage(lambda plan: guardrails, usage)(None))
    lines = set(text.splitlines())
    assert {'fleetsched_team_allocated_idle_usd{team="a",window="3600s"} 23.0',
            'fleetsched_team_allocated_idle_usd{team="b",window="3600s"} 10.0',
            'fleetsched_team_allocated_idle_gpu_hours{team="b",window="3600s"} 1.0',
            'fleetsched_usage_unpriced_gpu_hours{window="3600s"} 0.5',
            "fleetsched_usage_source_up 1.0", "fleetsched_usage_age_seconds 30.0",
            'fleetsched_budget_spent_usd{budget="x"} 1.0'} <= lines  # fmt: skip


def test_a_prometheus_that_goes_away_keeps_the_last_figures_and_logs_once_per_change(
    prometheus: FakePrometheus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="extender.usage")
    usage = IdleCost(UsageSettings(prometheus.url, timeout_s=1.0))
    assert usage.refresh(cluster())
    assert caplog.records == []  # a first answer is not news
    prometheus.stop()
    assert not usage.refresh(cluster()) and not usage.refresh(cluster())
    gauges = usage.gauges()
    assert gauges["fleetsched_usage_source_up"] == {(): 0.0}
    assert gauges["fleetsched_team_allocated_idle_usd"][(("team", "b"), ("window", "86400s"))] == 10.0  # kept
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    restarted = FakePrometheus()
    try:
        usage.settings = UsageSettings(restarted.url, timeout_s=1.0)  # the same Prometheus on a new port
        restarted.result = [sample("b", "h100-1", 1800)]
        assert usage.refresh(cluster())
        assert usage.gauges()["fleetsched_team_allocated_idle_usd"] == {(("team", "b"), ("window", "86400s")): 5.0}
        assert [record.levelname for record in caplog.records] == ["WARNING", "INFO"]
    finally:
        restarted.stop()


def test_the_refresh_thread_asks_until_stopped(prometheus: FakePrometheus) -> None:
    usage = IdleCost(UsageSettings(prometheus.url, refresh_s=0.01, timeout_s=1.0))
    stop = threading.Event()
    thread = threading.Thread(target=usage.run, args=(cluster, stop))
    thread.start()
    try:
        for _ in range(200):
            if len(prometheus.queries) >= 3:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5.0)
    assert len(prometheus.queries) >= 3 and not thread.is_alive() and usage.up


def test_the_configuration_names_prometheus_and_its_window(tmp_path: Path) -> None:
    path = tmp_path / "extender.toml"
    path.write_text('usage_prometheus = "http://prometheus.monitoring:9090"\nusage_window_s = 3600\n')
    config = load_config(path, default_catalog())
    assert (config.usage_prometheus, config.usage_window_s, config.usage_refresh_s) == (
        "http://prometheus.monitoring:9090", 3600.0, 300.0)  # fmt: skip
    assert load_config(write(tmp_path, ""), default_catalog()).usage_prometheus == ""  # off unless named


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "other.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "problem"),
    [
        ('usage_prometheus = "prometheus:9090"\n', "usage_prometheus", "must be an http:// or https:// URL"),
        ('usage_prometheus = "http://"\n', "usage_prometheus", "must be an http:// or https:// URL"),
        ("usage_window_s = 0\n", "usage_window_s", "above 0"),
        ('usage_refresh_s = "often"\n', "usage_refresh_s", "above 0"),
    ],
    ids=["no-scheme", "no-host", "window", "refresh"],
)
def test_a_bad_usage_key_names_its_line(tmp_path: Path, text: str, field: str, problem: str) -> None:
    path = write(tmp_path, "port = 8888\n" + text)
    with pytest.raises(InputError, match=problem) as caught:
        load_config(path, default_catalog())
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), 2, field)


def test_the_extender_starts_the_refresh_beside_the_guardrails_gauges(prometheus: FakePrometheus, tmp_path: Path) -> None:
    """extender.main wires it: a thread refreshes from the planner's current snapshot, and the
    gauges the guardrails had put in place stay."""
    from types import SimpleNamespace

    from extender.main import _measure_idle

    path = write(tmp_path, f'usage_prometheus = "{prometheus.url}"\nusage_refresh_s = 0.01\n')
    plan = SimpleNamespace(view=SimpleNamespace(snapshot=cluster()))
    extender = SimpleNamespace(planner=SimpleNamespace(current=lambda: plan),
                               more_gauges=lambda plan: {"fleetsched_budget_spent_usd": {(): 2.0}})  # fmt: skip
    stop = threading.Event()
    _measure_idle(extender, load_config(path, default_catalog()), stop)  # type: ignore[arg-type]
    try:
        for _ in range(300):
            gauges = extender.more_gauges(plan)
            if gauges["fleetsched_usage_source_up"] == {(): 1.0}:
                break
            stop.wait(0.01)
    finally:
        stop.set()
    assert gauges["fleetsched_team_allocated_idle_usd"][(("team", "a"), ("window", "86400s"))] == 23.0
    assert gauges["fleetsched_budget_spent_usd"] == {(): 2.0}
