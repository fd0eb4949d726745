"""Azure LLM inference traces (Splitwise, ISCA'24) as inference services whose replicas scale with load.

`AzureLLMInferenceTrace_{code,conv}.csv` (Azure/AzurePublicDataset, CC BY 4.0) hold one row
per request: `TIMESTAMP` (arrival, "2023-11-16 18:15:46.6805900", in time order),
`ContextTokens` (input) and `GeneratedTokens` (output). There is no GPU in the trace: the
requests are the load of one service, and this reader decides how many replicas serve it.

How the load becomes jobs:
- Time is cut into windows of `Scaling.window_s` (300 s) from the first request. A window's
  demand is the busy time its requests ask of one replica at the GPU model's rates
  (`ReplicaRate`: prefill tokens/s for the input, decode tokens/s for the output), and
  need = ceil(busy / (window_s x target_utilisation)): a replica runs below its peak rate.
- Replicas in window w = max(min_replicas, the largest need of the last
  `scale_down_windows` windows): up at once (the window's demand is known, an autoscaler
  that predicts perfectly), down only once the need has stayed lower that many windows
  (Kubernetes' scale-down stabilisation window). Windows without a request need 0, those
  with any at least 1.
- Requests of a window go round-robin to its replicas (request k to replica k mod n), so
  every request and token is served by exactly one replica.
- Replica i runs for each maximal run of windows with i < replicas: one job of kind service
  per run (id `<service>-r<i>-w<first window>`), submitted at its first window's start, for
  the run's length, asking `gpus_per_replica` whole GPUs of the one GPU model it was sized
  for (gpu_models pinned), priority SERVICE_PRIORITY, not preemptible unless the reader is
  told replicas may run on spot (`preemptible`: a replica keeps no state, so one taken back
  restarts elsewhere), with `served` = its service, requests and tokens. Labels: team
  `inference`, project = the service, model = the LLM.
- The service is named after the file: `AzureLLMInferenceTrace_conv.csv` (and the bundled
  `azure-llm-conv.csv`) -> `conv`.

The rates, with their sources, are `scheduler/data/llm_throughput.json` (`shipped_throughputs`).
Reading keeps one window of requests and the replica runs found so far (the scaling steps,
not the requests) in memory. A request out of time order, or a bad value, stops the read
with an InputError naming the file, line and field (such rows cannot be skipped: the replica
schedule would no longer describe the load).
"""

from __future__ import annotations

import heapq
import json
import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scheduler.catalog import Catalog, default_catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, JobKind, Labels
from scheduler.observed import Served
from traces.base import Fields, TraceFormat, TraceRow, csv_rows, read_json

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
SERVICE_PRIORITY = 10
TEAM = "inference"
THROUGHPUT_FILE = "llm_throughput.json"
_FILE_PREFIXES = ("AzureLLMInferenceTrace_", "azure-llm-")  # the dataset's names, and the bundled sample's
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class ReplicaRate:
    """How fast one replica serves on one GPU model: tokens/s for input (prefill) and output (decode)."""

    gpu_model: str
    gpus_per_replica: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    source: str = ""

    def busy_s(self, input_tokens: int, output_tokens: int) -> Fraction:
        """Exact seconds one replica needs for this many tokens (rates as written, in decimal)."""
        return input_tokens / _exact(self.prefill_tokens_per_s) + output_tokens / _exact(self.decode_tokens_per_s)


@dataclass(frozen=True, slots=True)
class ThroughputTable:
    """The replica rates of one LLM, by GPU model (catalog key)."""

    llm: str
    rates: Mapping[str, ReplicaRate]
    source: str = ""

    @classmethod
    def load(cls, path: str | Path, catalog: Catalog | None = None) -> ThroughputTable:
        """The table in a throughput JSON file (the layout of llm_throughput.json)."""
        path = Path(path)
        data = read_json(path)
        return cls.from_json(data, str(path), catalog or default_catalog())

    @classmethod
    def from_json(cls, data: Any, source: str, catalog: Catalog) -> ThroughputTable:
        if not isinstance(data, dict) or not isinstance(data.get("gpus"), dict) or not data["gpus"]:
            raise InputError("a throughput table is a JSON object with a non-empty 'gpus' object", source=source)
        rates: dict[str, ReplicaRate] = {}
        for name, entry in data["gpus"].items():
            key = catalog.key_of(str(name))
            if key is None:
                raise InputError("unknown GPU model", source=source, field=f"gpus.{name}")
            rates[key] = _rate(key, entry, f"gpus.{name}", source)
        return cls(str(data.get("llm", "")), MappingProxyType(rates), source)

    def rate(self, gpu_model: str, catalog: Catalog | None = None) -> ReplicaRate:
        """The rate on `gpu_model` (any name the catalog resolves); InputError when the table has none."""
        key = (catalog or default_catalog()).key_of(gpu_model) or gpu_model
        if key not in self.rates:
            known = ", ".join(sorted(self.rates))
            raise InputError(f"no {self.llm} throughput for {gpu_model!r}; known: {known}", source=self.source)
        return self.rates[key]


