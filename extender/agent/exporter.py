"""The agent's outputs: `/metrics` over HTTP (prometheus_client), the record file, and the scrape loop.

`AgentCollector` is a custom prometheus_client collector that yields the families of the last
tick, so a device gone since is gone from `/metrics` too. `Recorder` appends each tick's samples
to a JSON Lines file in the form `fleetsched usage` reads (one Prometheus `query_range` result
element per line: {"metric": {"__name__": ..., labels}, "values": [[unix_s, "value"]]}).
`run` ticks every period until told to stop; a tick that fails unexpectedly is logged and
counted, and the loop goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from extender.agent.state import Agent, Family
from scheduler.errors import InputError

log = logging.getLogger(__name__)


class AgentCollector(Collector):
    """Yields the agent's last families at each scrape of `/metrics`."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def describe(self) -> list[Metric]:
        return []  # the families change with the devices: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        for family in self.agent.families:
            names = [name for name, _ in family.samples[0][0]] if family.samples else []
            metric: GaugeMetricFamily | CounterMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.help, labels=names)
            else:
                metric = GaugeMetricFamily(family.name, family.help, labels=names)
            for labels, value in family.samples:
                metric.add_metric([value for _, value in labels], value)
            yield metric


def serve(agent: Agent, address: str, port: int) -> tuple[Any, threading.Thread]:
    """Serves `/metrics` on `address`:`port` (0: any free port) in a thread; (server, thread)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    try:
        return start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        raise listen_error(address, port, error) from None


def listen_error(address: str, port: int, error: OSError) -> InputError:
    """What a failed listen means, as one line naming the option to change (`--listen` or `--port`)."""
    if isinstance(error, socket.gaierror):
        return InputError(f"cannot resolve {address!r}: {error.strerror}", field="--listen")
    if error.errno == errno.EADDRINUSE:
        return InputError(f"port {port} on {address} is in use (another agent?)", field="--port")
    if error.errno == errno.EADDRNOTAVAIL:
        return InputError(f"{address} is not an address of this machine", field="--listen")
    if error.errno == errno.EACCES:
        return InputError(f"no permission to listen on port {port} (under 1024 needs privileges)", field="--port")
    return InputError(f"cannot listen on {address}:{port}: {error.strerror or error}", field="--listen")


def format_value(value: float) -> str:
    """A sample value as Prometheus' HTTP API writes it ("37", "0.5")."""
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


class Recorder:
    """Appends each tick's samples to a JSON Lines file (the agent's record, read by `fleetsched usage`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None
        self.failed = False

    def write(self, now_s: float, families: Sequence[Family]) -> bool:
        """Writes the samples at `now_s`; False (logged once) when the file cannot be written."""
        try:
            if self._file is None:
                self._file = self.path.open("a", encoding="utf-8")
            for family in families:
                for labels, value in family.samples:
                    metric = {"__name__": family.name, **dict(labels)}
                    line = {"metric": metric, "values": [[now_s, format_value(value)]]}
                    self._file.write(json.dumps(line, sort_keys=True) + "\n")
            self._file.flush()
        except OSError as error:
            if not self.failed:
                log.error("cannot write the record %s: %s", self.path, error.strerror or error)
            self.failed = True
            return False
        if self.failed:
            log.info("writing the record %s again", self.path)
        self.failed = False
        return True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def run(
    agent: Agent,
    period_s: float,
    stop: threading.Event,
    recorder: Recorder | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    """Ticks every `period_s` until `stop` is set; how many ticks ran."""
    ticks = 0
    while not stop.is_set():
        now_s = clock()
        try:
            families = agent.tick(now_s)
        except Exception:  # a bug must not take the node's telemetry down: logged, counted, next tick
            log.exception("scrape failed")
            agent.errors[("agent", "ScrapeFailed")] += 1
            families = agent.families
        if recorder is not None and not recorder.write(now_s, families):
            agent.errors[("record", "WriteFailed")] += 1
        ticks += 1
        stop.wait(max(0.0, period_s - (clock() - now_s)))
    return ticks


__all__ = ["AgentCollector", "Recorder", "format_value", "listen_error", "run", "serve"]
