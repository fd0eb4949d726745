"""Run and comparison directories as pandas DataFrames: `load_run(DIR)` and `load_comparison(DIR)`.

A run directory (`fleetsched simulate --out`, or one of a comparison's `runs/*/`) holds
summary.json, jobs.csv, events.jsonl, timeline.csv and, when a solver reported, solver.csv
(`simulator.outputs`, `simulator.recording`); a comparison directory holds comparison.csv and
`runs/<profile>-seed<N>/`. Every file is checked as it is read: a directory that is not a run,
a missing file, a row with the wrong number of fields, a number that is not one, a JSON line
that does not parse, each raise `scheduler.errors.InputError` naming the file, the line and
the field.

    run = load_run("out/demo/runs/default-seed0")
    run.jobs.groupby("team").cost_usd.sum()          # what each team's jobs cost
    demo = load_comparison("out/demo")
    demo.summary.groupby("profile")["cost_usd.total"].mean()
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from scheduler.errors import InputError
from simulator.engine import SimResult
from simulator.fill_output import refuse_fill_output
from simulator.outputs import write_run
from traces.base import json_lines

PathLike = str | Path
#: The numeric columns of each CSV file (the others are text); empty cells are NaN.
JOB_NUMBERS = ("submit_s", "start_s", "end_s", "queue_s", "jct_s", "replicas", "preemptions", "interruptions",
               "lost_gpu_hours", "cost_usd")  # fmt: skip
TIMELINE_NUMBERS = ("t_s", "nodes", "provisioning", "gpus_busy", "usd_per_hour")
SOLVER_NUMBERS = ("t_s", "jobs", "objective", "bound", "gap", "cost_usd_per_hour")
COMPARISON_NUMBERS = ("seed", "jobs", "completed", "unfinished", "cost_usd", "idle_usd", "lost_work_usd",
                      "queue_mean_s", "queue_p95_s", "jct_mean_s", "jct_p95_s", "utilisation", "preemptions",
                      "job_interruptions", "lost_gpu_hours")  # fmt: skip
#: Columns that count things: nullable integers (an empty cell is <NA>).
INTEGERS = frozenset({"replicas", "preemptions", "interruptions", "nodes", "provisioning", "seed", "jobs", "completed",
                      "unfinished", "job_interruptions"})  # fmt: skip
RUN_FILES = ("summary.json", "jobs.csv", "events.jsonl", "timeline.csv")


@dataclass(frozen=True, slots=True)
class Run:
    """One run directory, read.

    `summary` is summary.json flattened into one row (nested keys joined by dots:
    `cost_usd.total`, `queue_s.p95`); `document` is summary.json as decoded. `jobs`,
    `timeline` and `solver` have the CSV files' columns (numbers as floats, empty cells NaN);
    `events` has one row per events.jsonl line: `t_s`, `event` and the union of the other
    keys (NaN where a line has none). `solver` is None when the run has no solver.csv.
    """

    path: Path
    document: Mapping[str, Any]
    summary: pd.DataFrame
    jobs: pd.DataFrame
    events: pd.DataFrame
    timeline: pd.DataFrame
    solver: pd.DataFrame | None

    @property
    def name(self) -> str:
        """The run directory's name (`default-seed0` in a comparison)."""
        return self.path.name

    def economics(self, *keys: str) -> pd.DataFrame:
        """A table of summary.json's economics section, by its keys: `economics("showback", "team")`
        (one row per team: jobs, completed, usd, usd_per_completed_job), `economics("idle_by_cause_usd")`
        (one row per cause, column `value`); InputError naming summary.json when the run has none."""
        return economics_table(self.document, keys, self.path / "summary.json")


@dataclass(frozen=True, slots=True)
class Comparison:
    """A comparison directory, read: comparison.csv and every run under runs/.

    `comparison` is comparison.csv (one row per profile and seed). `runs` maps each run
    directory's name to its `Run`. `summary`, `jobs`, `events` and `timeline` are the runs'
    frames stacked, each row carrying `run`, `profile` and `seed` columns first (`profile` is
    the run name without its `-seed<N>` suffix, as in comparison.csv).
    """

    path: Path
    comparison: pd.DataFrame
    runs: Mapping[str, Run]
    summary: pd.DataFrame
    jobs: pd.DataFrame
    events: pd.DataFrame
    timeline: pd.DataFrame

    def economics(self, *keys: str) -> pd.DataFrame:
        """`Run.economics` of every run, stacked, each row tagged with run, profile and seed and
        its key in column `key`: `comparison.economics("idle_by_cause_usd")`."""
        return _stacked(self.runs, lambda run: run.economics(*keys).rename_axis("key").reset_index())