def _positive(entry: Mapping[str, Any], name: str, where: str, source: str) -> float:
    value = entry.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise InputError(f"must be a number > 0, got {value!r}", source=source, field=f"{where}.{name}")
    return float(value)


def _rate(key: str, entry: Any, where: str, source: str) -> ReplicaRate:
    if not isinstance(entry, dict):
        raise InputError("must be an object", source=source, field=where)
    gpus = _positive(entry, "gpus_per_replica", where, source)
    if gpus != int(gpus):
        raise InputError(f"must be a whole number, got {gpus:g}", source=source, field=f"{where}.gpus_per_replica")
    return ReplicaRate(
        gpu_model=key,
        gpus_per_replica=int(gpus),
        prefill_tokens_per_s=_positive(entry, "prefill_tokens_per_s_per_gpu", where, source) * gpus,
        decode_tokens_per_s=_positive(entry, "decode_tokens_per_s_per_gpu", where, source) * gpus,
        source=str(entry.get("source", "")),
    )


@cache
def shipped_throughputs() -> ThroughputTable:
    """The bundled table: Llama-2-70B on A100-80GB and H100-80GB (scheduler/data/llm_throughput.json)."""
    text = (resources.files("scheduler") / "data" / THROUGHPUT_FILE).read_text(encoding="utf-8")
    return ThroughputTable.from_json(json.loads(text), f"scheduler/data/{THROUGHPUT_FILE}", default_catalog())


def two_point_fit(points: Sequence[tuple[int, int, float]]) -> tuple[float, float]:
    """(prefill, decode) tokens/s from two peak-throughput points (input, output, output tokens/s):
    each request costs input/prefill + output/decode seconds, so 1/throughput =
    (input/output)/prefill + 1/decode; two points give both rates."""
    (in_a, out_a, rate_a), (in_b, out_b, rate_b) = points
    prefill = (in_b / out_b - in_a / out_a) / (1 / rate_b - 1 / rate_a)
    decode = 1 / (1 / rate_a - (in_a / out_a) / prefill)
    return prefill, decode


def _exact(number: float) -> Fraction:
    """A decimal setting as the exact fraction it is written as (0.7 -> 7/10, not its binary neighbour)."""
    return Fraction(repr(number))


@dataclass(frozen=True, slots=True)
class Scaling:
    """How replicas follow the load: window, target utilisation, floor and scale-down stabilisation."""

    window_s: float = 300.0
    target_utilisation: float = 0.7
    min_replicas: int = 1
    scale_down_windows: int = 3

    def __post_init__(self) -> None:
        checks = (
            ("window_s", self.window_s >= 0.001 and math.isfinite(self.window_s), "a number of seconds >= 0.001"),
            ("target_utilisation", 0 < self.target_utilisation <= 1, "in (0, 1]"),
            ("min_replicas", self.min_replicas >= 0, "a whole number >= 0"),
            ("scale_down_windows", self.scale_down_windows >= 1, "a whole number >= 1"),
        )
        for name, ok, wanted in checks:
            if not ok:
                raise InputError(f"must be {wanted}, got {getattr(self, name)!r}", source="scaling", field=name)

    def need(self, busy_s: Fraction) -> int:
        """Replicas one window's busy seconds need at the target utilisation."""
        return math.ceil(busy_s / (_exact(self.window_s) * _exact(self.target_utilisation)))


@dataclass(slots=True)
class _Run:
    """A replica's run of windows being built: where it began, the line that began it, what it served."""

    replica: int
    first_window: int
    line: int
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def take(self, inputs: Sequence[int], outputs: Sequence[int]) -> None:
        self.requests += len(inputs)
        self.input_tokens += sum(inputs)
        self.output_tokens += sum(outputs)


@dataclass(slots=True)
class ReplicaPlanner:
    """Turns the windows' requests, in time order, into finished replica runs (`Fields` rows)."""

    rate: ReplicaRate
    scaling: Scaling
    source: str
    needs: deque[int] = field(default_factory=deque)
    open_runs: list[_Run] = field(default_factory=list)
    finished: list[tuple[int, int, int, Fields]] = field(default_factory=list)  # heap by (window, replica)

    def window(self, window: int, line: int, inputs: Sequence[int], outputs: Sequence[int]) -> int:
        """Serves one window's requests (their lines start at `line`); returns its replicas."""
        need = self.scaling.need(self.rate.busy_s(sum(inputs), sum(outputs)))
        self.needs.append(max(need, 1) if inputs else need)  # even requests of no token are served by one
        if len(self.needs) > self.scaling.scale_down_windows:
            self.needs.popleft()
        replicas = max(self.scaling.min_replicas, *self.needs)
        while len(self.open_runs) > replicas:
            self._close(self.open_runs.pop(), window)
        while len(self.open_runs) < replicas:
            self.open_runs.append(_Run(len(self.open_runs), window, line))
        for run in self.open_runs:
            run.take(inputs[run.replica :: replicas], outputs[run.replica :: replicas])
        return replicas

    def _close(self, run: _Run, end_window: int) -> None:
        values = {
            "replica": run.replica, "first_window": run.first_window, "windows": end_window - run.first_window,
            "requests": run.requests, "input_tokens": run.input_tokens, "output_tokens": run.output_tokens,
        }  # fmt: skip
        heapq.heappush(self.finished, (run.first_window, run.replica, run.line, Fields(values, self.source, run.line)))

    def close(self, end_window: int) -> None:
        while self.open_runs:
            self._close(self.open_runs.pop(), end_window)

    def ready(self) -> Iterator[Fields]:
        """Finished runs that begin no later than every open one (so rows come in submit order)."""
        earliest = self.open_runs[0].first_window if self.open_runs else math.inf
        while self.finished and self.finished[0][0] <= earliest:
            yield heapq.heappop(self.finished)[3]


