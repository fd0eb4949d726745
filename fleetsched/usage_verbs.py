"""The `fleetsched usage` verbs: `report` (idle GPU cost per team and pod from the agent's
metrics) and `agent-record` (a trace's measured series written as the agent's record file).

Each returns (exit code, text); the command line (fleetsched/cli.py) prints it. Bad input is
an InputError, printed as one line, exit 2; `--out` files are written whole or not at all.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from fleetsched.usage import Report, Totals, cluster_prices, parse_price, usage
from fleetsched.usage_input import UTILISATION, Series, check_range, fetch, read_file
from fleetsched.usage_record import check_writable, write_record
from scheduler.catalog import default_catalog
from scheduler.cluster import load_cluster
from scheduler.errors import InputError
from scheduler.idleness import IdleRule
from simulator.measured import GAP_PERIODS
from traces.formats import FORMATS, read_trace_jobs

Output = tuple[int, str]
DEFAULT_RULE = IdleRule()
CSV_COLUMNS = ("scope", "name", "team", "series", "allocated_gpu_hours", "measured_gpu_hours", "idle_gpu_hours",
               "allocated_usd", "idle_usd")  # fmt: skip


def add_usage_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `usage report|agent-record` under the command's verbs."""
    parser = verbs.add_parser("usage", help="allocated-but-idle GPU-hours and dollars from the GPU agent's metrics")
    usage_verbs = parser.add_subparsers(dest="usage_verb", required=True, metavar="VERB")
    report = usage_verbs.add_parser("report", help="idle GPU cost per team and pod from the agent's metrics")
    report.add_argument("file", nargs="?", help="a Prometheus query_range response (JSON) or an agent record file")
    report.add_argument("--prometheus", metavar="URL", help="fetch the query_range from Prometheus at URL instead")
    report.add_argument("--start", help="with --prometheus: range start (unix seconds or RFC 3339)")
    report.add_argument("--end", help="with --prometheus: range end")
    report.add_argument("--step", help="with --prometheus: resolution in seconds (the sampling period)")
    report.add_argument("--cluster", help="cluster file: its pools price each GPU model (usd per node-hour / GPUs)")
    report.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="MODEL=USD",
        help="dollars per GPU-hour of a GPU model (repeatable; over the cluster's)",
    )
    report.add_argument(
        "--threshold-percent",
        type=float,
        default=DEFAULT_RULE.threshold_percent,
        help="utilisation under this is quiet (default 5)",
    )
    report.add_argument(
        "--window-s", type=float, default=DEFAULT_RULE.window_s, help="a quiet run this long is idle (default 1800)"
    )
    report.add_argument(
        "--period-s", type=float, help="sampling period (default: --step, else the input's most common step)"
    )
    report.add_argument("--max-gap-s", type=float, help="a silence longer than this is a gap (default 3 periods)")
    report.add_argument("--top", type=int, default=20, help="pods in the table, most idle dollars first (default 20)")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON")
    output.add_argument("--csv", action="store_true", help="print CSV: one row for all, each team and each pod")
    report.set_defaults(run=run_report)

    record = usage_verbs.add_parser("agent-record", help="write a trace's measured series as the agent's record file")
    record.add_argument("trace", help="trace file carrying measured utilisation (e.g. GenTD26's duty cycle)")
    record.add_argument("--format", help=f"trace format (detected when left out): {', '.join(FORMATS)}")
    record.add_argument("--out", required=True, help="record file to write (JSON Lines)")
    record.add_argument("--gpu-model", default="", help="GPU model of jobs that name none (e.g. A100-80GB)")
    record.add_argument("--epoch-s", type=float, default=0.0, help="unix time of the trace's time 0 (default 0)")
    record.set_defaults(run=run_agent_record)  # fmt: skip


def _series(args: argparse.Namespace) -> list[Series]:
    if args.prometheus:
        if args.file:
            raise InputError("give a file or --prometheus, not both", field="--prometheus")
        missing = [name for name in ("start", "end", "step") if not getattr(args, name)]
        if missing:
            raise InputError("--prometheus needs --start, --end and --step", field=f"--{missing[0]}")
        check_range(args.start, args.end, args.step)
        series = fetch(args.prometheus, args.start, args.end, args.step)
        if not series:
            raise InputError(f"no {UTILISATION} series from --start {args.start} to --end {args.end}: nothing to "
                             "report", source=args.prometheus)  # fmt: skip
        return series
    if not args.file:
        raise InputError("give the metrics: a file, or --prometheus URL --start --end --step", field="file")
    given = [name for name in ("start", "end", "step") if getattr(args, name) is not None]
    if given:  # a file is read whole: a range it would not apply must not look applied
        raise InputError("only with --prometheus: a file is read whole", field=f"--{given[0]}")
    series = read_file(args.file)
    if not series:  # all zeros would read as a cluster that held nothing
        empty = Path(args.file).stat().st_size == 0
        raise InputError("is empty: nothing to report" if empty else f"holds no {UTILISATION} series: nothing to "
                         "report", source=args.file)  # fmt: skip
    return series


def _period_s(args: argparse.Namespace, series: Sequence[Series]) -> float:
    """The sampling period: given, the query's step, or the input's most common step."""
    if args.period_s is not None:
        return float(args.period_s)
    if args.prometheus:
        return float(args.step)  # a number of seconds: `check_range` said so before the query
    steps: Counter[float] = Counter()
    for each in series:
        steps.update(b[0] - a[0] for a, b in zip(each.samples, each.samples[1:], strict=False))
    return min(steps.items(), key=lambda item: (-item[1], item[0]))[0] if steps else DEFAULT_RULE.period_s


