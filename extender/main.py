"""`fleetsched extender`: the mirror, the planner and the HTTP server, started and stopped together."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

import policies
from extender import access
from extender.config import ExtenderConfig, exposure_problem
from extender.events import AnnotationReporter
from extender.kubeapi import Mirror, Rest, RestApi, requeue
from extender.lease import AlwaysLeader, LeaderElector, LeaseSettings, identity, lease_namespace
from extender.server import ExtenderServer, Limits, serve_in_thread
from extender.state import ClusterView
from extender.verbs import GpuExtender
from extender.world import Clock, SystemClock
from scheduler.catalog import default_catalog
from scheduler.errors import InputError

log = logging.getLogger(__name__)


def start(
    config: ExtenderConfig, rest: Rest | None = None, clock: Clock | None = None
) -> tuple[ExtenderServer, Callable[[], None]]:
    """Starts everything; returns the server (its `url`) and the function that stops it all.

    The mirror lists nodes and pods once before the server answers; if the API server cannot
    be reached then, the server still starts and reports not ready until the mirror catches up.
    Credentials that do not load, or verbs off loopback without any, stop it before anything starts.
    With `leader_elect`, the replica plans and binds only while it holds the Lease; each time it
    takes the lead it first lists everything again (a consistent read: every binding the last
    leader made is in it).
    """
    problem = exposure_problem(config.address, config.client_ca, config.token_file)
    if problem:
        raise InputError(problem, field="address")
    tls = access.server_tls(config.tls_cert, config.tls_key, config.client_ca) if config.tls_cert else None
    token = access.token_file(config.token_file) if config.token_file else None
    guard = access.Access(client_ca=bool(config.client_ca), token=token, client_name=config.client_name)
    limits = Limits(workers=config.workers, read_timeout_s=config.read_timeout_s, idle_timeout_s=config.idle_timeout_s,
                    max_body_bytes=config.max_body_bytes, backlog=config.backlog)
    health = (config.health_address, config.health_port) if config.health_port else None
    catalog = default_catalog()
    clock = clock or SystemClock()
    rest = rest or Rest.from_config(config.kubeconfig or None)
    view = ClusterView(config.pools, catalog, config.scheduler_name, clock)
    api = RestApi(rest)
    view.on_pod_read = AnnotationReporter(api).check
    # The API server sends a watch bookmark just before it ends a watch (1.20 sends none sooner):
    # watches well under the staleness limit keep a quiet, healthy view fresh.
    mirror = Mirror(rest, view, watch_timeout_s=max(1, min(300, int(config.stale_after_s / 3))))
    try:
        mirror.sync_once()
    except Exception as error:  # the watch threads keep trying with backoff
        log.warning("first list from the API server failed: %s", error)
    mirror.start()
    ask_again = _requeuer(rest, view, clock)
    elector = _elector(config, rest, clock, mirror, ask_again) if config.leader_elect else None
    extender = GpuExtender.of(view, api, catalog, policies.profile(config.profile),
                              interval_s=config.planner_interval_s, stale_after_s=config.stale_after_s, clock=clock,
                              leadership=elector or AlwaysLeader())
    extender.limit_binds(max(1, config.workers // 2))  # the other half of the workers always serve filter
    extender.requeue = lambda pods: _in_background(requeue, rest, pods, clock.now_s())
    planner = extender.planner
    planning = threading.Thread(target=planner.run, name="planner", daemon=True)
    planning.start()

    def stop_planning() -> None:
        planner.stop()
        mirror.stop()

    try:
        server = ExtenderServer((config.address, config.port), extender, prefix=config.prefix, tls=tls, access=guard,
                                health=health, limits=limits)
    except OSError:  # the port is taken, say
        stop_planning()
        raise
    stop_server = serve_in_thread(server)
    # Serving first: the pods asked for again on taking the lead find the verbs answering.
    electing = threading.Thread(target=elector.run, name="leader-election", daemon=True) if elector else None
    if electing is not None:
        electing.start()
    else:
        ask_again()

    def stop() -> None:
        if elector is not None and electing is not None:
            elector.stop()  # stops leading at once, then releases the Lease for a successor
            electing.join(timeout=5.0)
        stop_server()
        stop_planning()

    return server, stop


def _requeuer(rest: Rest, view: ClusterView, clock: Clock) -> Callable[[], None]:
    """What a new leader does first: asks kube-scheduler, in the background, to try again every
    pod it failed while no leader answered (they would wait up to 90 s in its unschedulable queue)."""

    def ask_again() -> None:
        _in_background(requeue, rest, view.unbound(), clock.now_s())

    return ask_again


def _in_background(call: Callable[..., object], *args: object) -> None:
    threading.Thread(target=call, args=args, name="requeue", daemon=True).start()


def _elector(
    config: ExtenderConfig, rest: Rest, clock: Clock, mirror: Mirror, on_leading: Callable[[], None]
) -> LeaderElector:
    settings = LeaseSettings(config.lease_name, lease_namespace(config.lease_namespace), identity(),
                             config.lease_duration_s, config.renew_deadline_s, config.retry_period_s,
                             config.follow_lease)
    return LeaderElector(rest, settings, clock, on_started=mirror.sync_once, on_leading=on_leading)


def serve(config: ExtenderConfig) -> None:
    """Serves until SIGTERM or SIGINT."""
    # The server's loop and worker threads wait for the GIL when they wake; with the default
    # 5 ms switch interval, a replan holding the GIL delays every read, hand-over and write of
    # kube-scheduler's requests by up to that much. 0.5 ms keeps answers quick while planning.
    sys.setswitchinterval(0.0005)
    server, stop = start(config)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    health = server.health_address
    log.warning("fleetsched extender serving on %s (profile %s); health on %s", server.url, config.profile,
                f"http://{health[0]}:{health[1]}" if health else "the verbs' port only")
    done.wait()
    stop()
