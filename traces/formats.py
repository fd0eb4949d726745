"""The trace formats fleetsched reads, by name, and detection of a file's format.

Detection looks at the file's name and first line, most specific first; `--format` overrides
it. An undetectable file is an error that lists the formats.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

from scheduler.catalog import Catalog
from scheduler.errors import InputError
from scheduler.model import Job
from traces.azure_llm import AzureLlmServices, AzureLlmServicesH100
from traces.base import ReadReport, TraceFormat, TraceRow, first_line, read_rows, replayed
from traces.canonical import CanonicalCsv, CanonicalJsonl
from traces.dlrm import DlrmInstances
from traces.gavel import GavelMsrTrace, GavelPhysicalTrace
from traces.gentd26 import GenTd26DutyCycle
from traces.helios import HeliosJobs
from traces.openb import OpenbPods
from traces.pai import PaiTasks
from traces.parquet import CanonicalParquet
from traces.philly import PhillyExtract, PhillyJobLog

# Most specific first: detection takes the first format that recognises the file.
_ORDER: tuple[TraceFormat, ...] = (
    OpenbPods(),
    DlrmInstances(),
    PaiTasks(),
    HeliosJobs(),
    PhillyExtract(),
    PhillyJobLog(),
    GavelMsrTrace(),
    GavelPhysicalTrace(),
    AzureLlmServices(),
    AzureLlmServicesH100(),
    GenTd26DutyCycle(),
    CanonicalParquet(),
    CanonicalCsv(),
    CanonicalJsonl(),
)
FORMATS: Mapping[str, TraceFormat] = {trace_format.name: trace_format for trace_format in _ORDER}


def detect(path: str | Path) -> TraceFormat:
    """The format of `path`, from its name and first line; InputError when none fits."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", source=str(path))
    head = first_line(path)
    for trace_format in _ORDER:
        if trace_format.detect(path, head):
            return trace_format
    raise InputError(f"cannot tell the trace format; give --format, one of {', '.join(FORMATS)}", source=str(path))


def trace_format(name: str | None, path: str | Path) -> TraceFormat:
    """The named format, or the detected one when `name` is None."""
    if name is None:
        return detect(path)
    try:
        return FORMATS[name]
    except KeyError:
        raise InputError(f"unknown format {name!r}; known: {', '.join(FORMATS)}", field="--format") from None


def read_trace(
    path: str | Path,
    name: str | None = None,
    *,
    skip_bad_rows: bool = False,
    report: ReadReport | None = None,
    catalog: Catalog | None = None,
) -> Iterator[TraceRow]:
    """Streams the rows of a trace in any known format (detected when `name` is None)."""
    return read_rows(path, trace_format(name, path), skip_bad_rows=skip_bad_rows, report=report, catalog=catalog)


def read_trace_jobs(path: str | Path, name: str | None = None, *, catalog: Catalog | None = None) -> Iterator[Job]:
    """The replayed jobs of a trace in any known format."""
    return replayed(read_trace(path, name, catalog=catalog))