def _rule(args: argparse.Namespace, period_s: float) -> IdleRule:
    max_gap_s = GAP_PERIODS * period_s if args.max_gap_s is None else args.max_gap_s
    try:
        return IdleRule(args.threshold_percent, args.window_s, period_s, max_gap_s)
    except ValueError as error:  # the message starts with the field it is about
        name = str(error).split()[0]
        field = (
            f"--{name.replace('_', '-')}" if name in ("threshold_percent", "window_s", "max_gap_s") else "--period-s"
        )
        raise InputError(str(error), field=field) from None


def _prices(args: argparse.Namespace) -> tuple[dict[str, Fraction], dict[str, str]]:
    """Prices per GPU model (`--price` over the cluster's) and the cluster's models left without one
    (its pools disagree, and no `--price` settles it), each with why."""
    catalog = default_catalog()
    prices, unpriced = cluster_prices(load_cluster(args.cluster).pools) if args.cluster else ({}, {})
    for text in args.price:
        key, price = parse_price(text, catalog)
        prices[key] = price
        unpriced.pop(key, None)
    if not prices and not unpriced:
        raise InputError("give prices: --cluster FILE or --price MODEL=USD_PER_GPU_HOUR", field="--price")
    return prices, unpriced


def run_report(args: argparse.Namespace) -> Output:
    if args.top < 0:
        raise InputError(f"must be at least 0, got {args.top}", field="--top")
    prices, unpriced = _prices(args)
    series = _series(args)
    report = usage(series, prices, _rule(args, _period_s(args, series)), unpriced=unpriced)
    if args.json:
        return 0, json.dumps(report.document(), indent=2, sort_keys=True)
    if args.csv:
        return 0, render_csv(report)
    return 0, render_table(report, args.top)


def _row(scope: str, name: str, team: str, totals: Totals) -> list[object]:
    document = totals.document()
    hours, usd = document["gpu_hours"], document["usd"]
    return [scope, name, team, totals.series, hours["allocated"], hours["measured"], hours["idle"],
            usd["allocated"], usd["idle"]]  # fmt: skip


class _Text:
    """What csv.writer writes into: the pieces of the text, in order."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def render_csv(report: Report) -> str:
    """One row for everything, then each team, then each pod (by name)."""
    out = _Text()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerow(_row("total", "", "", report.total))
    writer.writerows(_row("team", team, team, totals) for team, totals in sorted(report.by_team.items()))
    writer.writerows(_row("pod", pod, team, totals) for pod, (team, totals) in sorted(report.by_pod.items()))
    return "".join(out.parts).rstrip("\n")


def _line(name: str, totals: Totals) -> str:
    hours, usd = totals.document()["gpu_hours"], totals.document()["usd"]
    share = hours["idle"] / hours["allocated"] if hours["allocated"] else 0.0
    return (f"  {name:<40} {hours['allocated']:>12,.2f} {hours['idle']:>12,.2f} {share:>6.1%} "
            f"${usd['allocated']:>12,.2f} ${usd['idle']:>12,.2f}")  # fmt: skip


def render_table(report: Report, top: int) -> str:
    """Totals, each team, and the `top` pods with the most idle dollars."""
    rule = report.rule
    prices = ", ".join(f"{model} ${float(price):,.4f}" for model, price in sorted(report.prices.items()))
    header = f"  {'':<40} {'alloc GPU-h':>12} {'idle GPU-h':>12} {'idle':>6} {'alloc $':>13} {'idle $':>13}"
    lines = [
        f"allocated-but-idle: under {rule.threshold_percent:g} % for {rule.window_s:g} s (samples every "
        f"{rule.period_s:g} s, gaps over {rule.max_gap_s:g} s); prices per GPU-hour: {prices}",
        f"{report.total.series:,} pod series ({report.unallocated_series:,} series of unallocated devices"
        f"{f', {report.empty_series:,} empty series' if report.empty_series else ''} skipped)",
        header, _line("all", report.total), "teams:",
    ]  # fmt: skip
    lines += [_line(team, totals) for team, totals in sorted(report.by_team.items())]
    ranked = sorted(report.by_pod.items(), key=lambda item: (-item[1][1].idle_usd, item[0]))[:top]
    if ranked:
        lines.append(f"pods (top {len(ranked)} of {len(report.by_pod):,} by idle dollars):")
        lines += [_line(pod, totals) for pod, (_, totals) in ranked]
    return "\n".join(lines)


def run_agent_record(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    if out.resolve() == Path(args.trace).resolve():
        raise InputError("the output would overwrite the input", field="--out")
    if not math.isfinite(args.epoch_s) or args.epoch_s < 0:  # NaN would be written as NaN: not JSON
        raise InputError(f"must be a unix time in seconds of at least 0, got {args.epoch_s}", field="--epoch-s")
    check_writable(out, "--out")
    model = default_catalog().resolve(args.gpu_model).name if args.gpu_model else ""
    count = write_record(read_trace_jobs(args.trace, args.format), out, model, args.epoch_s)
    return 0, f"wrote {count:,} series to {out}"


__all__ = ["add_usage_verbs", "render_csv", "render_table", "run_agent_record", "run_report"]
