"""What every trace reader shares: rows, drop reasons, bad-row handling and the read report.

A reader turns one source row into a `TraceRow`: a canonical `Job`, or the reason the row is
not replayed (a CPU-only task, a pod that never ran), so that nothing is lost silently.
`read_rows` drives a `TraceFormat`: it streams the file (memory does not grow with its
length), stops at the first bad row with one `InputError` naming file, line and field, or,
with `skip_bad_rows`, counts and reports the bad rows instead.
"""

from __future__ import annotations

import csv
import functools
import json
import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

from scheduler.catalog import Catalog, default_catalog
from scheduler.errors import InputError, not_utf8
from scheduler.model import Job

CPU_ONLY = "CPU-only (no GPU request)"
#: The largest number a trace field may hold: past any timestamp (even epoch milliseconds) and
#: any duration in seconds; a larger finite number is a typo, and near 10^305 it overflows the
#: simulator's integer-millisecond clock.
MAX_NUMBER = 1e15
#: The latest submit time and the longest duration a replay takes: a century of simulated time
#: (ten million jobs at 100 an hour span 11 years). Past it a value is a typo or a timestamp in
#: milliseconds, and a replay of it would run (and report, day by day) for ages.
MAX_REPLAY_S = 100 * 365 * 86_400.0


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One source row: the job it becomes, and why it is not replayed ("" when it is).

    A dropped row may still carry its job, so that inspection counts what it asked for.
    """

    line: int
    job: Job | None
    dropped: str = ""


@dataclass(slots=True)
class ReadReport:
    """What a read saw: rows, jobs, drops by reason, and bad rows skipped (line, problem)."""

    source: str
    format: str = ""
    rows: int = 0
    jobs: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Fields:
    """One raw row's values by column name, with checked conversions that name the field."""

    values: Mapping[str, Any]
    source: str
    line: int

    def fail(self, name: str, message: str) -> InputError:
        return InputError(message, source=self.source, line=self.line, field=name)

    def text(self, name: str, default: str | None = None) -> str:
        value = self.values.get(name)
        if value is None or value == "":
            if default is None:
                raise self.fail(name, "required")
            return default
        return str(value).strip()

    def number(self, name: str, default: float | None = None, *, least: float = 0.0) -> float:
        """A finite number >= `least`; empty values take `default` (required when None)."""
        value = self.values.get(name)
        if value is None or value == "":
            if default is None:
                raise self.fail(name, "required")
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.fail(name, f"not a number: {value!r}") from None
        if not math.isfinite(number) or number < least:
            raise self.fail(name, f"must be a finite number >= {least:g}, got {value!r}")
        if number > MAX_NUMBER:
            raise self.fail(name, f"must be at most {MAX_NUMBER:g}, got {value!r}")
        return number

    def optional(self, name: str) -> float | None:
        """A finite number >= 0, or None when the value is empty or NaN (as traces write 'unknown')."""
        value = self.values.get(name)
        if value is None or value == "" or str(value).strip().lower() in ("nan", "none", "null"):
            return None
        return self.number(name)

    def integer(self, name: str, default: int | None = None, *, least: int = 0) -> int:
        number = self.number(name, None if default is None else float(default), least=least)
        if number != int(number):
            raise self.fail(name, f"must be a whole number, got {self.values.get(name)!r}")
        return int(number)


class TraceFormat(ABC):
    """A trace layout: how to recognise it, stream its raw rows and turn each into a TraceRow.

    `prepare` may take a first, constant-memory pass over the file (to find the time origin
    of traces that give wall-clock times, or the end of the trace window); what it returns is
    handed to every `row` call, and to `finish` once the last row is read.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]] = (".csv",)

    @abstractmethod
    def detect(self, path: Path, first_line: str) -> bool:
        """Whether `path`, whose first line is `first_line`, is in this format."""

    @abstractmethod
    def raw_rows(self, path: Path) -> Iterator[Fields]:
        """The file's rows, unconverted; structural problems (a missing column) raise InputError."""

    def prepare(self, path: Path) -> Any:
        return None

    @abstractmethod
    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        """One row as a TraceRow; a bad value raises InputError naming the field."""

    def finish(self, path: Path, context: Any) -> None:  # noqa: B027 - most formats check nothing at the end
        """After the last row: a check over the whole file (InputError naming the line)."""


