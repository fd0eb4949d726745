"""The `fleetsched report` verb: `report RUN|COMPARISON|SWEEP --out report.html`. Returns (exit code, text).

A directory that is not a run, a comparison or a sweep (results.parquet), a corrupt file in it, or an `--out` that
is not an .html file stop with one line naming the file (exit 2) and write nothing; the report
is written atomically (`fleetsched.report.write_report`), its folder made when missing
(`fleetsched.outfile`) and removed again when the report fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetsched.outfile import parent_folders
from scheduler.errors import InputError

Output = tuple[int, str]
SUFFIXES = (".html", ".htm")


def add_report_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `report` under the command's verbs."""
    report = verbs.add_parser("report", help="one self-contained HTML report of a run, a comparison or a sweep")
    report.add_argument("source", metavar="RUN|COMPARISON|SWEEP",
                        help="a run directory (simulate --out), a comparison (compare --out) or a sweep (sweep --out)")
    report.add_argument("--out", required=True, help="the HTML file to write (replaced if it exists)")
    report.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> Output:
    out = Path(args.out)
    if out.suffix.lower() not in SUFFIXES:  # never replace a data file given by mistake
        raise InputError("the report is an .html file; name one", source=args.out, field="--out")
    from fleetsched.report import write_report  # pandas and scipy: loaded only for this verb

    with parent_folders(out):  # made when missing, as simulate and compare make theirs; removed if the report fails
        written = write_report(args.source, out)
    return 0, f"wrote {written}"


__all__ = ["add_report_verbs", "run_report"]
