"""The `fleetsched budget` verbs: `budget status --run DIR`. Each returns (exit code, text).

`budget status` reads the `governance` section of a run's summary.json (written by
`fleetsched simulate --governance`) and prints it as tables (simulator.budget_status).
A directory that is not a run, a summary.json that is missing, not JSON or malformed, and a
run simulated without guardrails each stop with one line naming the file (exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from scheduler.errors import InputError
from simulator.budget_status import GovernanceReport, json_type, read_section, render_report

Output = tuple[int, str]


def add_budget_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `budget status` under the command's verbs."""
    budget = verbs.add_parser("budget", help="budgets and guardrails of a simulated run")
    budget_verbs = budget.add_subparsers(dest="budget_verb", required=True, metavar="VERB")
    status = budget_verbs.add_parser(
        "status", help="spend against each budget per period, held jobs, approvals and fair share of a run")
    status.add_argument("--run", dest="run_dir", metavar="DIR", required=True,
                        help="run directory written by `fleetsched simulate --governance`")
    status.set_defaults(run=run_budget_status)


def read_summary(run: str | Path) -> dict[str, Any]:
    """The decoded summary.json of run directory `run`; InputError if there is none or it is not JSON."""
    folder = Path(run)
    if not folder.is_dir():
        raise InputError("not a directory" if folder.exists() else "no such directory", source=str(run), field="--run")
    path = folder / "summary.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("no summary.json: not a fleetsched run directory", source=str(folder)) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text: not a summary written by fleetsched", source=str(path)) from None
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", source=str(path)) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"not valid JSON: {error.msg}", source=str(path), line=error.lineno) from None
    if not isinstance(document, dict):
        raise InputError(f"must be a JSON object, got {json_type(document)}", source=str(path))
    return document


def budget_report(run: str | Path) -> GovernanceReport:
    """The governance report of run directory `run`; InputError if it has none or it is malformed."""
    document = read_summary(run)
    source = str(Path(run) / "summary.json")
    if document.get("governance") is None:
        raise InputError("the run has no governance section: it was simulated without --governance", source=source)
    return read_section(document["governance"], source)


def run_budget_status(args: argparse.Namespace) -> Output:
    return 0, render_report(budget_report(args.run_dir))
