"""The report's sections on measured GPU use and inference services: a run's `measured` and `inference` keys.

`measured` (`simulator.measured`) is what a replay of jobs whose trace measured their GPU
utilisation found: allocated and allocated-but-idle GPU-hours and dollars, per team and per job.
`inference` (`simulator.inference_economics`) is cost per million tokens and per thousand
requests of inference services, per service and GPU model. A run without them shows neither.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetsched.report_html import count, money, note, number, percent, section, table

TOP_JOBS = 20  # the jobs with the most idle dollars shown; summary.json holds them all


def _share(part: float, whole: float) -> str:
    return percent(part / whole) if whole else "—"


def measured_section(measured: Mapping[str, Any] | None) -> list[str]:
    """Allocated-but-idle GPU-hours and dollars, in all, per team and for the jobs that idled most."""
    if not measured:
        return []
    rule = measured["rule"]
    hours, usd = measured["gpu_hours"], measured["usd"]
    teams = [(team, count(row["jobs"]), number(row["gpu_hours"]["allocated"], 2), number(row["gpu_hours"]["idle"], 2),
              _share(row["gpu_hours"]["idle"], row["gpu_hours"]["allocated"]), money(row["usd"]["allocated"]),
              money(row["usd"]["idle"])) for team, row in measured["by_team"].items()]  # fmt: skip
    ranked = sorted(measured["by_job"].items(), key=lambda item: (-item[1]["usd"]["idle"], item[0]))[:TOP_JOBS]
    jobs = [(job, row.get("team") or "—", number(row["gpu_hours"]["allocated"], 2), number(row["gpu_hours"]["idle"], 2),
             _share(row["gpu_hours"]["idle"], row["gpu_hours"]["allocated"]), money(row["usd"]["idle"]))
            for job, row in ranked]  # fmt: skip
    headers = ["team", "jobs", "allocated GPU-h", "idle GPU-h", "idle share", "allocated $", "idle $"]
    return [section(
        "Measured GPU use",
        note(f"{count(measured['jobs'])} jobs carried measured utilisation. Allocated but idle: under "
             f"{rule['threshold_percent']:g} % for at least {rule['window_s']:g} s (scheduler.idleness), priced at "
             f"each job's ledger cost. In all: {number(hours['idle'], 2)} of {number(hours['allocated'], 2)} "
             f"allocated GPU-hours idle ({_share(hours['idle'], hours['allocated'])}), {money(usd['idle'])} of "
             f"{money(usd['allocated'])}."),
        "<h3>By team</h3>", table(headers, teams),
        f"<h3>The {len(jobs)} jobs with the most idle dollars</h3>",
        table(["job", "team", "allocated GPU-h", "idle GPU-h", "idle share", "idle $"], jobs))]  # fmt: skip


def inference_section(inference: Mapping[str, Any] | None) -> list[str]:
    """Cost per million tokens and per thousand requests, per service on each GPU model."""
    if not inference:
        return []

    def per(value: float | None, decimals: int = 4) -> str:
        return "—" if value is None else f"${value:,.{decimals}f}"

    rows = [(name, count(row["replicas"]), count(row["requests"]), count(row["input_tokens"]),
             count(row["output_tokens"]), money(row["cost_usd"]), per(row["usd_per_million_tokens"]),
             per(row["usd_per_million_output_tokens"]), per(row["usd_per_thousand_requests"]))
            for name, row in [*inference["by_service_and_gpu_model"].items(), ("all services", inference["total"])]]
    return [section(
        "Inference services",
        note(f"What the services' replicas held in the ledger, per token and request they served; the whole "
             f"cluster's bill per million tokens: {per(inference['cluster_usd_per_million_tokens'])}."),
        table(["service on GPU model", "replicas", "requests", "input tokens", "output tokens", "cost",
               "$/M tokens", "$/M output tokens", "$/1k requests"], rows))]  # fmt: skip


__all__ = ["inference_section", "measured_section"]