@contextmanager
def open_text(path: Path) -> Iterator[TextIO]:
    """The file opened for reading UTF-8 text (past a byte-order mark, if it has one), for a `with`
    block; InputError naming it when it cannot be opened, or naming its first byte that is not
    UTF-8 when the block meets one.

    The decoding error is caught around the whole block, not per line, so reading costs
    nothing more; the file is read again, in binary, only to find the bad byte.
    """
    try:  # utf-8-sig: a byte-order mark, as some Windows editors save, is read past, not taken for text
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as error:
        raise InputError(error.strerror or str(error), source=str(path)) from None
    with handle:
        try:
            yield handle
        except UnicodeDecodeError:
            raise _not_utf8(path) from None


def read_json(path: Path) -> Any:
    """The JSON document in the file `path`; InputError naming the file (and line) when it
    cannot be read or is not JSON."""
    with open_text(path) as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as error:
            raise InputError(f"not valid JSON: {error.msg}", source=str(path), line=error.lineno) from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Each non-blank line of the JSON Lines file `path` as (line number, value), streamed;
    InputError naming the file and line when one is not JSON, or the first byte not UTF-8."""
    with open_text(path) as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                raise InputError(f"not valid JSON: {error.msg}", source=str(path), line=line) from None
            if isinstance(value, dict) and text.count('":') > len(value):  # maybe a key twice: look closer
                json.loads(text, object_pairs_hook=functools.partial(_once, source=str(path), line=line))
            yield line, value


def _once(pairs: list[tuple[str, Any]], source: str, line: int) -> dict[str, Any]:
    """A JSON object's pairs as a dict; InputError on a key given twice (json keeps the last silently)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InputError("given twice in one record", source=source, line=line, field=key)
        seen[key] = value
    return seen


def _not_utf8(path: Path) -> InputError:
    with path.open("rb") as raw:
        return not_utf8(str(path), iter(lambda: raw.read(1 << 20), b""))


def csv_rows(path: Path, required: Sequence[str], header: Sequence[str] | None = None) -> Iterator[Fields]:
    """Streams a CSV file's rows as Fields; `header` for files without a header row.

    A missing required column stops the read at line 1, naming the column.
    """
    with open_text(path) as handle:
        reader = csv.reader(handle)
        names = list(header) if header is not None else next(reader, [])
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:  # a row would keep only the last column of the name
            raise InputError("column named twice in the header", source=str(path), line=1, field=twice[0])
        for column in required:
            if column not in names:
                raise InputError("missing column", source=str(path), line=1, field=column)
        width = len(names)
        source = str(path)
        for values in reader:
            if not values:
                continue
            if len(values) != width:
                raise InputError(f"{len(values)} values for {width} columns", source=source, line=reader.line_num)
            yield Fields(dict(zip(names, values, strict=True)), source, reader.line_num)


def csv_column(path: Path, name: str) -> Iterator[str]:
    """The values of one column of a CSV file with a header row (a cheap first pass)."""
    with open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if name not in header:
            return
        index = header.index(name)
        for values in reader:
            if len(values) > index:
                yield values[index]


def first_line(path: Path) -> str:
    """The file's first line (empty for a binary or unreadable file)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline().strip()
    except OSError:
        return ""


def read_rows(
    path: str | Path,
    trace_format: TraceFormat,
    *,
    skip_bad_rows: bool = False,
    report: ReadReport | None = None,
    catalog: Catalog | None = None,
) -> Iterator[TraceRow]:
    """Streams the TraceRows of `path`, stopping at (or, with skip_bad_rows, counting) bad rows."""
    path = Path(path)
    catalog = catalog or default_catalog()
    report = report if report is not None else ReadReport(str(path))
    report.format = trace_format.name
    context = trace_format.prepare(path)
    for fields in trace_format.raw_rows(path):
        report.rows += 1
        try:
            row = trace_format.row(fields, context, catalog)
        except InputError as error:
            if not skip_bad_rows:
                raise
            report.skipped.append((fields.line, f"{error.field}: {error.problem}" if error.field else error.problem))
            continue
        if row.dropped:
            report.dropped[row.dropped] += 1
        else:
            report.jobs += 1
        yield row
    trace_format.finish(path, context)


def replayed(rows: Iterator[TraceRow]) -> Iterator[Job]:
    """The jobs of the rows that are replayed."""
    for row in rows:
        if row.job is not None and not row.dropped:
            yield row.job
