"""A run directory: summary.json, jobs.csv, events.jsonl, timeline.csv (and solver.csv), all or nothing.

The files are written into a temporary folder beside the target and renamed into place only
when every one is complete (`simulator.rundir`), so an interrupted or failed run never leaves
a directory that looks finished, and nothing but a previous run is ever replaced. A replay
given the folder's `Files` sink (`run_into`) writes them as it goes; `write_run` writes a
finished replay that kept its history. Same inputs and seed give
byte-identical files either way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulator.engine import SimResult
from simulator.ledger import MS_PER_HOUR
from simulator.measured import summary_lines
from simulator.metrics import summary
from simulator.recording import Files
from simulator.rundir import RunDirectory


@contextmanager
def _staged(out: str | Path | RunDirectory) -> Iterator[Path]:
    """The folder to write the run into: a prepared RunDirectory's temporary folder (its caller
    commits), or that of `out`, a new or empty directory, committed when the body ends."""
    run = out if isinstance(out, RunDirectory) else RunDirectory.prepare(out)
    try:
        yield run.path
        if run is not out:
            run.commit()
    except BaseException:
        if run is not out:
            run.abandon()
        raise


def _usd_per_node_hour(result_pools: Mapping[str, Any]) -> dict[str, float]:
    return {name: pool.usd_per_node_hour for name, pool in result_pools.items()}


def _write_summary(folder: Path, document: Mapping[str, Any]) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    (folder / "summary.json").write_text(text, encoding="utf-8")


def write_run(
    result: SimResult, out: str | Path | RunDirectory, run_info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Writes the run directory `out` of a replay that kept its history; returns the summary."""
    memory = result.world.memory
    if memory is None:
        raise RuntimeError("the replay wrote its history to files as it went: nothing kept to write")
    document = summary(result, run_info)
    with _staged(out) as folder:
        files = Files(folder, _usd_per_node_hour(result.world.snapshot.pools))
        try:
            memory.replay(files)
        finally:
            files.close()
        _write_summary(folder, document)
    return document


def run_into(
    replay: Callable[[Files], SimResult],
    out: str | Path | RunDirectory,
    pools: Mapping[str, Any],
    run_info: Mapping[str, Any] | None = None,
) -> tuple[SimResult, dict[str, Any]]:
    """Runs `replay` with a sink writing the run directory `out` as it goes; returns the
    result and its summary. `pools` price the timeline."""
    with _staged(out) as folder:
        files = Files(folder, _usd_per_node_hour(pools))
        try:
            result = replay(files)
        finally:
            files.close()
        document = summary(result, run_info)
        _write_summary(folder, document)
    return result, document


def _s(seconds: float | None) -> str:
    """Seconds for the terminal; a dash where no job started (or ended) to give one."""
    return "-" if seconds is None else f"{seconds:,.0f} s"


def render_summary(document: Mapping[str, Any]) -> str:
    """The summary as a table for the terminal."""
    jobs, cost, queue, jct = document["jobs"], document["cost_usd"], document["queue_s"], document["jct_s"]
    hours = document["gpu_hours"]
    lines = [
        f"profile {document['run']['profile']}, seed {document['run']['seed']}: "
        f"{jobs['total']:,} jobs, {jobs['completed']:,} completed, {jobs['failed']:,} failed, "
        f"{jobs['killed']:,} killed, {jobs['unfinished']:,} unfinished"
        + (f", {jobs['denied']:,} denied" if "denied" in jobs else ""),
        f"  cost        ${cost['total']:,.2f} (idle ${cost['idle']:,.2f}, lost work ${cost['lost_work']:,.2f})",
        f"  queue       mean {_s(queue['mean'])}, p50 {_s(queue['p50'])}, p95 {_s(queue['p95'])}, "
        f"p99 {_s(queue['p99'])}",
        f"  JCT         mean {_s(jct['mean'])}, p50 {_s(jct['p50'])}, p95 {_s(jct['p95'])}",
        f"  GPU-hours   busy {hours['busy']:,.1f}, idle {hours['idle']:,.1f}, lost {hours['lost']:,.1f}; "
        f"utilisation {document['utilisation']:.1%}",
        f"  disruption  {document['preemptions']:,} preemptions, {document['job_interruptions']:,} job interruptions "
        f"({document['nodes']['spot_interruptions']:,} spot nodes taken back)",
    ]
    for pool, money in document["cost_usd"]["by_pool"].items():
        lines.append(f"  pool {pool:<14} ${money['total']:>12,.2f}  idle ${money['idle']:>12,.2f}")
    lines += summary_lines(document)  # jobs with measured utilisation: idle while allocated
    if "governance" in document:
        lines += _guardrail_lines(document["governance"])
    return "\n".join(lines)


def _guardrail_lines(governance: Mapping[str, Any]) -> list[str]:
    """Holds and denials over all teams, and each budget's worst period (`budget status` has it all)."""
    held = held_h = 0.0
    for team in governance["teams"].values():
        for period in team["periods"].values():
            held += sum(period["jobs_held"].values())
            held_h += sum(period["hours_held"].values())
    lines = [f"  guardrails  {held:,.0f} holds ({held_h:,.1f} h held), {governance['jobs_denied']:,} denied; "
             f"Jain's index {governance['jain_index']:.3f}"]  # fmt: skip
    for name, budget in governance["budgets"].items():
        label, worst = max(budget["periods"].items(), key=lambda item: item[1]["spent_usd"] + item[1]["reserved_usd"])
        used = worst["spent_usd"] + worst["reserved_usd"]
        lines.append(f"  budget {name:<12} ${worst['budget_usd']:,.2f} a {budget['period']}; most used {label}: "
                     f"${used:,.2f} ({worst['state']})")  # fmt: skip
    return lines


__all__ = ["MS_PER_HOUR", "render_summary", "write_run"]
