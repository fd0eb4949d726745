"""Alibaba GenTD26 (cluster-trace-v2026-GenAI) pod GPU duty cycles as service jobs with measured utilisation.

`pod_gpu_duty_cycle_anon.csv` (read as it is, or straight out of the published
`pod_gpu_duty_cycle_anon.tar.gz`, streaming) holds one row per pod and sample:
`value, timestamp_anon, container_ip`, value the pod's GPU utilisation in percent, the rows in
time order with every pod's samples interleaved. In the published file 143 pods are sampled on
one grid of 1,441 instants 57 s apart (the anonymisation scaled time: "one a minute" upstream),
over 22.8 hours.

How it maps:
- each pod (`container_ip`, an MD5 hash of its IP) -> one job, id the hash: a service
  (kind service, priority SERVICE_PRIORITY, not preemptible) holding one whole GPU (the data
  gives one duty cycle per pod and no GPU count) of any model (the data names none).
- it holds its GPU from its first sample to one period after its last: submit_s is its first
  sample's time from the file's first timestamp, duration_s = last - first + period.
- its samples -> `measured` (`scheduler.observed.MeasuredUtilisation`): sample i at first + i x
  period, None where the pod has no sample on the grid (a scrape missed: no data, not idle).
  The period is the file's most common step between consecutive timestamps (57 s; 60 s when
  the file has a single instant).
- labels: GenTD26 has no team or application field. The only grouping its files carry is
  what `qps.csv` says each container served: team = `generative` (it reported generative
  requests), `api` (API requests only) or `no-requests` (no QPS record), read from `qps.csv`
  or `qps.tar.gz` beside the duty-cycle file; with no such file, team is "" (unknown).
  project `gentd26`, model `stable-diffusion`.

Not kept: `pod_gpu_memory_used_bytes_anon.csv` (memory does not decide idleness here).
A pod's samples are spread over the whole file, so the reader keeps every pod's series (one
float per sample, 157,417 in the published file) until the file is read, then yields the pods
in the order of their first sample. A bad row (a value that is not a percentage, a time off
the grid, a pod sampled twice at one instant) stops the read naming the file, line and field;
`--skip-bad-rows` does not apply (a pod is judged once all its rows are read), and `trace inspect`
counts one row per pod.
"""

from __future__ import annotations

import csv
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.catalog import Catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, JobKind, Labels
from scheduler.observed import MeasuredUtilisation
from traces.base import Fields, TraceFormat, TraceRow

COLUMNS = ("value", "timestamp_anon", "container_ip")
QPS_COLUMNS = ("timestamp_anon", "value", "container_ip", "request_type")
SERVICE_PRIORITY = 10
DEFAULT_PERIOD_S = 60.0
DUTY_CYCLE_ARCHIVE = "pod_gpu_duty_cycle_anon.tar.gz"
TEAMS = {"Generative Requests": "generative", "API Requests": "api"}
NO_REQUESTS = "no-requests"


@dataclass(slots=True)
class _Pod:
    """One pod's samples as read: (time, percent, line)."""

    first_line: int
    samples: list[tuple[float, float, int]] = field(default_factory=list)
    times: dict[float, int] = field(default_factory=dict)  # time -> line, to name a repeated sample


def _member_lines(path: Path) -> tuple[str, Iterator[str]]:
    """The source name and the text lines of `path`: a CSV file, or the one CSV inside a .tar.gz."""
    if not path.name.endswith((".tar.gz", ".tgz")):
        return str(path), _text_lines(path)
    return _archive_lines(path)


def _text_lines(path: Path) -> Iterator[str]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise InputError(error.strerror or str(error), source=str(path)) from None
    with handle:
        yield from _decoded(handle, str(path))


def _archive_lines(path: Path) -> tuple[str, Iterator[str]]:
    try:
        archive = tarfile.open(path, "r:gz")  # noqa: SIM115 - closed by `lines`, which reads it later
        member = next((m for m in archive if m.isfile() and m.name.endswith(".csv")), None)
    except (OSError, tarfile.TarError, EOFError) as error:
        raise InputError(f"not a readable .tar.gz: {error}", source=str(path)) from None
    if member is None:
        archive.close()
        raise InputError("the archive holds no .csv file", source=str(path))
    source = f"{path}/{member.name}"
    handle = archive.extractfile(member)
    if handle is None:  # pragma: no cover - a regular member always has a file
        raise InputError("cannot read the archive's .csv", source=source)

    def lines() -> Iterator[str]:
        with archive, handle:
            try:
                yield from _decoded(handle, source)
            except (OSError, tarfile.TarError, EOFError) as error:
                raise InputError(f"the archive is damaged: {error}", source=source) from None

    return source, lines()


def _decoded(handle: Iterable[bytes], source: str) -> Iterator[str]:
    for line, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", source=source, line=line) from None


def _csv_fields(source: str, lines: Iterator[str], columns: tuple[str, ...]) -> Iterator[Fields]:
    """The rows of a CSV's lines as Fields, checking the header and widths."""
    reader = csv.reader(lines)
    names = next(reader, [])
    for column in columns:
        if column not in names:
            raise InputError("missing column", source=source, line=1, field=column)
    for values in reader:
        if not values:
            continue
        if len(values) != len(names):
            raise InputError(f"{len(values)} values for {len(names)} columns", source=source, line=reader.line_num)
        yield Fields(dict(zip(names, values, strict=True)), source, reader.line_num)


