"""`fleetsched agent`: the NVML collector, the kubelet client, the scrape loop and `/metrics`, started and
stopped together.

`AgentSettings` is what the command line gives, checked (`check_settings`); `run_agent` serves
`/metrics` and ticks every period until `stop` is set (SIGTERM and SIGINT set it under `serve`).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from extender.agent import DEFAULT_PORT, DEFAULT_SOCKET
from extender.agent.exporter import Recorder, run, serve
from extender.agent.kubelet import PodResourcesClient, TeamMap
from extender.agent.labels import PodLabels, Requester
from extender.agent.nvml import Nvml, NvmlCollector, real_nvml
from extender.agent.state import Agent, AgentOptions
from scheduler.errors import InputError
from scheduler.idleness import IdleRule

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How the agent runs (the command's options)."""

    node: str
    address: str = "0.0.0.0"  # a DaemonSet's metrics port is scraped from other nodes
    port: int = DEFAULT_PORT
    socket_path: str = DEFAULT_SOCKET
    kubelet_timeout_s: float = 2.0
    period_s: float = 15.0
    rule: IdleRule = field(default_factory=lambda: IdleRule(period_s=15.0, max_gap_s=45.0))
    teams: TeamMap = field(default_factory=TeamMap)
    record: str = ""
    kubeconfig: str = ""  # the API server's credentials for pod labels (teams from a label); "": in-cluster


def idle_rule(threshold_percent: float, window_s: float, period_s: float, max_gap_s: float | None) -> IdleRule:
    """The idle rule of the options (the sampling period is the scrape period; the gap three
    periods unless given); a bad value is an InputError naming the option."""
    for option, value in (("--idle-threshold-percent", threshold_percent), ("--idle-window-s", window_s),
                          ("--period-s", period_s)):  # fmt: skip
        if not value >= 0 or value == float("inf"):
            raise InputError(f"must be a finite number of at least 0, got {value}", field=option)
    if threshold_percent > 100:
        raise InputError(f"must be a percentage from 0 to 100, got {threshold_percent}",
                         field="--idle-threshold-percent")  # fmt: skip
    if period_s <= 0:
        raise InputError(f"must be more than 0, got {period_s}", field="--period-s")
    gap = 3 * period_s if max_gap_s is None else max_gap_s
    if not gap >= period_s or gap == float("inf"):
        raise InputError(f"must be a finite number of at least the period ({period_s} s), got {gap}",
                         field="--max-gap-s")  # fmt: skip
    return IdleRule(threshold_percent=threshold_percent, window_s=window_s, period_s=period_s, max_gap_s=gap)


def namespace_teams(pairs: list[str]) -> Mapping[str, str]:
    """`NAMESPACE=TEAM` pairs as a mapping; a malformed or repeated one is an InputError."""
    found: dict[str, str] = {}
    for pair in pairs:
        namespace, equals, team = pair.partition("=")
        if not equals or not namespace.strip() or not team.strip():
            raise InputError(f"must be NAMESPACE=TEAM, got {pair!r}", field="--team")
        if namespace.strip() in found:
            raise InputError(f"namespace {namespace.strip()!r} is given twice", field="--team")
        found[namespace.strip()] = team.strip()
    return found


def run_agent(
    settings: AgentSettings,
    stop: threading.Event,
    nvml: Nvml | None = None,
    clock: Callable[[], float] = time.time,
    ready: Callable[[int], None] | None = None,
    api: Requester | None = None,
) -> int:
    """Serves `/metrics` and scrapes every period until `stop` is set; how many scrapes ran.
    `ready` is told the port once the server listens (the tests pass port 0, a fake NVML and,
    for teams from a label, a fake API server); credentials that do not load are an InputError."""
    labels = None
    if settings.teams.needs_labels:
        labels = PodLabels(api if api is not None else api_server(settings.kubeconfig), settings.kubelet_timeout_s)
    collector = NvmlCollector(nvml if nvml is not None else real_nvml())
    pods = PodResourcesClient(settings.socket_path, settings.kubelet_timeout_s)
    agent = Agent(collector, pods, AgentOptions(settings.node, settings.rule, settings.teams), labels)
    try:
        server, thread = serve(agent, settings.address, settings.port)
    except InputError:  # nothing listens: let go of NVML and the kubelet's channel before saying why
        pods.close()
        collector.close()
        raise
    recorder = Recorder(settings.record) if settings.record else None
    port = int(server.server_address[1])
    log.info("agent on node %s: /metrics on %s:%d, kubelet %s, every %g s", settings.node, settings.address, port,
             settings.socket_path, settings.period_s)  # fmt: skip
    if ready is not None:
        ready(port)
    try:
        return run(agent, settings.period_s, stop, recorder, clock)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        pods.close()
        collector.close()
        if recorder is not None:
            recorder.close()


def api_server(kubeconfig: str) -> Requester:
    """The API server's client: from `kubeconfig`, else in-cluster (the pod's service account)."""
    from extender.kubeapi import Rest

    try:
        return Rest.from_config(kubeconfig or None)
    except Exception as error:  # the kubernetes client's loaders raise many kinds
        raise InputError(f"cannot load the API server's credentials: {error}", source=kubeconfig,
                         field="" if kubeconfig else "--kubeconfig") from None


def serve_until_signalled(settings: AgentSettings) -> int:
    """Runs the agent until SIGTERM or SIGINT (the command's entry)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return run_agent(settings, stop)


__all__ = ["DEFAULT_PORT", "AgentSettings", "idle_rule", "namespace_teams", "run_agent", "serve_until_signalled"]