def economics_table(document: Mapping[str, Any], keys: Sequence[str], source: Path) -> pd.DataFrame:
    """`document["economics"][keys...]` as a frame: a mapping of mappings one row per key, a
    mapping of numbers one row per key in column `value`."""
    node: Any = document
    for key in ("economics", *keys):
        if not isinstance(node, Mapping) or key not in node:
            raise InputError("no such table in the economics section", source=str(source),
                             field=".".join(("economics", *keys)))  # fmt: skip
        node = node[key]
    if not isinstance(node, Mapping):
        raise InputError("a figure, not a table", source=str(source), field=".".join(("economics", *keys)))
    if all(isinstance(value, Mapping) for value in node.values()):
        return pd.DataFrame.from_dict(dict(node), orient="index")
    return pd.DataFrame({"value": pd.Series(dict(node))})


def load_run(source: PathLike | SimResult) -> Run:
    """Reads the run directory `source`; InputError naming the file (line, field) on any mistake.

    `source` may also be a finished replay that kept its history (`fleetsched.simulate` without
    `out`): it is read through the very files a run directory holds, written to a temporary
    folder and removed, and its `path` is its run's name, `<profile>-seed<N>`."""
    if isinstance(source, SimResult):
        return _from_result(source)
    folder = _directory(source)
    refuse_fill_output(folder)  # complete without jobs.csv: not an incomplete run
    missing = [name for name in RUN_FILES if not (folder / name).is_file()]
    if "summary.json" in missing:
        raise InputError("no summary.json: not a fleetsched run directory", source=str(folder))
    if missing:
        raise InputError(f"no {missing[0]}: the run directory is incomplete", source=str(folder))
    document = read_summary(folder / "summary.json")
    solver_path = folder / "solver.csv"
    return Run(
        path=folder,
        document=document,
        summary=pd.json_normalize(document, sep="."),
        jobs=read_csv(folder / "jobs.csv", JOB_NUMBERS, ("id", "team", "project", "model", "kind", "outcome")),
        events=read_events(folder / "events.jsonl"),
        timeline=read_csv(folder / "timeline.csv", TIMELINE_NUMBERS, ("pool",)),
        solver=read_csv(solver_path, SOLVER_NUMBERS) if solver_path.is_file() else None,
    )


def _from_result(result: SimResult) -> Run:
    if result.world.memory is None:  # `simulate(..., out=DIR)` wrote its history and forgot it
        raise InputError("this replay wrote its run directory as it went (simulate with out=DIR) and kept no "
                         "history: read that directory with load_run(DIR)")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fleetsched-run-") as folder:
        write_run(result, Path(folder) / "run")
        run = load_run(Path(folder) / "run")
    info = run.document["run"]
    return replace(run, path=Path(f"{info['profile']}-seed{info['seed']}"))


def load_comparison(path: PathLike) -> Comparison:
    """Reads the comparison directory `path` (comparison.csv and runs/*); InputError on any mistake."""
    folder = _directory(path)
    refuse_fill_output(folder)
    table = folder / "comparison.csv"
    if not table.is_file():
        raise InputError("no comparison.csv: not a fleetsched comparison directory", source=str(folder))
    comparison = read_csv(table, COMPARISON_NUMBERS, ("profile",))
    runs_folder = folder / "runs"
    if not runs_folder.is_dir():
        raise InputError("no runs/ folder: the comparison's run directories are missing", source=str(folder))
    runs = {child.name: load_run(child) for child in sorted(runs_folder.iterdir()) if child.is_dir()}
    expected = [f"{profile}-seed{int(seed)}" for profile, seed in zip(comparison["profile"], comparison["seed"],
                                                                     strict=True)]  # fmt: skip
    absent = [name for name in expected if name not in runs]
    if absent:
        raise InputError(f"comparison.csv names run {absent[0]!r}, which runs/ does not hold", source=str(table))
    ordered = {name: runs[name] for name in expected}
    return Comparison(
        path=folder,
        comparison=comparison,
        runs=ordered,
        summary=_stacked(ordered, lambda run: run.summary),
        jobs=_stacked(ordered, lambda run: run.jobs),
        events=_stacked(ordered, lambda run: run.events),
        timeline=_stacked(ordered, lambda run: run.timeline),
    )


