"""The `fleetsched agent` verb: one per GPU node, it exports NVML telemetry with each device's pod and team
and detects allocated-but-idle GPUs (extender.agent; docs/agent.md). Returns (exit code, text).

A bad option stops it with one line naming the option (exit 2); `--check` checks the options (the
address resolves, the files named can be read or written) and prints what the agent would do,
without touching NVML or the kubelet.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import TYPE_CHECKING

from extender.agent import DEFAULT_PORT, DEFAULT_SOCKET
from extender.translate import TeamRule
from fleetsched.usage_record import check_writable
from scheduler.errors import InputError
from scheduler.governance_file import load_governance

if TYPE_CHECKING:
    from extender.agent.main import AgentSettings

Output = tuple[int, str]


def add_agent_verbs(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds `agent` under the command's verbs."""
    agent = verbs.add_parser("agent", help="the GPU node agent: NVML metrics per pod and team, allocated-but-idle GPUs")
    agent.add_argument("--listen", default="0.0.0.0", metavar="ADDRESS",
                       help="address /metrics listens on (default: 0.0.0.0)")
    agent.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port of /metrics (default: {DEFAULT_PORT})")
    agent.add_argument("--kubelet-socket", default=DEFAULT_SOCKET, metavar="PATH",
                       help=f"the kubelet's PodResources socket (default: {DEFAULT_SOCKET})")
    agent.add_argument("--kubelet-timeout-s", type=float, default=2.0, metavar="SECONDS",
                       help="timeout of one List call (default: 2)")
    agent.add_argument("--node-name", default="", metavar="NAME",
                       help="the node's name, the Hostname label (default: $NODE_NAME, else the host name)")
    agent.add_argument("--period-s", type=float, default=15.0, metavar="SECONDS",
                       help="seconds between scrapes (default: 15)")
    agent.add_argument("--idle-threshold-percent", type=float, default=5.0, metavar="PERCENT",
                       help="utilisation under this is quiet (default: 5)")
    agent.add_argument("--idle-window-s", type=float, default=1800.0, metavar="SECONDS",
                       help="a quiet run this long is idle (default: 1800)")
    agent.add_argument("--max-gap-s", type=float, default=None, metavar="SECONDS",
                       help="a silence longer than this ends a quiet run (default: three periods)")
    agent.add_argument("--record", default="", metavar="FILE",
                       help="append every scrape to FILE (JSON Lines that `fleetsched usage` reads)")
    agent.add_argument("--team", action="append", default=[], metavar="NAMESPACE=TEAM",
                       help="the team of a namespace's pods (repeatable; default: the namespace is the team)")
    agent.add_argument("--team-label", default="", metavar="LABEL",
                       help="the team is this pod label, read from the API server (needs `get pods`)")
    agent.add_argument("--governance", default="", metavar="FILE",
                       help="governance file (TOML): its team_from rule, as the extender applies it")
    agent.add_argument("--kubeconfig", default="", metavar="FILE",
                       help="the API server's credentials for pod labels (default: in-cluster)")
    agent.add_argument("--check", action="store_true", help="check the options, print the settings and exit")
    agent.set_defaults(run=run_agent_verb)


def agent_settings(args: argparse.Namespace) -> AgentSettings:
    """The settings of the parsed options; InputError naming the option when one is wrong."""
    from extender.agent.kubelet import TeamMap  # grpc, pynvml and prometheus_client load only for the agent
    from extender.agent.main import AgentSettings, idle_rule, namespace_teams

    _check_listen(args.listen, args.port)
    if not args.kubelet_timeout_s > 0:
        raise InputError(f"must be more than 0, got {args.kubelet_timeout_s}", field="--kubelet-timeout-s")
    rule = idle_rule(args.idle_threshold_percent, args.idle_window_s, args.period_s, args.max_gap_s)
    team_rule = TeamRule()
    if args.governance:
        governance = load_governance(args.governance)
        team_rule = TeamRule(governance.team_from, governance.team_label)
    if args.team_label:
        if args.governance and team_rule.source == "namespace":
            raise InputError(f"{args.governance} takes teams from namespaces; give one or the other",
                             field="--team-label")  # fmt: skip
        team_rule = TeamRule("label", args.team_label)
    _check_files(args.kubeconfig, args.record)
    node = args.node_name or os.environ.get("NODE_NAME", "") or os.uname().nodename
    return AgentSettings(node=node, address=args.listen, port=args.port, socket_path=args.kubelet_socket,
                         kubelet_timeout_s=args.kubelet_timeout_s, period_s=args.period_s, rule=rule,
                         teams=TeamMap(team_rule, namespace_teams(args.team)), record=args.record,
                         kubeconfig=args.kubeconfig)  # fmt: skip


def _check_listen(address: str, port: int) -> None:
    """The port is one a server can name (0 would be any free port: nothing could scrape it) and
    the address resolves; whether it is this machine's and the port free is known only at start."""
    if not 1 <= port <= 65535:
        raise InputError(f"must be a port number from 1 to 65535, got {port}", field="--port")
    try:
        socket.getaddrinfo(address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = error.strerror if isinstance(error, socket.gaierror) else "not a host name"
        raise InputError(f"cannot resolve {address!r}: {reason}", field="--listen") from None


def _check_files(kubeconfig: str, record: str) -> None:
    """The kubeconfig can be read and the record written (appended to), as the agent will at start."""
    if kubeconfig:
        try:
            with open(kubeconfig, "rb"):
                pass
        except OSError as error:
            raise InputError(f"cannot read it: {error.strerror or error}", source=kubeconfig,
                             field="--kubeconfig") from None  # fmt: skip
    if record:
        check_writable(record, "--record", append=True)


def describe(settings: AgentSettings) -> str:
    rule = settings.rule
    teams = ", ".join(f"{ns}={team}" for ns, team in sorted(settings.teams.namespaces.items())) or "none"
    return (f"agent on node {settings.node}: /metrics on {settings.address}:{settings.port}, kubelet "
            f"{settings.socket_path}, every {rule.period_s:g} s; idle under {rule.threshold_percent:g} % for "
            f"{rule.window_s:g} s (gap {rule.max_gap_s:g} s); teams from {_teams_from(settings)}, "
            f"namespace teams: {teams}; record: {settings.record or 'none'}")


def _teams_from(settings: AgentSettings) -> str:
    rule = settings.teams.rule
    if rule.source == "namespace":
        return "namespace"
    return f"label {rule.label} (API server: {settings.kubeconfig or 'in-cluster'})"


def run_agent_verb(args: argparse.Namespace) -> Output:
    from extender.agent.main import serve_until_signalled

    settings = agent_settings(args)
    if args.check:
        return 0, describe(settings)
    logging.getLogger().setLevel(logging.INFO)
    serve_until_signalled(settings)
    return 0, ""


__all__ = ["add_agent_verbs", "agent_settings", "run_agent_verb"]