def _period_s(steps: Counter[float]) -> float:
    """The grid's step: the most common step between consecutive timestamps (the smallest of equals)."""
    if not steps:
        return DEFAULT_PERIOD_S
    return min(steps.items(), key=lambda item: (-item[1], item[0]))[0]


def _teams(path: Path) -> dict[str, str] | None:
    """What each container served, from the qps file beside `path` (None when there is none)."""
    folder = path.parent
    found = next((folder / name for name in ("qps.csv", "qps.tar.gz") if (folder / name).is_file()), None)
    if found is None:
        return None
    served: dict[str, set[str]] = {}
    for fields in _csv_fields(*_member_lines(found), QPS_COLUMNS):
        pod = fields.text("container_ip", "")
        kind = fields.text("request_type")
        if kind not in TEAMS:
            raise fields.fail("request_type", f"must be one of {', '.join(TEAMS)}, got {kind!r}")
        if pod and pod.lower() not in ("none", "null"):
            served.setdefault(pod, set()).add(kind)
    return {pod: TEAMS["Generative Requests"] if "Generative Requests" in kinds else TEAMS["API Requests"]
            for pod, kinds in served.items()}  # fmt: skip


class GenTd26DutyCycle(TraceFormat):
    """GenTD26's pod GPU duty cycle: each pod a one-GPU service carrying its utilisation series."""

    name = "gentd26"
    description = "Alibaba GenTD26 pod GPU duty cycle (pod_gpu_duty_cycle_anon.csv or its .tar.gz)"
    suffixes = (".csv", ".tar.gz")

    def detect(self, path: Path, first_line: str) -> bool:
        return path.name == DUTY_CYCLE_ARCHIVE or tuple(first_line.split(",")) == COLUMNS

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        """One Fields per pod (at its first line), in the order of first samples, once all rows are read."""
        pods: dict[str, _Pod] = {}
        steps: Counter[float] = Counter()
        last_s: float | None = None
        source, lines = _member_lines(path)
        for fields in _csv_fields(source, lines, COLUMNS):
            pod_id = fields.text("container_ip")
            percent = fields.number("value")
            if percent > 100:
                raise fields.fail(
                    "value", f"a utilisation is a percentage from 0 to 100, got {fields.values['value']!r}"
                )
            t_s = fields.number("timestamp_anon")
            if last_s is not None and t_s != last_s:
                if t_s < last_s:
                    raise fields.fail("timestamp_anon", f"{t_s:g} is before the row before ({last_s:g}): "
                                                        "the file is in time order")  # fmt: skip
                steps[t_s - last_s] += 1
            last_s = t_s
            pod = pods.setdefault(pod_id, _Pod(fields.line))
            if t_s in pod.times:
                raise fields.fail("timestamp_anon", f"pod {pod_id} has a sample at {t_s:g} already "
                                                    f"(line {pod.times[t_s]})")  # fmt: skip
            pod.times[t_s] = fields.line
            pod.samples.append((t_s, percent, fields.line))
        yield from GenTd26DutyCycle._pods(pods, _period_s(steps), source, _teams(path))

    @staticmethod
    def _pods(pods: dict[str, _Pod], period_s: float, source: str, teams: dict[str, str] | None) -> Iterator[Fields]:
        start_s = min((pod.samples[0][0] for pod in pods.values()), default=0.0)
        for pod_id, pod in sorted(pods.items(), key=lambda item: (item[1].samples[0][0], item[0])):
            first_s = pod.samples[0][0]
            series: list[float | None] = [None] * (round((pod.samples[-1][0] - first_s) / period_s) + 1)
            for t_s, percent, line in pod.samples:
                index = (t_s - first_s) / period_s
                if abs(index - round(index)) > 1e-6:
                    raise InputError(f"{t_s:g} is not on the {period_s:g} s grid of pod {pod_id} (first sample "
                                     f"at {first_s:g})", source=source, line=line, field="timestamp_anon")  # fmt: skip
                series[round(index)] = percent
            team = "" if teams is None else teams.get(pod_id, NO_REQUESTS)
            values = {"pod": pod_id, "submit_s": first_s - start_s, "period_s": period_s, "series": series,
                      "team": team}  # fmt: skip
            yield Fields(values, source, pod.first_line)

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        values = fields.values
        series: list[float | None] = values["series"]
        period_s: float = values["period_s"]
        job = Job(
            id=values["pod"],
            request=GpuRequest(gpus=1),
            submit_s=values["submit_s"],
            duration_s=len(series) * period_s,
            priority=SERVICE_PRIORITY,
            preemptible=False,
            kind=JobKind.SERVICE,
            labels=Labels(team=values["team"], project="gentd26", model="stable-diffusion"),
            measured=MeasuredUtilisation(samples_percent=tuple(series), period_s=period_s),
        )
        return TraceRow(fields.line, job)


__all__ = ["GenTd26DutyCycle"]
