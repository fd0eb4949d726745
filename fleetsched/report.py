"""The HTML report (`fleetsched report RUN|COMPARISON|SWEEP --out report.html`): one self-contained file.

Everything is in the one file: inline CSS, inline SVG charts (`fleetsched.report_svg`), no
script and nothing fetched, so it opens offline and can be mailed. A run's report shows its
summary, unit economics, showback by team, project, model and day, training against
inference, the spot counterfactual, idle cost by cause, the JCT distribution and the
timeline; a comparison's (`fleetsched.report_comparison`) adds each profile's spread over
seeds and the paired difference between profiles with a 95 % confidence interval; a sweep's
(`fleetsched.report_sweep`) its cells' cost against p95 queue time and their Pareto front.

The file is written beside its target and renamed into place (`write_report`): a failure
leaves no partial report behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleetsched import report_svg
from fleetsched.frames import Run, load_comparison, load_run
from fleetsched.report_comparison import comparison_page
from fleetsched.report_html import (
    IDLE_CAUSES,
    count,
    jct_points,
    money,
    note,
    number,
    page,
    percent,
    section,
    table,
    timeline_series,
)
from fleetsched.report_sweep import RESULTS, sweep_page
from fleetsched.report_usage import inference_section, measured_section
from scheduler.errors import InputError

log = logging.getLogger(__name__)
PathLike = str | Path

# A run -----------------------------------------------------------------------------------------

def summary_rows(document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The summary's headline figures, formatted."""
    jobs, cost, queue, jct = document["jobs"], document["cost_usd"], document["queue_s"], document["jct_s"]
    hours, nodes = document["gpu_hours"], document.get("nodes", {})
    return [
        ("jobs", count(jobs["total"])), ("completed", count(jobs["completed"])), ("failed", count(jobs["failed"])),
        ("killed", count(jobs["killed"])), ("unfinished", count(jobs["unfinished"])),
        *([("denied by a guardrail", count(jobs["denied"]))] if "denied" in jobs else []),
        ("cost", money(cost["total"])), ("attributed to jobs", money(cost["attributed"])),
        ("idle", money(cost["idle"])), ("lost work", money(cost["lost_work"])),
        ("queue mean / p50 / p95 / p99 (s)", " / ".join(number(queue[key]) for key in ("mean", "p50", "p95", "p99"))),
        ("JCT mean / p50 / p95 (s)", " / ".join(number(jct[key]) for key in ("mean", "p50", "p95"))),
        ("GPU-hours busy / idle / lost", " / ".join(number(hours[key], 3) for key in ("busy", "idle", "lost"))),
        ("utilisation", percent(document["utilisation"])),
        ("preemptions", count(document["preemptions"])), ("job interruptions", count(document["job_interruptions"])),
        ("nodes provisioned / released idle / taken back (spot)",
         " / ".join(count(nodes.get(key, 0)) for key in ("provisioned", "released_idle", "spot_interruptions"))),
    ]  # fmt: skip


def group_table(groups: Mapping[str, Mapping[str, Any]], label: str) -> str:
    rows = [(key, count(group["jobs"]), count(group["completed"]), money(group["usd"]),
             money(group["usd_per_completed_job"])) for key, group in groups.items()]  # fmt: skip
    return table([label, "jobs", "completed", "cost", "per completed job"], rows)


def economics_sections(economics: Mapping[str, Any] | None) -> list[str]:
    """Unit economics, showback, spot and idle by cause of one run's `economics` section."""
    if not economics:
        return [section("Unit economics", note("This run's summary.json has no economics section "
                                                "(written by an older fleetsched)."))]  # fmt: skip
    unit = economics["unit"]
    parts = [section(
        "Unit economics",
        table(["figure", "value"], [
            ("cost per completed job", money(unit["usd_per_completed_job"])),
            ("cost per GPU-hour billed", money(unit["usd_per_gpu_hour_billed"])),
            ("cost per GPU-hour delivered", money(unit["usd_per_gpu_hour_delivered"])),
            ("GPU-hours delivered (held by jobs, less lost work)", number(unit["gpu_hours_delivered"], 3)),
        ]),
        "<h3>Training against inference</h3>",
        group_table(economics.get("kinds", {}), "kind") if economics.get("kinds") else note("no job rows"),
        "<h3>Training jobs by model</h3>",
        group_table(economics.get("training_by_model", {}), "model"),
    )]  # fmt: skip
    showback = economics.get("showback")
    if showback:
        day_rows = [(day, money(row["total"]), money(row["attributed"]), money(row["idle"]))
                    for day, row in sorted(showback["day"].items(), key=_day_number)]  # fmt: skip
        parts.append(section(
            "Showback", note("Job costs per label from the ledger; days of the simulated clock (day-0 starts at t=0)."),
            "<h3>By team</h3>", group_table(showback["team"], "team"),
            "<h3>By project</h3>", group_table(showback["project"], "project"),
            "<h3>By model</h3>", group_table(showback["model"], "model"),
            "<h3>By day</h3>", table(["day", "bill", "attributed", "idle"], day_rows)))  # fmt: skip
    parts.append(spot_section(economics["spot"]))
    parts.append(idle_section(economics.get("idle_by_cause_usd"), economics.get("idle_by_cause_gpu_hours")))
    return parts


