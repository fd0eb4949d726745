"""`fleetsched extender`: the mirror, the planner and the HTTP server, started and stopped together."""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import policies
from extender import access
from extender.config import ExtenderConfig, exposure_problem, key_error
from extender.events import AnnotationReporter, EventPoster
from extender.governance_api import GovernanceStore
from extender.guardrails import Guardrails, attach
from extender.kubeapi import Mirror, Rest, RestApi, load_rest, requeue
from extender.lease import AlwaysLeader, LeaderElector, LeaseSettings, identity, lease_namespace
from extender.server import ExtenderServer, Limits, serve_in_thread
from extender.state import ClusterView
from extender.usage import IdleCost, UsageSettings, with_usage
from extender.verbs import GpuExtender
from extender.world import Clock, SystemClock
from scheduler.catalog import default_catalog
from scheduler.enforcement import SERVED, unenforced
from scheduler.errors import InputError
from scheduler.governance import Governance
from scheduler.governance_file import load_governance
from scheduler.model import ClusterSnapshot
from scheduler.profile import Profile

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
    leader made is in it). With a governance file, the guardrails (`extender.guardrails`) read
    the spend book back at start and on taking the lead, and the leader writes it on stopping.
    """
    loaded = prepare(config, rest)  # a mistake stops it here, before anything starts
    rules, serving = loaded.rules, loaded.serving
    catalog = default_catalog()
    clock = clock or SystemClock()
    rest = loaded.rest
    assert rest is not None  # prepare loads it unless checking only
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
    guardrails = _guardrails(rules, config, rest, api, clock) if rules is not None else None
    elector = _elector(config, rest, clock, _reader(mirror, guardrails), ask_again) if config.leader_elect else None
    extender = GpuExtender.of(view, api, catalog, loaded.profile,
                              interval_s=config.planner_interval_s, stale_after_s=config.stale_after_s, clock=clock,
                              leadership=elector or AlwaysLeader())
    extender.limit_binds(max(1, config.workers // 2))  # the other half of the workers always serve filter
    extender.requeue = lambda pods: _in_background(requeue, rest, pods, clock.now_s())
    extender.planner.on_freed = _on_freed(rest, view, clock)
    upkeep = _background(extender, guardrails)
    if config.usage_prometheus:
        _measure_idle(extender, config, upkeep)

    def stop_planning() -> None:
        upkeep.set()
        extender.planner.stop()
        mirror.stop()

    try:
        server = ExtenderServer((config.address, config.port), extender, prefix=config.prefix, **serving)
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
        if guardrails is not None and extender.leadership.is_leader():
            _save_spend(guardrails)  # before the lead passes: a successor reads what this one spent
        if elector is not None and electing is not None:
            elector.stop()  # stops leading at once, then releases the Lease for a successor
            electing.join(timeout=5.0)
        stop_server()
        stop_planning()

    return server, stop


@dataclass(frozen=True, slots=True)
class Loaded:
    """What the configuration's keys name, loaded as the extender serves with it."""

    profile: Profile
    rules: Governance | None
    serving: Mapping[str, Any]  # the server's TLS, caller checks, health listener and limits
    rest: Rest | None  # None: only checking, no kubeconfig and not in a cluster


def prepare(config: ExtenderConfig, rest: Rest | None = None, *, check_only: bool = False) -> Loaded:
    """Loads every file the configuration names (governance, profile, TLS credentials, bearer
    token, kubeconfig) as `start` serves with them: `start` calls it, and so does
    `fleetsched extender --check`, so a check finds what a start would. A mistake is one
    InputError at the configuration's key (`extender.config.key_error`). `check_only`: no
    kubeconfig outside a cluster is worth a warning only (the pod will have its service account).
    Warns when the profile leaves a governance file's rules unenforced."""
    problem = exposure_problem(config.address, config.client_ca, config.token_file)
    if problem:
        raise InputError(problem, field="address")
    rules = _at_key(config, "governance", lambda: load_governance(config.governance)) if config.governance else None
    profile = _at_key(config, "profile", lambda: policies.profile(config.profile))
    if rules is not None:
        warning = unenforced(profile, config.governance, SERVED)
        if warning:
            log.warning("%s", warning)
    for key in ("tls_cert", "tls_key", "client_ca"):  # each read first: the TLS context's error names all three
        _readable(config, key)
    serving = _at_key(config, "", lambda: _serving(config))
    if rest is None and (config.kubeconfig or not check_only or os.environ.get("KUBERNETES_SERVICE_HOST")):
        rest = _at_key(config, "kubeconfig", lambda: load_rest(config.kubeconfig))
    elif rest is None:
        log.warning("%s: no kubeconfig given, and not running in a cluster (KUBERNETES_SERVICE_HOST is not set): "
                    "the extender starts only in a pod, with its service account", config.source or "configuration")
    return Loaded(profile, rules, serving, rest)


T = TypeVar("T")


def _readable(config: ExtenderConfig, key: str) -> None:
    """An InputError at `key` when the file it names cannot be opened (none named: no error)."""
    path = str(getattr(config, key))
    if not path:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise key_error(config, key, InputError(f"cannot read {path}: {error.strerror or error}", field=key)) from None


