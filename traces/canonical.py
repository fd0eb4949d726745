"""The canonical job record (schema version 1) and its JSON-lines and CSV readers.

One record per job. Every reader of a public trace produces these records, and
`to_job` is the only bridge from a record to `scheduler.model.Job`.

| field | type | default | meaning |
|---|---|---|---|
| id | text | required | unique job id |
| submit_s | number | 0 | submit time, seconds from the trace start |
| duration_s | number | required | run time on the reference GPU, seconds |
| gpus | integer | 1 | whole GPUs per replica; MIG instances per replica with mig_profile |
| gpu_milli | integer 1..999 | (none) | a share of one GPU's compute, thousandths |
| gpu_memory_gb | number | 0 | GPU memory of a share |
| mig_profile | text | (none) | MIG profile, e.g. 3g.40gb |
| replicas | integer | 1 | gang size: all replicas run or none |
| gpu_models | list (CSV: A\\|B) | any | acceptable GPU models |
| priority | integer | 0 | higher is more important |
| preemptible | boolean | false | may be evicted and may run on spot |
| checkpoint_interval_s | number | 0 | seconds between checkpoints; 0: never |
| checkpoint_overhead_s | number | 0 | seconds a checkpoint takes |
| restore_s | number | 0 | seconds to restore from a checkpoint |
| kind | batch, service | batch | services run until their end |
| team, project, model, experiment | text | "" | cost attribution labels |
| speedups | map (CSV: A:1.0\\|B:0.4) | none | run speed per GPU model relative to the reference GPU |
| status | completed, failed, killed | completed | what the trace says became of the job |
| service | text | (none) | the inference service a replica serves (`traces.azure_llm`) |
| requests, input_tokens, output_tokens | integer | 0 | what the replica serves; only with service |
| gpu_util_mean_percent | number 0..100 | (none) | measured mean GPU utilisation over the job's run |
| gpu_util_percent | list of 0..100 or null (CSV: 0\\|3.5\\|\\|80) | (none) | measured GPU utilisation per period |
| gpu_util_period_s | number > 0 | 60 | seconds each gpu_util_percent sample covers |

The measured fields (`scheduler.observed.MeasuredUtilisation`) are what a telemetry agent saw:
sample i covers `[i * period, (i + 1) * period)` seconds from the job's start; a replay
prices the allocated-but-idle time they show (`simulator.measured`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from scheduler.catalog import Catalog, default_catalog
from scheduler.errors import InputError
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, JobKind, Labels, RequestKind
from scheduler.observed import MeasuredUtilisation, Served
from traces import base
from traces.base import MAX_NUMBER, Fields, TraceFormat, TraceRow, csv_rows, json_lines, read_rows, replayed
from traces.unique import UniqueIds

SCHEMA_VERSION = 1
STATUSES = ("completed", "failed", "killed")
FIELDS = (
    "id", "submit_s", "duration_s", "gpus", "gpu_milli", "gpu_memory_gb", "mig_profile", "replicas",
    "gpu_models", "priority", "preemptible", "checkpoint_interval_s", "checkpoint_overhead_s", "restore_s",
    "kind", "team", "project", "model", "experiment", "status", "speedups",
    "service", "requests", "input_tokens", "output_tokens",
    "gpu_util_mean_percent", "gpu_util_percent", "gpu_util_period_s",
)
REQUIRED = ("id", "duration_s")
_TEXT = ("team", "project", "model", "experiment")


class _Row:
    """One record being read, to name the file, line and field in every error."""

    def __init__(self, values: Mapping[str, Any], source: str, line: int) -> None:
        self.values = {key: value for key, value in values.items() if value not in (None, "")}
        self.source = source
        self.line = line

    def fail(self, field: str, message: str) -> InputError:
        return InputError(message, source=self.source, line=self.line, field=field)

    def number(self, field: str, default: float | None = None, most: float = MAX_NUMBER) -> float:
        value = self.values.get(field, default)
        if value is None:
            raise self.fail(field, "required")
        if isinstance(value, bool):  # JSON's true is not 1 here: a typo, not a count
            raise self.fail(field, f"must be a number, not {str(value).lower()}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.fail(field, f"not a number: {value!r}") from None
        if not math.isfinite(number) or number < 0:
            raise self.fail(field, f"must be a finite number >= 0, got {value!r}")
        if number > most:
            raise self.fail(field, f"must be at most {most:g}, got {value!r}")
        return number

    def integer(self, field: str, default: int, least: int = 0) -> int:
        number = self.number(field, default)
        if number != int(number) or number < least:
            raise self.fail(field, f"must be a whole number >= {least}, got {self.values.get(field)!r}")
        return int(number)

    def boolean(self, field: str) -> bool:
        value = self.values.get(field, False)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise self.fail(field, f"must be true or false, got {value!r}")

    def choice(self, field: str, choices: tuple[str, ...], default: str) -> str:
        value = str(self.values.get(field, default))
        if value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}, got {value!r}")
        return value


def to_job(values: Mapping[str, Any], *, source: str = "", line: int = 0, catalog: Catalog | None = None) -> Job:
    """A Job from one canonical record; InputError naming source, line and field if it is wrong."""
    row = _Row(values, source, line)
    catalog = catalog or default_catalog()
    for key in row.values:
        if key not in FIELDS and key != "schema_version":
            raise row.fail(key, f"unknown field; the canonical record has {', '.join(FIELDS)}")
    if row.values.get("schema_version", SCHEMA_VERSION) not in (SCHEMA_VERSION, str(SCHEMA_VERSION)):
        raise row.fail("schema_version", f"this reader knows schema version {SCHEMA_VERSION}")
    job_id = str(row.values.get("id", "")).strip()
    if not job_id:
        raise row.fail("id", "required")
    return Job(
        id=job_id,
        request=_request(row, catalog),
        submit_s=row.number("submit_s", 0.0, base.MAX_REPLAY_S),  # seconds from the trace's start, not a timestamp
        duration_s=row.number("duration_s", None, base.MAX_REPLAY_S),
        replicas=row.integer("replicas", 1, least=1),
        gpu_models=_models(row, catalog),
        priority=_priority(row),
        preemptible=row.boolean("preemptible"),
        checkpoint_interval_s=row.number("checkpoint_interval_s", 0.0),
        checkpoint_overhead_s=row.number("checkpoint_overhead_s", 0.0),
        restore_s=row.number("restore_s", 0.0),
        kind=JobKind(row.choice("kind", tuple(JobKind), JobKind.BATCH)),
        labels=Labels(**{field: str(row.values.get(field, "")) for field in _TEXT}),
        status=row.choice("status", STATUSES, "completed"),
        speedups=_speedups(row, catalog),
        served=_served(row),
        measured=_measured(row),
    )


def _served(row: _Row) -> Served | None:
    """What a service replica serves, when the record says (`service` names it)."""
    counts = ("requests", "input_tokens", "output_tokens")
    service = str(row.values.get("service", "")).strip()
    if not service:
        if any(name in row.values for name in counts):
            raise row.fail("service", "required with requests, input_tokens and output_tokens")
        return None
    requests, input_tokens, output_tokens = (row.integer(name, 0) for name in counts)
    return Served(service=service, requests=requests, input_tokens=input_tokens, output_tokens=output_tokens)


def _percent(row: _Row, field: str, value: Any) -> float:
    """One utilisation value: a finite number from 0 to 100."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise row.fail(field, f"not a number: {value!r}") from None
    if isinstance(value, bool) or not 0 <= number <= 100:
        raise row.fail(field, f"a utilisation is a percentage from 0 to 100, got {value!r}")
    return number


