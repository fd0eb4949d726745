"""Gavel (OSDI'20, stanford-futuredata/gavel) job traces and throughput tables as canonical jobs.

Two tab-separated, header-less layouts, both named `*.trace`:
- msr (`traces/msr/seed=N/<vc>.trace`, Philly arrivals and sizes per virtual cluster), 7 fields:
  `job_type, command, num_steps_arg, needs_data_dir, total_steps, arrival_time, scale_factor`;
- physical (`traces/physical_cluster/*.trace`, what Gavel's `utils.parse_trace` reads), 10 fields:
  `job_type, command, working_directory, num_steps_arg, needs_data_dir, total_steps, scale_factor,
  priority_weight, SLO, arrival_time`.

How fields map:
- id = `<file stem>-<line>`; `arrival_time` (s) -> submit_s; the file stem -> labels.team (the VC
  of an msr trace); `job_type` (model and batch size, e.g. "ResNet-50 (batch size 64)") -> labels.model.
- `scale_factor` GPUs -> the request: one replica of that many whole GPUs up to 8, else a gang
  split as the Philly readers split one (traces.philly.gang: 16 -> 2 x 8, 12 -> 3 x 4).
- `priority_weight` (physical only) -> priority, which must be a whole number; msr jobs get 0.
- `total_steps` -> duration_s = total_steps / (isolated V100 steps/s of (job_type, scale_factor)),
  the time on the reference V100. speedups = each worker type's isolated steps/s over V100's, for
  k80 -> K80-12GB, p100 -> P100-16GB, v100 -> V100-16GB. Where a worker type has no positive
  throughput (ResNet-50 batch 128 on 2+ K80s is 0), that model is left out of speedups and
  gpu_models lists the models that can run the job; otherwise gpu_models is empty (any model).
- A scale factor larger than any the table measured for the job type (the msr traces' 12- to
  128-GPU jobs, multi-GPU A3C, CycleGAN and Recommendation: 1,548 of the 15,264 seed-0 rows) is
  timed by linear extrapolation from the largest measured one (GavelThroughputs.timing): an
  optimistic, stated assumption. A job type the table does not know is a bad `job_type` field.

The throughput table: `GavelThroughputs.load` reads Gavel's JSON (`simulation_throughputs.json`:
`{worker_type: {"('<job type>', <scale factor>)": {"null": steps_per_s, "<co-located job>": [a, b]}}}`).
Readers take one in their constructor; by default they use `traces/samples/gavel_throughputs.json`,
the isolated numbers of Gavel's simulation_throughputs.json (commit c4fa40097339, MIT licence).

What is dropped: `command`, `num_steps_arg`, `needs_data_dir`, `working_directory` (how Gavel
launches the job), `SLO` (fleetsched has no per-job deadline), co-located ("space sharing")
throughputs and the `*_unconsolidated` worker types (fleetsched does not pack jobs on one GPU).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from scheduler.catalog import Catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, Labels
from traces.base import Fields, TraceFormat, TraceRow, open_text, read_json
from traces.philly import gang

WORKER_MODELS: Mapping[str, str] = MappingProxyType({"k80": "K80-12GB", "p100": "P100-16GB", "v100": "V100-16GB"})
REFERENCE_WORKER = "v100"
GPUS_PER_NODE = 8
MSR_COLUMNS = ("job_type", "command", "num_steps_arg", "needs_data_dir", "total_steps", "arrival_time", "scale_factor")
PHYSICAL_COLUMNS = (
    "job_type", "command", "working_directory", "num_steps_arg", "needs_data_dir", "total_steps", "scale_factor",
    "priority_weight", "SLO", "arrival_time",
)
SHIPPED_TABLE = "gavel_throughputs.json"
_KEY = re.compile(r"^\('(.+)', (\d+)\)$")
_WIDTH = "#fields"  # the number of tab-separated values on the line, kept beside the named ones

JobKey = tuple[str, int]  # (job type, scale factor)


@dataclass(frozen=True, slots=True)
class JobTiming:
    """How fast one (job type, scale factor) runs: V100 steps/s, speedups by model, models that can run it."""

    v100_steps_per_s: float
    speedups: tuple[tuple[str, float], ...]
    gpu_models: frozenset[str]


@dataclass(frozen=True, slots=True)
class GavelThroughputs:
    """Isolated steps/s by worker type (k80, p100, v100) and (job type, scale factor)."""

    steps_per_s: Mapping[str, Mapping[JobKey, float]]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> GavelThroughputs:
        """The table in a Gavel throughputs JSON file; InputError naming the file and entry if it is wrong."""
        path = Path(path)
        data = read_json(path)
        return cls.from_json(data, str(path))

    @classmethod
    def from_json(cls, data: Any, source: str) -> GavelThroughputs:
        """The table in Gavel's layout; top-level text entries (attribution) are skipped."""
        if not isinstance(data, dict):
            raise InputError("a throughputs table is a JSON object of worker types", source=source)
        table: dict[str, Mapping[JobKey, float]] = {}
        for worker, entries in data.items():
            if isinstance(entries, str) or worker.endswith("_unconsolidated"):
                continue
            if worker not in WORKER_MODELS:
                raise InputError(f"unknown worker type; known: {', '.join(WORKER_MODELS)}", source=source, field=worker)
            if not isinstance(entries, dict):
                raise InputError("must map job keys to throughputs", source=source, field=worker)
            rates = {_key(key, worker, source): _isolated(value, worker, key, source) for key, value in entries.items()}
            table[worker] = MappingProxyType(rates)
        if REFERENCE_WORKER not in table:
            raise InputError(f"no {REFERENCE_WORKER} throughputs (the reference GPU)", source=source)
        return cls(MappingProxyType(table), source)

    def job_types(self, scale_factor: int | None = None) -> tuple[str, ...]:
        """The job types with a positive V100 throughput (at `scale_factor`, when given), sorted."""
        keys = self.steps_per_s[REFERENCE_WORKER].items()
        return tuple(sorted({job for (job, scale), rate in keys if rate > 0 and scale_factor in (None, scale)}))

    def timing(self, job_type: str, scale_factor: int, *, extrapolate: bool = False) -> JobTiming | None:
        """How (job_type, scale_factor) runs on each worker type; None without a positive V100 throughput.

        With `extrapolate`, a scale factor larger than any measured for the job type runs at the
        largest measured one's steps/s scaled linearly (s0 GPUs -> x scale_factor / s0). That is
        optimistic (measured scaling is sub-linear), and it is the only way Gavel's own table
        times the msr traces' 16- to 128-GPU jobs and multi-GPU A3C, CycleGAN, Recommendation.
        """
        key = (job_type, scale_factor)
        factor = 1.0
        if self.steps_per_s[REFERENCE_WORKER].get(key, 0.0) <= 0 and extrapolate:
            measured = [s for (job, s), rate in self.steps_per_s[REFERENCE_WORKER].items()
                        if job == job_type and rate > 0 and s < scale_factor]
            if measured:
                key, factor = (job_type, max(measured)), scale_factor / max(measured)
        reference = self.steps_per_s[REFERENCE_WORKER].get(key, 0.0) * factor
        if reference <= 0:
            return None
        rates = {WORKER_MODELS[w]: table.get(key, 0.0) * factor for w, table in sorted(self.steps_per_s.items())}
        speedups = tuple(sorted((model, rate / reference) for model, rate in rates.items() if rate > 0))
        restricted = len(speedups) < len(rates)
        return JobTiming(reference, speedups, frozenset(model for model, _ in speedups) if restricted else frozenset())


