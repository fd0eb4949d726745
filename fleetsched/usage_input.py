"""What `fleetsched usage` reads: the GPU agent's series, from a file or from Prometheus.

Three inputs, one shape (see /work/metric-contract.md, "the agent's own files"):
- a Prometheus HTTP API `query_range` response saved as JSON
  (`{"status": "success", "data": {"resultType": "matrix", "result": [...]}}`);
- the agent's record file: JSON Lines, each line one result element
  `{"metric": {"__name__": ..., labels...}, "values": [[unix_s, "value"], ...]}`; a series may
  span several lines, joined by its label set in time order;
- `--prometheus URL --start --end --step`: the same query_range, fetched with one HTTP GET of
  `URL/api/v1/query_range?query=DCGM_FI_DEV_GPU_UTIL&...`.

A value that is not a finite number ("NaN", "+Inf") is refused like any bad value: the agent
never writes one (a field NVML cannot read is left out), and kept it would end a quiet run
and so change the result without a word. Only `DCGM_FI_DEV_GPU_UTIL` is read (the idle rule
is applied to it again here, so a different threshold or window can be asked after the fact);
other metrics in the file are skipped. A
bad document stops the read naming the file, the line (JSON Lines) or the JSON path, and the
field: `record.jsonl:7: values[3]: not a number: 'busy'`.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler.errors import InputError
from traces.base import json_lines, open_text

UTILISATION = "DCGM_FI_DEV_GPU_UTIL"
FETCH_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Series:
    """One device's utilisation while one pod held it: its labels, samples `(unix_s, percent)` in
    time order, and where it was first read (for error messages): the file, the line of a record,
    the JSON path of a query_range's element (`data.result[3].`)."""

    labels: tuple[tuple[str, str], ...]
    samples: tuple[tuple[float, float], ...]
    source: str
    line: int | None
    where: str = ""

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")

    def field(self, label: str) -> str:
        """How an error names one of its labels: the label (a record's line says which series), or
        its JSON path in a query_range response."""
        return f"{self.where}metric.{label}" if self.where else label


@dataclass(frozen=True, slots=True)
class _Part:
    labels: tuple[tuple[str, str], ...]
    samples: list[tuple[float, float]]
    line: int | None
    where: str


def _element(element: Any, source: str, line: int | None, where: str) -> _Part | None:
    """One result element, checked; None when it is another metric than the utilisation."""
    if not isinstance(element, dict) or not isinstance(element.get("metric"), dict):
        raise InputError("a series is an object with a metric object and values", source=source, line=line,
                         field=where or "metric")  # fmt: skip
    metric: dict[str, Any] = element["metric"]
    if "__name__" not in metric:  # skipped as another metric, its utilisation would be lost without a word
        raise InputError(f"no __name__: cannot tell which metric the series is (a query of {UTILISATION} "
                         "keeps it; a function over it drops it)", source=source, line=line,
                         field=f"{where}metric.__name__")  # fmt: skip
    if metric["__name__"] != UTILISATION:
        return None
    labels = tuple(sorted((str(k), str(v)) for k, v in metric.items() if k != "__name__"))
    values = element.get("values")
    if not isinstance(values, list):
        raise InputError("must be a list of [unix_s, \"value\"] pairs", source=source, line=line,
                         field=f"{where}values")  # fmt: skip
    samples = []
    for index, pair in enumerate(values):
        field = f"{where}values[{index}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise InputError(f'must be a [unix_s, "value"] pair, got {pair!r}', source=source, line=line, field=field)
        t_s = _number(pair[0], source, line, field)
        percent = _number(pair[1], source, line, field)  # NaN is refused: kept, it would silently break a quiet run
        if not 0 <= percent <= 100:
            raise InputError(f"a utilisation is a percentage from 0 to 100, got {pair[1]!r}", source=source,
                             line=line, field=field)  # fmt: skip
        samples.append((t_s, percent))
    return _Part(labels, samples, line, where)


def _number(value: Any, source: str, line: int | None, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"not a number: {value!r}", source=source, line=line, field=field) from None
    if isinstance(value, bool) or not math.isfinite(number):
        raise InputError(f"not a finite number: {value!r}", source=source, line=line, field=field)
    return number


def _joined(parts: list[_Part], source: str) -> list[Series]:
    """Parts joined by label set, samples in time order; a repeated instant is refused."""
    by_labels: dict[tuple[tuple[str, str], ...], list[_Part]] = {}
    for part in parts:
        by_labels.setdefault(part.labels, []).append(part)
    series = []
    for labels, group in by_labels.items():
        seen: dict[float, _Part] = {}
        samples = []
        for part in group:
            for t_s, percent in part.samples:
                if t_s in seen:
                    raise InputError(f"a sample at {t_s:g} already came (line {seen[t_s].line})" if part.line
                                     else f"two samples at {t_s:g}", source=source, line=part.line,
                                     field=f"{part.where}values")  # fmt: skip
                seen[t_s] = part
                samples.append((t_s, percent))
        samples.sort()
        series.append(Series(labels, tuple(samples), source, group[0].line, group[0].where))
    return sorted(series, key=lambda s: s.labels)