def _measured(row: _Row) -> MeasuredUtilisation | None:
    """The measured utilisation fields, or None when the record has none."""
    mean = row.values.get("gpu_util_mean_percent")
    series = row.values.get("gpu_util_percent", [])
    if isinstance(series, str):
        series = [part.strip() or None for part in series.split("|")]
    if not isinstance(series, list):
        raise row.fail("gpu_util_percent", f"must be a list of percentages (null for a missing one), got {series!r}")
    samples = tuple(None if value is None else _percent(row, "gpu_util_percent", value) for value in series)
    if "gpu_util_period_s" in row.values and not samples:
        raise row.fail("gpu_util_period_s", "applies to a gpu_util_percent series only")
    period_s = row.number("gpu_util_period_s", 60.0)
    if period_s <= 0:
        raise row.fail("gpu_util_period_s", "must be more than 0")
    if mean is None and not samples:
        return None
    mean_percent = None if mean is None else _percent(row, "gpu_util_mean_percent", mean)
    return MeasuredUtilisation(mean_percent=mean_percent, samples_percent=samples, period_s=period_s)


def _speedups(row: _Row, catalog: Catalog) -> tuple[tuple[str, float], ...]:
    value = row.values.get("speedups", {})
    if isinstance(value, str):
        pairs = [part.rpartition(":") for part in value.split("|") if part.strip()]
        value = {name.strip(): factor for name, _, factor in pairs}
    if not isinstance(value, dict):
        raise row.fail("speedups", f"must map GPU models to speed factors, got {value!r}")
    found: dict[str, float] = {}
    for name, factor in value.items():
        key = catalog.key_of(str(name))
        if key is None:
            raise row.fail("speedups", f"unknown GPU model {name!r}")
        try:
            number = float(factor)
        except (TypeError, ValueError):
            raise row.fail("speedups", f"speed factor for {name} is not a number: {factor!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise row.fail("speedups", f"speed factor for {name} must be > 0, got {factor!r}")
        found[key] = number
    return tuple(sorted(found.items()))


def _priority(row: _Row) -> int:
    value = row.values.get("priority", 0)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise row.fail("priority", f"not a number: {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or number != int(number):
        raise row.fail("priority", f"must be a whole number, got {value!r}")
    return int(number)


_MIG_PROFILES: dict[int, tuple[Catalog, frozenset[str]]] = {}


def _mig_profiles(catalog: Catalog) -> frozenset[str]:
    """Every MIG profile some GPU of `catalog` has (worked out once per catalog: MIG rows ask)."""
    known = _MIG_PROFILES.get(id(catalog))
    if known is None or known[0] is not catalog:
        names = frozenset(name for model in catalog.models.values() if model.mig for name in model.mig.profiles)
        known = _MIG_PROFILES[id(catalog)] = (catalog, names)
    return known[1]


def _request(row: _Row, catalog: Catalog) -> GpuRequest:
    gpus = row.integer("gpus", 1)
    profile = str(row.values.get("mig_profile", "")).strip()
    milli = row.integer("gpu_milli", FULL_GPU_MILLI, least=1)
    memory_mib = round(row.number("gpu_memory_gb", 0.0) * 1024)
    if profile:
        if "gpu_milli" in row.values or memory_mib:
            raise row.fail("mig_profile", "a MIG request takes no gpu_milli or gpu_memory_gb")
        if profile not in _mig_profiles(catalog):
            # A profile some GPU has but no pool offers is the cluster's matter (the survey
            # before a replay says so); one no GPU has is a typo.
            known = ", ".join(sorted(_mig_profiles(catalog)))
            raise row.fail("mig_profile", f"no GPU in the catalog has MIG profile {profile!r}; known: {known}")
        if gpus < 1:
            raise row.fail("gpus", "a MIG request needs at least one instance")
        return GpuRequest(kind=RequestKind.MIG, gpus=gpus, mig_profile=profile)
    if milli > FULL_GPU_MILLI:
        raise row.fail("gpu_milli", f"a share is at most {FULL_GPU_MILLI} milli; use gpus for more")
    if milli < FULL_GPU_MILLI:
        if gpus > 1:
            raise row.fail("gpus", f"a share (gpu_milli < {FULL_GPU_MILLI}) is part of one GPU; got gpus = {gpus}")
        return GpuRequest(kind=RequestKind.SHARE, gpus=1, milli=milli, memory_mib=memory_mib)
    if memory_mib:
        raise row.fail("gpu_memory_gb", f"applies to shares only (gpu_milli < {FULL_GPU_MILLI})")
    if gpus < 1:
        raise row.fail("gpus", "the job asks for no GPU (CPU-only jobs are not scheduled here)")
    return GpuRequest(kind=RequestKind.WHOLE, gpus=gpus)


def _models(row: _Row, catalog: Catalog) -> frozenset[str]:
    value = row.values.get("gpu_models", [])
    names = value.split("|") if isinstance(value, str) else value
    if not isinstance(names, list):
        raise row.fail("gpu_models", f"must be a list of GPU models, got {value!r}")
    keys = set()
    for name in (str(name).strip() for name in names):
        if not name:
            continue
        key = catalog.key_of(name)
        if key is None:
            raise row.fail("gpu_models", f"unknown GPU model {name!r}; known: {', '.join(sorted(catalog.models))}")
        keys.add(key)
    return frozenset(keys)


def to_record(job: Job) -> dict[str, Any]:
    """The canonical record of `job` (the inverse of to_job): defaults left out, keys in schema order."""
    request = job.request
    record: dict[str, Any] = {"id": job.id, "submit_s": job.submit_s, "duration_s": job.duration_s}
    if request.kind is RequestKind.MIG:
        record.update(gpus=request.gpus, mig_profile=request.mig_profile)
    elif request.kind is RequestKind.SHARE:
        record.update(gpu_milli=request.milli)
        if request.memory_mib:
            record["gpu_memory_gb"] = request.memory_mib / 1024
    elif request.gpus != 1:
        record["gpus"] = request.gpus
    optional = {
        "replicas": (job.replicas, 1),
        "gpu_models": (sorted(job.gpu_models), []),
        "priority": (job.priority, 0),
        "preemptible": (job.preemptible, False),
        "checkpoint_interval_s": (job.checkpoint_interval_s, 0.0),
        "checkpoint_overhead_s": (job.checkpoint_overhead_s, 0.0),
        "restore_s": (job.restore_s, 0.0),
        "kind": (str(job.kind), "batch"),
        "team": (job.labels.team, ""),
        "project": (job.labels.project, ""),
        "model": (job.labels.model, ""),
        "experiment": (job.labels.experiment, ""),
        "status": (job.status, "completed"),
        "speedups": (dict(job.speedups), {}),
    }
    record.update({key: value for key, (value, default) in optional.items() if value != default})
    if job.served is not None:
        served = job.served
        record.update(service=served.service, requests=served.requests, input_tokens=served.input_tokens,
                      output_tokens=served.output_tokens)  # fmt: skip
    if job.measured is not None:
        record.update(_measured_record(job.measured))
    return record


def _measured_record(measured: MeasuredUtilisation) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if measured.mean_percent is not None:
        record["gpu_util_mean_percent"] = measured.mean_percent
    if measured.samples_percent:
        record["gpu_util_percent"] = list(measured.samples_percent)
        if measured.period_s != 60.0:
            record["gpu_util_period_s"] = measured.period_s
    return record


class CanonicalJsonl(TraceFormat):
    """The canonical record as JSON lines."""

    name = "jsonl"
    description = "canonical job records, one JSON object per line (schema version 1)"
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".ndjson")

    def detect(self, path: Path, first_line: str) -> bool:
        return path.suffix in self.suffixes or first_line.startswith("{")

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        for line, values in json_lines(path):
            if not isinstance(values, dict):
                raise InputError("a record must be a JSON object", source=str(path), line=line)
            yield Fields(values, str(path), line)

    def prepare(self, path: Path) -> UniqueIds:
        return UniqueIds()  # canonical ids are the user's, so duplicates are checked (at the end)

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        job = to_job(fields.values, source=fields.source, line=fields.line, catalog=catalog)
        context.add(job.id, fields.line)
        return TraceRow(fields.line, job)

    def finish(self, path: Path, context: Any) -> None:
        """A repeated id, found once the file is read (in constant memory), named at its line."""
        found = context.first_duplicate()
        if found is None:
            return
        first, repeat = found
        for fields in self.raw_rows(path):
            if fields.line == repeat:
                raise fields.fail("id", f"duplicate job id {fields.values.get('id')!r} (first at line {first})")


class CanonicalCsv(CanonicalJsonl):
    """The canonical record as CSV with a header row (gpu_models as A|B)."""

    name = "csv"
    description = "canonical job records as CSV with a header row"
    suffixes = (".csv",)

    def detect(self, path: Path, first_line: str) -> bool:
        return path.suffix == ".csv" and "duration_s" in first_line.split(",") and "id" in first_line.split(",")

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        return csv_rows(path, REQUIRED)


def read_jobs(path: str | Path, catalog: Catalog | None = None) -> Iterator[Job]:
    """Streams Jobs from a canonical `.jsonl` or `.csv` file; duplicate ids are an error."""
    trace_format = CanonicalCsv() if str(path).endswith(".csv") else CanonicalJsonl()
    return replayed(read_rows(path, trace_format, catalog=catalog))


def write_jsonl(jobs: Iterable[Job], out: str | Path) -> int:
    """Writes canonical JSON lines to `out` atomically (a temporary name, renamed when complete).

    Returns the number of jobs written. On any error the temporary file is removed and `out`
    is left as it was.
    """
    return write_json_lines((to_record(job) for job in jobs), out)


def write_json_lines(records: Iterable[Mapping[str, Any]], out: str | Path, *, compact: bool = False) -> int:
    """Writes one JSON document a line to `out` atomically (`write_jsonl`); the lines written.
    `compact` drops the spaces after separators."""
    target = Path(out)
    temporary = target.with_name(f".{target.name}.partial")
    separators = (",", ":") if compact else None
    count = 0
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, sort_keys=False, separators=separators) + "\n")
                count += 1
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count