def _key(text: str, worker: str, source: str) -> JobKey:
    match = _KEY.match(text)
    if match is None:
        raise InputError(f"job key {text!r} is not \"('<job type>', <scale factor>)\"", source=source, field=worker)
    return match.group(1), int(match.group(2))


def _isolated(value: Any, worker: str, key: str, source: str) -> float:
    rate = value.get("null") if isinstance(value, dict) else None
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
        where = f"{worker} {key}"
        raise InputError(f'needs an isolated ("null") steps/s >= 0, got {rate!r}', source=source, field=where)
    return float(rate)


@cache
def shipped_throughputs() -> GavelThroughputs:
    """The isolated throughputs of Gavel's simulation_throughputs.json shipped with fleetsched."""
    text = resources.files("traces").joinpath("samples", SHIPPED_TABLE).read_text(encoding="utf-8")
    data = json.loads(text)
    return GavelThroughputs.from_json(data, f"traces/samples/{SHIPPED_TABLE}")


class _GavelTrace(TraceFormat):
    """What both Gavel layouts share; `columns` tells them apart."""

    columns: ClassVar[tuple[str, ...]]
    suffixes = (".trace",)

    def __init__(self, throughputs: GavelThroughputs | None = None) -> None:
        self.throughputs = throughputs

    def detect(self, path: Path, first_line: str) -> bool:
        return path.suffix in self.suffixes and len(first_line.split("\t")) == len(self.columns)

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        with open_text(path) as handle:
            for line, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                values = text.rstrip("\r\n").split("\t")
                named: dict[str, Any] = dict(zip(self.columns, values, strict=False))
                named[_WIDTH] = len(values)
                yield Fields(named, str(path), line)

    def prepare(self, path: Path) -> GavelThroughputs:
        return self.throughputs or shipped_throughputs()

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        width = fields.values[_WIDTH]
        if width < len(self.columns):
            expected = f"{width} tab-separated fields where {self.name} traces have {len(self.columns)}"
            raise fields.fail(self.columns[width], f"missing: {expected}")
        if width > len(self.columns):
            raise fields.fail(self.columns[-1], f"{width - len(self.columns)} extra tab-separated field(s) after it")
        job_type = fields.text("job_type")
        total_steps = fields.integer("total_steps", least=1)
        scale_factor = fields.integer("scale_factor", least=1)
        submit_s = fields.number("arrival_time")
        priority = fields.integer("priority_weight") if "priority_weight" in self.columns else 0
        timing = context.timing(job_type, scale_factor, extrapolate=True)
        if timing is None:
            raise fields.fail("job_type", f"no V100 throughput for ({job_type!r}, {scale_factor}) in {context.source}")
        replicas, per_replica = gang(scale_factor)
        request = GpuRequest(gpus=per_replica)
        stem = Path(fields.source).stem
        job = Job(
            id=f"{stem}-{fields.line}",
            request=request,
            submit_s=submit_s,
            duration_s=total_steps / timing.v100_steps_per_s,
            replicas=replicas,
            gpu_models=timing.gpu_models,
            priority=priority,
            labels=Labels(team=stem, model=job_type),
            speedups=timing.speedups,
        )
        return TraceRow(fields.line, job)


class GavelMsrTrace(_GavelTrace):
    """Gavel's Philly-derived per-VC traces: 7 tab-separated fields."""

    name = "gavel"
    description = "Gavel msr trace (traces/msr/seed=N/<vc>.trace, 7 tab-separated fields)"
    columns = MSR_COLUMNS


class GavelPhysicalTrace(_GavelTrace):
    """Gavel's physical-cluster traces: 10 tab-separated fields with priority weight and SLO."""

    name = "gavel-physical"
    description = "Gavel physical-cluster trace (traces/physical_cluster/*.trace, 10 tab-separated fields)"
    columns = PHYSICAL_COLUMNS