def spot_section(spot: Mapping[str, Any]) -> str:
    rows = []
    for pool, figures in spot["pools"].items():
        if figures.get("on_demand_price") is None:
            rows.append((pool, money(figures["spot_usd"]), "—", "—", "—", "—", "no on-demand price for its GPU model"))
            continue
        rows.append((pool, money(figures["spot_usd"]), money(figures["on_demand_usd"]), money(figures["saving_usd"]),
                     money(figures["lost_work_usd"]), money(figures["net_saving_usd"]),
                     f"{money(figures['on_demand_usd_per_gpu_hour'])}/GPU-hour, {figures['on_demand_price']}"))
    if not rows:
        return section("Spot counterfactual", note("No spot pool in this cluster."))
    left_out = spot.get("left_out", [])
    label = "spot pools with an on-demand price" if left_out else "all spot pools"
    rows.append((label, money(spot["spot_usd"]), money(spot["on_demand_usd"]), money(spot["saving_usd"]),
                 money(spot["lost_work_usd"]), money(spot["net_saving_usd"]),
                 f"leaves out {', '.join(left_out)}" if left_out else ""))
    return section("Spot counterfactual", note(
        "The same node-hours at the on-demand price of the same GPU model: the cluster's cheapest on-demand pool of "
        "that model, else the catalog's on-demand price of the same instance (else its cheapest for the model). "
        "Lost work (priced on-demand) is the work spot pools threw away; the net saving takes it off."),
        table(["pool", "spot cost", "on-demand cost", "saving", "lost work", "net saving", "on-demand price"], rows))


def idle_section(usd: Mapping[str, float] | None, hours: Mapping[str, float] | None) -> str:
    if not usd:
        return section("Idle cost by cause", note("Not computed for this run."))
    ordered = {cause: usd[cause] for cause in IDLE_CAUSES if cause in usd}  # summary.json sorts its keys
    ordered.update(usd)
    rows = [(IDLE_CAUSES.get(cause, cause), money(value), number((hours or {}).get(cause), 3))
            for cause, value in ordered.items()]  # fmt: skip
    rows.append(("all idle", money(round(sum(usd.values()), 2)), number(sum((hours or {}).values()), 3)))
    bar = report_svg.stacked_bar("Idle cost by cause", {IDLE_CAUSES.get(k, k): v for k, v in ordered.items()}, "USD")
    return section("Idle cost by cause", note(
        "Every idle GPU-millisecond the ledger billed, in one cause: booting nodes; free reserved capacity; empty "
        "nodes of elastic pools waiting for release; other free GPUs while jobs waited (fragmentation) or while "
        "none did (no demand). The causes add up to the idle cost to the cent."), bar,
        table(["cause", "cost", "GPU-hours"], rows))


def run_page(run: Run) -> str:
    document = run.document
    info = document["run"]
    end_s = float(info.get("end_s", 0.0))
    title = f"fleetsched report: {run.name} (profile {info.get('profile')}, seed {info.get('seed')})"
    inputs = table(["input", "value"], [(key, str(info.get(key, "—"))) for key in ("trace", "cluster", "profile",
                                                                                   "seed", "end_s")])  # fmt: skip
    charts = "".join([
        report_svg.lines("JCT CDF", [report_svg.Series(run.name, jct_points(run.jobs["jct_s"].tolist()))],
                         "job completion time (s)", "fraction of jobs"),
        report_svg.lines("GPUs busy per pool", timeline_series(run, "gpus_busy", end_s), "hours", "GPUs busy"),
        report_svg.lines("Nodes per pool", timeline_series(run, "nodes", end_s), "hours", "nodes"),
    ])  # fmt: skip
    body = [section("Run", inputs), section("Summary", table(["figure", "value"], summary_rows(document))),
            *economics_sections(document.get("economics")),
            *inference_section(document.get("inference")), *measured_section(document.get("measured")),
            section("Plots", f'<div class="charts">{charts}</div>')]  # fmt: skip
    return page(title, body)


# Writing -----------------------------------------------------------------------------------------

def render(source: PathLike) -> str:
    """The report of a run, comparison or sweep directory, as HTML text; InputError if it is none,
    or if a summary.json lacks a figure the report shows (hand-edited, or from another tool)."""
    folder = Path(source)
    if (folder / "comparison.csv").is_file():
        comparison = load_comparison(folder)
        with _summaries_named(folder / "runs" / "*" / "summary.json"):
            return comparison_page(comparison)
    if (folder / RESULTS).is_file():
        return sweep_page(folder)
    if (folder / "summary.json").is_file() or not folder.is_dir():
        run = load_run(folder)
        with _summaries_named(folder / "summary.json"):
            return run_page(run)
    raise InputError(f"neither a run directory (summary.json), a comparison (comparison.csv) nor a sweep ({RESULTS})",
                     source=str(folder))  # fmt: skip


@contextmanager
def _summaries_named(path: Path) -> Iterator[None]:
    """Turns a figure missing from (or of the wrong type in) the summaries into one InputError naming them."""
    try:
        yield
    except KeyError as error:
        raise InputError(f"no {error.args[0]!r}: not a summary this fleetsched wrote", source=str(path)) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise InputError(f"a figure of the wrong type ({error}): not a summary this fleetsched wrote",
                         source=str(path)) from None


def write_report(source: PathLike, out: PathLike, render_page: Callable[[PathLike], str] = render) -> Path:
    """Writes the report of `source` to `out` atomically (a temporary file beside it, renamed into
    place); returns `out`. Nothing is left at `out` or beside it when rendering or writing fails."""
    target = Path(out)
    if target.is_dir():
        raise InputError("is a directory; name the report's file", source=str(out), field="--out")
    if not target.parent.is_dir():
        raise InputError("its folder does not exist", source=str(out), field="--out")
    text = render_page(source)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    log.info("wrote %s", target)
    return target


def _day_number(item: tuple[str, Any]) -> int:
    """Day keys (`day-0` ... `day-108`) in the clock's order: summary.json's keys sort as text."""
    return int(item[0].removeprefix("day-"))


__all__ = ["render", "write_report"]