def _at_key(config: ExtenderConfig, key: str, load: Callable[[], T]) -> T:
    """`load()`, its InputError located at the configuration's `key` (the error's own field when "")."""
    try:
        return load()
    except InputError as error:
        raise key_error(config, key or error.field, error) from None


def _guardrails(rules: Governance, config: ExtenderConfig, rest: Rest, api: RestApi, clock: Clock) -> Guardrails:
    """The guardrails of the governance file, their state read back from the API server."""
    guardrails = Guardrails(rules, clock, GovernanceStore(rest, lease_namespace(config.lease_namespace)),
                            EventPoster(api))  # fmt: skip
    try:
        guardrails.load()
    except Exception as error:  # the API server is not there yet: the lead (or the first tick) reads it
        log.warning("reading the spend book: %s", error)
    return guardrails


def _serving(config: ExtenderConfig) -> dict[str, Any]:
    """The server's TLS, caller checks, health listener and limits (credentials that do not load raise here)."""
    tls = access.server_tls(config.tls_cert, config.tls_key, config.client_ca) if config.tls_cert else None
    token = access.token_file(config.token_file) if config.token_file else None
    guard = access.Access(client_ca=bool(config.client_ca), token=token, client_name=config.client_name)
    limits = Limits(workers=config.workers, read_timeout_s=config.read_timeout_s, idle_timeout_s=config.idle_timeout_s,
                    max_body_bytes=config.max_body_bytes, backlog=config.backlog)
    health = (config.health_address, config.health_port) if config.health_port else None
    return {"tls": tls, "access": guard, "health": health, "limits": limits}


def _reader(mirror: Mirror, guardrails: Guardrails | None) -> Callable[[], None]:
    """What a new term does before it answers: reads everything afresh, the cluster and the
    spend book its last leader wrote."""

    def read() -> None:
        mirror.sync_once()
        if guardrails is not None:
            guardrails.load()

    return read


def _background(extender: GpuExtender, guardrails: Guardrails | None) -> threading.Event:
    """The planner's passes started; the guardrails put in the extender's way and their upkeep
    started; set the event returned to stop the upkeep."""
    threading.Thread(target=extender.planner.run, name="planner", daemon=True).start()
    stop = threading.Event()
    if guardrails is not None:
        attach(extender, guardrails)
        threading.Thread(target=guardrails.run, args=(extender.planner, extender.leadership.is_leader, stop,
                                                      extender.requeue), name="guardrails", daemon=True).start()
    return stop


def _measure_idle(extender: GpuExtender, config: ExtenderConfig, stop: threading.Event) -> None:
    """Idle GPU-hours and dollars per team on /metrics, from the GPU agents' metrics in Prometheus."""
    usage = IdleCost(UsageSettings(config.usage_prometheus, config.usage_window_s, config.usage_refresh_s))
    extender.more_gauges = with_usage(extender.more_gauges, usage)

    def snapshot() -> ClusterSnapshot | None:
        plan = extender.planner.current()
        return None if plan is None else plan.view.snapshot

    threading.Thread(target=usage.run, args=(snapshot, stop), name="usage", daemon=True).start()


def _save_spend(guardrails: Guardrails) -> None:
    try:
        guardrails.save(force=True)
    except Exception as error:
        log.warning("writing the spend book on stopping: %s (up to %.0f s of spend lost)", error, guardrails.persist_s)


def _requeuer(rest: Rest, view: ClusterView, clock: Clock) -> Callable[[], None]:
    """What a new leader does first: asks kube-scheduler, in the background, to try again every
    pod it failed while no leader answered (they would wait up to 90 s in its unschedulable queue)."""

    def ask_again() -> None:
        _in_background(requeue, rest, view.unbound(), clock.now_s())

    return ask_again


def _on_freed(rest: Rest, view: ClusterView, clock: Clock, every_s: float = 10.0) -> Callable[[], None]:
    """What a plan that counts GPUs an ended pod freed does: asks kube-scheduler, in the
    background, to try the pods it turned away again (at most once every `every_s`)."""
    last = [-math.inf]

    def ask_again() -> None:
        if clock.monotonic_s() - last[0] >= every_s:
            last[0] = clock.monotonic_s()
            _in_background(requeue, rest, view.unbound(), clock.now_s())

    return ask_again


def _in_background(call: Callable[..., object], *args: object) -> None:
    threading.Thread(target=call, args=args, name="requeue", daemon=True).start()


def _elector(
    config: ExtenderConfig, rest: Rest, clock: Clock, on_started: Callable[[], None], on_leading: Callable[[], None]
) -> LeaderElector:
    settings = LeaseSettings(config.lease_name, lease_namespace(config.lease_namespace), identity(),
                             config.lease_duration_s, config.renew_deadline_s, config.retry_period_s,
                             config.follow_lease)
    return LeaderElector(rest, settings, clock, on_started=on_started, on_leading=on_leading)


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
