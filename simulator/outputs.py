"""A run directory: summary.json, jobs.csv, events.jsonl, timeline.csv (and solver.csv), all or nothing.

The files are written into a temporary folder beside the target and renamed into place only
when every one is complete (`simulator.rundir`), so an interrupted or failed run never leaves
a directory that looks finished, and nothing but a previous run is ever replaced. Same inputs
and seed give byte-identical files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from simulator.engine import SimResult
from simulator.ledger import MS_PER_HOUR, PARTS
from simulator.metrics import SOLVER_COLUMNS, job_rows, solver_rows, summary
from simulator.rundir import RunDirectory
from simulator.runs import MS

TIMELINE_COLUMNS = ("t_s", "pool", "nodes", "provisioning", "gpus_busy", "usd_per_hour")


def _timeline_rows(result: SimResult) -> list[dict[str, Any]]:
    pools = result.world.snapshot.pools
    rows = []
    for t_ms, pool, nodes, busy_parts, provisioning in result.world.timeline:
        rows.append({
            "t_s": t_ms / MS,
            "pool": pool,
            "nodes": nodes,
            "provisioning": provisioning,
            "gpus_busy": round(busy_parts / PARTS, 4),
            "usd_per_hour": round(nodes * pools[pool].usd_per_node_hour, 6),
        })
    return rows


def write_run(
    result: SimResult, out: str | Path | RunDirectory, run_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Writes the run's files and returns the summary: into a prepared RunDirectory's temporary
    folder (its caller commits), or into `out`, a new or empty directory, committed when complete."""
    document = summary(result, run_info)
    run = out if isinstance(out, RunDirectory) else RunDirectory.prepare(out)
    temporary = run.path
    try:
        (temporary / "summary.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        rows = job_rows(result)
        with (temporary / "jobs.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["id"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        with (temporary / "events.jsonl").open("w", encoding="utf-8") as handle:
            for t_ms, name, data in result.world.log:
                handle.write(json.dumps({"t_s": t_ms / MS, "event": name, **data}, sort_keys=True) + "\n")
        with (temporary / "timeline.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=TIMELINE_COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(_timeline_rows(result))
        if result.world.solver_log:  # only batch placers report solves
            with (temporary / "solver.csv").open("w", encoding="utf-8", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=SOLVER_COLUMNS, lineterminator="\n")
                writer.writeheader()
                writer.writerows(solver_rows(result.world.solver_log))
        if run is not out:
            run.commit()
    except BaseException:
        if run is not out:
            run.abandon()
        raise
    return document


def render_summary(document: Mapping[str, Any]) -> str:
    """The summary as a table for the terminal."""
    jobs, cost, queue, jct = document["jobs"], document["cost_usd"], document["queue_s"], document["jct_s"]
    hours = document["gpu_hours"]
    lines = [
        f"profile {document['run']['profile']}, seed {document['run']['seed']}: "
        f"{jobs['total']:,} jobs, {jobs['completed']:,} completed, {jobs['failed']:,} failed, "
        f"{jobs['killed']:,} killed, {jobs['unfinished']:,} unfinished",
        f"  cost        ${cost['total']:,.2f} (idle ${cost['idle']:,.2f}, lost work ${cost['lost_work']:,.2f})",
        f"  queue       mean {queue['mean']:,.0f} s, p50 {queue['p50']:,.0f} s, p95 {queue['p95']:,.0f} s, "
        f"p99 {queue['p99']:,.0f} s",
        f"  JCT         mean {jct['mean']:,.0f} s, p50 {jct['p50']:,.0f} s, p95 {jct['p95']:,.0f} s",
        f"  GPU-hours   busy {hours['busy']:,.1f}, idle {hours['idle']:,.1f}, lost {hours['lost']:,.1f}; "
        f"utilisation {document['utilisation']:.1%}",
        f"  disruption  {document['preemptions']:,} preemptions, {document['job_interruptions']:,} job interruptions "
        f"({document['nodes']['spot_interruptions']:,} spot nodes taken back)",
    ]
    for pool, money in document["cost_usd"]["by_pool"].items():
        lines.append(f"  pool {pool:<14} ${money['total']:>12,.2f}  idle ${money['idle']:>12,.2f}")
    return "\n".join(lines)


__all__ = ["MS_PER_HOUR", "render_summary", "write_run"]