def _stacked(runs: Mapping[str, Run], frame_of: Any) -> pd.DataFrame:
    """The runs' frames one under the other, each row tagged with its run, profile and seed."""
    frames = []
    for name, run in runs.items():
        frame = frame_of(run).copy()
        profile, _, seed = name.rpartition("-seed")
        frame.insert(0, "seed", int(seed))
        frame.insert(0, "profile", profile)
        frame.insert(0, "run", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "profile", "seed"])


def _directory(path: PathLike) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError("not a directory" if folder.exists() else "no such directory", source=str(path))
    return folder


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text: not a file written by fleetsched", source=str(path)) from None
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror}", source=str(path)) from None


def read_summary(path: Path) -> dict[str, Any]:
    """A summary.json, decoded; InputError unless it is a JSON object with a schema version and a run."""
    try:
        document = json.loads(_text(path))
    except json.JSONDecodeError as error:
        raise InputError(f"not valid JSON: {error.msg}", source=str(path), line=error.lineno) from None
    if not isinstance(document, dict):
        raise InputError("must be a JSON object", source=str(path))
    for key in ("schema_version", "run", "jobs", "cost_usd"):
        if key not in document:
            raise InputError("missing: not a summary written by fleetsched", source=str(path), field=key)
    return document


def read_csv(path: Path, numbers: Sequence[str], required: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV file written by fleetsched: every row as wide as the header, `numbers` (and `required`)
    among its columns, `numbers` parsed as floats."""
    rows = csv.reader(_text(path).splitlines())
    header = next(rows, None)
    if not header:
        raise InputError("empty file: no header row", source=str(path))
    absent = [name for name in (*required, *numbers) if name not in header]
    if absent:
        raise InputError("missing column", source=str(path), line=1, field=absent[0])
    numeric = [index for index, name in enumerate(header) if name in numbers]
    columns: list[list[Any]] = [[] for _ in header]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise InputError(f"{len(row)} fields where the header has {len(header)}", source=str(path), line=line)
        for index, value in enumerate(row):
            columns[index].append(value)
        for index in numeric:
            columns[index][-1] = _number(row[index], path, line, header[index])
    frame = pd.DataFrame({name: pd.Series(values, dtype="float64" if index in numeric else "object")
                          for index, (name, values) in enumerate(zip(header, columns, strict=True))})  # fmt: skip
    for name in INTEGERS.intersection(header).intersection(numbers):
        if (frame[name].dropna() % 1 == 0).all():
            frame[name] = frame[name].astype("Int64")
    return frame


def _number(text: str, path: Path, line: int, field: str) -> float:
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise InputError(f"not a number: {text!r}", source=str(path), line=line, field=field) from None


def read_events(path: Path) -> pd.DataFrame:
    """events.jsonl as a frame: one row per line, its keys as columns (t_s and event first)."""
    records = list(_event_records(path))
    keys = dict.fromkeys(["t_s", "event"])
    for record in records:
        keys.update(dict.fromkeys(record))
    frame = pd.DataFrame.from_records(records, columns=list(keys))
    frame["t_s"] = frame["t_s"].astype("float64")
    return frame


def _event_records(path: Path) -> Iterator[dict[str, Any]]:
    for line, record in json_lines(path):
        if not isinstance(record, dict):
            raise InputError("each line must be a JSON object", source=str(path), line=line)
        if not isinstance(record.get("t_s"), int | float) or isinstance(record.get("t_s"), bool):
            raise InputError("missing or not a number", source=str(path), line=line, field="t_s")
        if not isinstance(record.get("event"), str):
            raise InputError("missing or not a string", source=str(path), line=line, field="event")
        yield record


__all__ = ["Comparison", "Run", "economics_table", "load_comparison", "load_run", "read_csv", "read_events",
           "read_summary"]