def read_record(path: str | Path) -> list[Series]:
    """The utilisation series of an agent record file (JSON Lines)."""
    source = str(path)
    parts = []
    for line, element in json_lines(Path(path)):
        part = _element(element, source, line, "")
        if part is not None:
            parts.append(part)
    return _joined(parts, source)


def query_range_series(document: Any, source: str) -> list[Series]:
    """The utilisation series of a Prometheus query_range response."""
    if not isinstance(document, dict) or document.get("status") != "success":
        status = document.get("status") if isinstance(document, dict) else None
        raise InputError(f"not a successful Prometheus response (status {status!r})", source=source, field="status")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
        raise InputError("must be a query_range result: resultType matrix with a result list", source=source,
                         field="data")  # fmt: skip
    parts = []
    for index, element in enumerate(data["result"]):
        part = _element(element, source, None, f"data.result[{index}].")
        if part is not None:
            parts.append(part)
    return _joined(parts, source)


def _is_record(path: Path) -> bool:
    """Whether the file's first line is a whole series object (an agent record), read alone so
    that a record of millions of lines is streamed, never held."""
    with open_text(path) as handle:
        for text in handle:
            if text.strip():
                try:
                    first = json.loads(text)
                except json.JSONDecodeError:
                    return False  # the start of a larger document (a query_range response over lines)
                return isinstance(first, dict) and "metric" in first
    return True  # empty: a record of nothing


def read_file(path: str | Path) -> list[Series]:
    """The series of a file: an agent record (JSON Lines) or a query_range response (one JSON document)."""
    path = Path(path)
    if _is_record(path):
        return read_record(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InputError(f"neither an agent record nor a query_range response: {error.msg}", source=str(path),
                         line=error.lineno) from None  # fmt: skip
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", source=str(path)) from None
    return query_range_series(document, str(path))


def query_time_s(text: str, field: str) -> float:
    """A query_range bound as Prometheus takes it: unix seconds or an RFC 3339 time with its offset."""
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise InputError(f"not a finite time: {text!r}", field=field)
        return number
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"must be unix seconds or an RFC 3339 time (2024-12-05T00:00:00Z), got {text!r}",
                         field=field) from None  # fmt: skip
    if moment.tzinfo is None:
        raise InputError(f"an RFC 3339 time names its offset (Z or +01:00), got {text!r}", field=field)
    return moment.timestamp()


def check_range(start: str, end: str, step: str) -> None:
    """InputError naming the option unless `start` < `end` are times Prometheus reads and `step` is
    a number of seconds over 0: said before the query, not by the server or after it."""
    start_s, end_s = query_time_s(start, "--start"), query_time_s(end, "--end")
    if not start_s < end_s:
        raise InputError(f"must come after --start ({start}), got {end!r}", field="--end")
    try:
        step_s = float(step)
    except ValueError:
        raise InputError(f"must be a number of seconds, got {step!r}", field="--step") from None
    if not (math.isfinite(step_s) and step_s > 0):
        raise InputError(f"must be a number of seconds over 0, got {step!r}", field="--step")


def fetch(url: str, start: str, end: str, step: str) -> list[Series]:
    """The series Prometheus at `url` answers a query_range for (one HTTP GET)."""
    query = urllib.parse.urlencode({"query": UTILISATION, "start": start, "end": end, "step": step})
    address = f"{url.rstrip('/')}/api/v1/query_range?{query}"
    if urllib.parse.urlparse(address).scheme not in ("http", "https"):
        raise InputError("must be an http:// or https:// address", field="--prometheus")
    try:
        with urllib.request.urlopen(address, timeout=FETCH_TIMEOUT_S) as response:  # the scheme is checked above
            body = response.read()
    except urllib.error.HTTPError as error:
        raise InputError(f"Prometheus answered HTTP {error.code}: {_reason(error)}", source=url) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise InputError(f"cannot reach Prometheus: {reason}", source=url) from None
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError("Prometheus did not answer JSON", source=url) from None
    return query_range_series(document, url)


def _reason(error: urllib.error.HTTPError) -> str:
    """Prometheus's own error text when it sent one."""
    try:
        body: Mapping[str, Any] = json.loads(error.read())
        return str(body.get("error", error.reason))
    except (ValueError, OSError, AttributeError):
        return str(error.reason)


__all__ = [
    "UTILISATION", "Series", "check_range", "fetch", "query_range_series", "query_time_s", "read_file", "read_record",
]  # fmt: skip
