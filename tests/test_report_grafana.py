"""The Grafana dashboard (deploy/grafana/fleetsched-extender.json) asks only for what the extender exports.

The metrics are read from a real governed extender's /metrics text (the request counters and
latency histograms after one request of each verb, and the gauges of a plan with a budget,
a held pod and fair shares), not from a list kept by hand: every metric an expression names
must be a series the extender writes, every label it groups or filters by must be a label of
a metric it reads, and every metric family the extender exports has a panel.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from extender.server import VERBS, Metrics
from extender.wire import ExtenderArgs
from tests.test_k8s_extender import pod
from tests.test_k8s_governance import HOUR, bind, governed

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "fleetsched-extender.json"
METRIC = re.compile(r"\bfleetsched_[a-z_]+\b")
SAMPLE = re.compile(r"^([a-z_:]+)(?:\{(.*)\})? ")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Series name -> its label names, from the /metrics text of a governed extender."""
    first, second = pod("first", annotations=HOUR), pod("second", annotations=HOUR)
    ext, *_ = governed(tmp_path_factory.mktemp("grafana"), [first, second])
    ext.filter(ExtenderArgs(first, ("od-1",)))
    bind(ext, "first")
    ext.planner.plan()
    metrics = Metrics()
    for verb in VERBS:
        metrics.observe(verb, 200, 0.002)
    metrics.observe("filter", 503, 0.001)
    series: dict[str, set[str]] = {}
    for line in metrics.render(ext.gauges()).splitlines():
        match = SAMPLE.match(line)
        if line.startswith("#") or match is None:
            continue
        labels = {pair.split("=", 1)[0] for pair in (match.group(2) or "").split(",") if pair}
        series.setdefault(match.group(1), set()).update(labels)
    return series


def expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every target of every panel."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_the_dashboard_is_grafana_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] == "fleetsched-extender" and dashboard["schemaVersion"] >= 36
    assert [variable["type"] for variable in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert [target["refId"] for target in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]


def test_every_expression_reads_series_the_extender_exports(exported: dict[str, set[str]]) -> None:
    found = expressions()
    assert len(found) >= 10
    for title, expr in found:
        names = METRIC.findall(expr)
        assert names, f"{title}: {expr} reads no fleetsched metric"
        for name in names:
            assert name in exported, f"{title}: {name} is not exported; the extender writes {sorted(exported)}"


def test_every_label_an_expression_uses_belongs_to_a_metric_it_reads(exported: dict[str, set[str]]) -> None:
    for title, expr in expressions():
        labels = set().union(*(exported.get(name, set()) for name in METRIC.findall(expr)))
        used = {label.strip() for group in GROUPING.findall(expr) for label in group.split(",") if label.strip()}
        used |= {re.split(r"[=!~]", matcher, maxsplit=1)[0].strip() for group in MATCHER.findall(expr)
                 for matcher in group.split(",") if matcher.strip()}  # fmt: skip
        assert used <= labels, f"{title}: {sorted(used - labels)} are not labels of {METRIC.findall(expr)}"


def test_every_metric_family_the_extender_exports_has_a_panel(exported: dict[str, set[str]]) -> None:
    families = {name.removesuffix(suffix) for name in exported for suffix in HISTOGRAM_SUFFIXES if name.endswith(suffix)}
    families |= {name for name in exported if not any(name.startswith(family) for family in families)}
    shown = {name for _, expr in expressions() for name in METRIC.findall(expr)}
    for family in sorted(families):
        assert any(name == family or name.startswith(family + "_") for name in shown), f"no panel shows {family}"


def test_the_check_fails_on_a_misspelt_metric(exported: dict[str, set[str]]) -> None:
    """The control: a name the extender does not write is caught."""
    assert "fleetsched_extender_request_total" not in exported  # 'requests' misspelt
    assert "fleetsched_extender_requests_total" in exported and "fleetsched_budget_usd" in exported