def _arrival(fields: Fields) -> datetime:
    text = fields.text("TIMESTAMP")
    try:
        arrival = datetime.fromisoformat(text)
    except ValueError:
        raise fields.fail("TIMESTAMP", f"not a time like 2023-11-16 18:15:46.6805900: {text!r}") from None
    if arrival.utcoffset() is not None:  # the dataset's times name no zone; mixing both cannot be ordered
        raise fields.fail("TIMESTAMP", f"names a time zone; the trace's times do not: {text!r}")
    return arrival


def service_name(path: Path) -> str:
    """The service a trace file is the load of: its name without the dataset's (or the sample's) prefix."""
    stem = path.stem
    for prefix in _FILE_PREFIXES:
        if stem.startswith(prefix) and len(stem) > len(prefix):
            return stem[len(prefix) :]
    return stem


class AzureLlmServices(TraceFormat):
    """An Azure LLM inference trace as the replicas of one service sized for one GPU model."""

    name = "azure-llm"
    description = "Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens) as scaled service replicas"

    def __init__(
        self,
        gpu_model: str = "A100-80GB",
        scaling: Scaling | None = None,
        table: ThroughputTable | None = None,
        *,
        preemptible: bool = False,
    ) -> None:
        self.table = table or shipped_throughputs()
        self.rate = self.table.rate(gpu_model)
        self.scaling = scaling or Scaling()
        self.preemptible = preemptible

    def detect(self, path: Path, first_line: str) -> bool:
        return tuple(part.strip() for part in first_line.split(",")) == COLUMNS

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        """The replica runs of the file's service, in submit order (see the module's docstring)."""
        planner = ReplicaPlanner(self.rate, self.scaling, str(path))
        window_us = round(self.scaling.window_s * 1_000_000)
        origin: datetime | None = None
        last: datetime | None = None
        current, first_line = 0, 0
        inputs: list[int] = []
        outputs: list[int] = []
        for fields in csv_rows(path, COLUMNS):
            arrival = _arrival(fields)
            input_tokens, output_tokens = fields.integer("ContextTokens"), fields.integer("GeneratedTokens")
            if last is not None and arrival < last:
                raise fields.fail("TIMESTAMP", f"{arrival} is before the request before it ({last}): not in time order")
            origin = origin or arrival
            last = arrival
            window = ((arrival - origin) // _MICROSECOND) // window_us
            while window > current:  # the window ends: plan it, and each empty one up to this request's
                planner.window(current, first_line or fields.line, inputs, outputs)
                yield from planner.ready()
                current, first_line, inputs, outputs = current + 1, 0, [], []
            first_line = first_line or fields.line
            inputs.append(input_tokens)
            outputs.append(output_tokens)
        if origin is None:
            return
        planner.window(current, first_line, inputs, outputs)
        planner.close(current + 1)
        yield from planner.ready()

    def row(self, fields: Fields, context: Any, catalog: Catalog) -> TraceRow:
        values, window_s = fields.values, self.scaling.window_s
        service = service_name(Path(fields.source))
        served = Served(service=service, requests=values["requests"], input_tokens=values["input_tokens"],
                        output_tokens=values["output_tokens"])  # fmt: skip
        job = Job(
            id=f"{service}-r{values['replica']}-w{values['first_window']}",
            request=_request(self.rate.gpus_per_replica),
            submit_s=values["first_window"] * window_s,
            duration_s=values["windows"] * window_s,
            gpu_models=frozenset({self.rate.gpu_model}),
            priority=SERVICE_PRIORITY,
            preemptible=self.preemptible,
            kind=JobKind.SERVICE,
            labels=Labels(team=TEAM, project=service, model=self.table.llm),
            served=served,
        )
        return TraceRow(fields.line, job)


class AzureLlmServicesH100(AzureLlmServices):
    """The same, sized for H100-80GB: named with `--format azure-llm-h100`, never detected."""

    name = "azure-llm-h100"
    description = "Azure LLM inference trace as service replicas sized for H100-80GB (give --format)"

    def __init__(
        self, scaling: Scaling | None = None, table: ThroughputTable | None = None, *, preemptible: bool = False
    ) -> None:
        super().__init__("H100-80GB", scaling, table, preemptible=preemptible)

    def detect(self, path: Path, first_line: str) -> bool:
        return False


@cache
def _request(gpus: int) -> GpuRequest:
    return GpuRequest(gpus=gpus)
