"""`fleetsched extender`: the mirror, the planner and the HTTP server, started and stopped together."""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
from collections.abc import Callable

import policies
from extender.config import ExtenderConfig
from extender.kubeapi import Mirror, Rest, RestApi, requeue
from extender.lease import AlwaysLeader, LeaderElector, LeaseSettings, identity, lease_namespace
from extender.server import ExtenderServer, serve_in_thread
from extender.state import ClusterView
from extender.verbs import GpuExtender
from extender.world import Clock, SystemClock
from scheduler.catalog import default_catalog

log = logging.getLogger(__name__)


def start(
    config: ExtenderConfig, rest: Rest | None = None, clock: Clock | None = None
) -> tuple[ExtenderServer, Callable[[], None]]:
    """Starts everything; returns the server (its `url`) and the function that stops it all.

    The mirror lists nodes and pods once before the server answers; if the API server cannot
    be reached then, the server still starts and reports not ready until the mirror catches up.
    With `leader_elect`, the replica plans and binds only while it holds the Lease; each time it
    takes the lead it first lists everything again (a consistent read: every binding the last
    leader made is in it).
    """
    catalog = default_catalog()
    clock = clock or SystemClock()
    rest = rest or Rest.from_config(config.kubeconfig or None)
    view = ClusterView(config.pools, catalog, config.scheduler_name, clock)
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
    extender = GpuExtender.of(view, RestApi(rest), catalog, policies.profile(config.profile),
                              interval_s=config.planner_interval_s, stale_after_s=config.stale_after_s, clock=clock,
                              leadership=elector or AlwaysLeader())
    extender.requeue = lambda pods: _in_background(requeue, rest, pods, clock.now_s())
    planner = extender.planner
    planning = threading.Thread(target=planner.run, name="planner", daemon=True)
    planning.start()
    tls = None
    if config.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(config.tls_cert, config.tls_key)
    server = ExtenderServer((config.address, config.port), extender, prefix=config.prefix, tls=tls)
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
        planner.stop()
        mirror.stop()

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
                             config.lease_duration_s, config.renew_deadline_s, config.retry_period_s)
    return LeaderElector(rest, settings, clock, on_started=mirror.sync_once, on_leading=on_leading)


def serve(config: ExtenderConfig) -> None:
    """Serves until SIGTERM or SIGINT."""
    # A request thread that blocks on its socket waits for the GIL when it wakes; with the
    # default 5 ms switch interval, a replan holding the GIL delays every read and write of
    # kube-scheduler's requests by up to that much. 0.5 ms keeps answers quick while planning.
    sys.setswitchinterval(0.0005)
    server, stop = start(config)
    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: done.set())
    log.warning("fleetsched extender serving on %s (profile %s)", server.url, config.profile)
    done.wait()
    stop()
