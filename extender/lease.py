"""Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Replicas of the extender share one Lease. Each tries every `retry_period_s` to acquire it or,
holding it, to renew it; every write carries the resourceVersion it read, so of two replicas
writing at once the API server accepts one and answers the other 409 Conflict (optimistic
concurrency: no lock beyond the object itself). A replica may take the Lease from another only
once the record it observed has stood unchanged for the lease's duration, measured on its own
monotonic clock: clocks of different machines are never compared.

The leader counts as leader only while its last successful renewal is younger than
`renew_deadline_s` (below `lease_duration_s`): a leader cut off from the API server stops
planning and binding by itself, before any other replica may take the Lease. On stopping, the
leader releases the Lease (empty holder) so that a successor need not wait out the duration.
A replica that takes the Lease reads the cluster afresh, renews once more and leads from that
renewal (a large cluster's list can outlast `renew_deadline_s`); if the read or that renewal
fails it releases the Lease rather than hold it without leading.

Beside kube-scheduler in one pod (deploy/), the extender is called only by its own pod's
kube-scheduler, which runs an election of its own. With `follow` naming kube-scheduler's Lease,
a replica campaigns only while that Lease is held by its own pod (kube-scheduler's identity is
the host name, the pod's name, then `_` and a UUID) and steps down when it moves: else the
leading kube-scheduler could be calling an extender that follows, and nothing would schedule.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from extender.kubeapi import ApiError, Rest
from extender.world import AlwaysLeader, Clock, Leadership, SystemClock

__all__ = ["AlwaysLeader", "LeaderElector", "Leadership", "LeaseSettings", "identity", "lease_namespace"]

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    name: str
    namespace: str
    identity: str
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0
    follow: str = ""  # a Lease in the same namespace this replica's own pod must hold before it campaigns


def lease_namespace(configured: str) -> str:
    """The configured namespace; else $POD_NAMESPACE; else the service account's; else kube-system."""
    if configured:
        return configured
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip() or "kube-system"
    except OSError:
        return "kube-system"


def identity() -> str:
    """$POD_NAME (set from the downward API), else the host name."""
    return os.environ.get("POD_NAME") or os.uname().nodename


def micro_time(epoch_s: float) -> str:
    """A Kubernetes MicroTime."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires, renews and releases one Lease (see the module docstring); thread-safe."""

    def __init__(self, rest: Rest, settings: LeaseSettings, clock: Clock | None = None, *,
                 on_started: Callable[[], None] = lambda: None, on_leading: Callable[[], None] = lambda: None) -> None:
        self.rest = rest
        self.settings = settings
        self.clock = clock or SystemClock()
        self.on_started = on_started  # runs before a new term answers (a fresh, consistent view)
        self.on_leading = on_leading  # runs once a new term answers; quick (it delays the renewals)
        self.path = f"/apis/coordination.k8s.io/v1/namespaces/{settings.namespace}/leases"
        self._lock = threading.Lock()
        self._observed: Mapping[str, Any] | None = None  # the lease's spec as last read
        self._observed_at = 0.0  # when (monotonic) a read first returned it changed
        self._renewed_at: float | None = None  # when our last successful write began; None: not leading
        self._term = 0
        self._stop = threading.Event()

    @property
    def term(self) -> int:
        return self._term

    def is_leader(self) -> bool:
        with self._lock:
            renewed = self._renewed_at
        return renewed is not None and self.clock.monotonic_s() - renewed < self.settings.renew_deadline_s

    def time_left_s(self) -> float:
        """Seconds until this replica stops counting as leader (its last renewal plus
        `renew_deadline_s`, less now); 0 when it does not lead."""
        with self._lock:
            renewed = self._renewed_at
        if renewed is None:
            return 0.0
        return max(0.0, renewed + self.settings.renew_deadline_s - self.clock.monotonic_s())

    def leader(self) -> str:
        """The holder last seen; "" when none, or when it was this replica and it leads no more."""
        with self._lock:
            holder = str((self._observed or {}).get("holderIdentity") or "")
        return "" if holder == self.settings.identity and not self.is_leader() else holder

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this replica holds the lease afterwards."""
        started = self.clock.monotonic_s()
        leading = self.is_leader()
        if not self._attempt(started):
            if leading and not self.is_leader():
                log.warning("lost the lead: not renewed within %.1f s", self.settings.renew_deadline_s)
            return self.is_leader()
        if not leading:
            return self._begin_term()
        with self._lock:
            self._renewed_at = started  # when the write began: the holder errs on the short side
        return self.is_leader()

    def _attempt(self, started: float) -> bool:
        """Reads and, when this replica may, writes the lease; any failure is "not written"."""
        try:
            return self._followed_is_ours() and self._write(started)
        except Exception as error:
            log.warning("lease %s/%s: %s", self.settings.namespace, self.settings.name, error)
            return False

    def _begin_term(self) -> bool:
        """The lease was just written: reads the cluster afresh (`on_started`), then renews once
        more and dates the term from that renewal, for the read may outlast `renew_deadline_s`.
        When either fails, gives the lease up: held by a replica that does not lead, it would
        keep every other replica from leading."""
        try:
            self.on_started()
        except Exception:
            log.exception("taking the lead failed; giving the lease up")
            self._give_up()
            return False
        renewed = self.clock.monotonic_s()
        if not self._attempt(renewed):
            log.warning("could not renew the lease after reading the cluster; giving it up")
            self._give_up()
            return False
        with self._lock:
            self._term += 1
            self._renewed_at = renewed
        log.warning("leading as %s (term %d)", self.settings.identity, self._term)
        self.on_leading()
        return self.is_leader()

    def _followed_is_ours(self) -> bool:
        """Whether this replica may campaign: no Lease to follow, or this pod holds it. When it
        does not, a leader steps down at once (and releases its Lease for the right replica)."""
        if not self.settings.follow:
            return True
        try:
            lease = self.rest.request("GET", f"{self.path}/{self.settings.follow}",
                                      timeout_s=self.settings.renew_deadline_s)
            holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        except ApiError as error:
            if error.status != 404:
                raise
            holder = ""
        me = self.settings.identity
        if holder == me or holder.startswith(f"{me}_"):
            return True
        if self.is_leader():
            log.warning("stepping down: lease %s is held by %r, not this pod", self.settings.follow, holder)
            self.release()
        return False

    def _write(self, started: float) -> bool:
        """Reads the lease and writes this replica into it when it may; False when it may not."""
        me = self.settings.identity
        try:
            lease = self.rest.request("GET", f"{self.path}/{self.settings.name}",
                                      timeout_s=self.settings.renew_deadline_s)
        except ApiError as error:
            if error.status != 404:
                raise
            return self._create(started)
        # The record was seen when the answer came, not when the request began: the holder may
        # have renewed while a slow GET was under way, and its lease runs from that renewal.
        seen_at = self.clock.monotonic_s()
        spec: Mapping[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        with self._lock:
            if spec != self._observed:
                self._observed, self._observed_at = spec, seen_at
            if holder != me:
                self._renewed_at = None  # someone else holds it: we stop at once, whatever we thought
            duration_s = float(spec.get("leaseDurationSeconds") or self.settings.lease_duration_s)
            if holder and holder != me and self._observed_at + duration_s > seen_at:
                return False
        now = micro_time(self.clock.now_s())
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {**self._spec(now), "acquireTime": spec.get("acquireTime") if holder == me else now,
                    "leaseTransitions": transitions if holder == me else transitions + 1}
        metadata = {**lease["metadata"], "name": self.settings.name, "namespace": self.settings.namespace}
        return self._put({**lease, "metadata": metadata, "spec": new_spec}, started)

    def _spec(self, now: str) -> dict[str, Any]:
        return {"holderIdentity": self.settings.identity, "acquireTime": now, "renewTime": now,
                "leaseDurationSeconds": math.ceil(self.settings.lease_duration_s), "leaseTransitions": 0}

    def _create(self, started: float) -> bool:
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                "spec": self._spec(micro_time(self.clock.now_s()))}
        try:
            created = self.rest.request("POST", self.path, body, timeout_s=self.settings.renew_deadline_s)
        except ApiError as error:
            if error.status == 409:  # another replica created it first
                return False
            raise
        self._saw(created, started)
        return True

    def _put(self, lease: Mapping[str, Any], started: float) -> bool:
        """An update guarded by the resourceVersion read: 409 means another replica wrote first."""
        try:
            written = self.rest.request("PUT", f"{self.path}/{self.settings.name}", lease,
                                        timeout_s=self.settings.renew_deadline_s)
        except ApiError as error:
            if error.status == 409:
                with self._lock:
                    self._renewed_at = None
                return False
            raise
        self._saw(written, started)
        return True

    def _saw(self, lease: Mapping[str, Any] | None, started: float) -> None:
        with self._lock:
            self._observed, self._observed_at = (lease or {}).get("spec") or {}, started

    def release(self) -> None:
        """Stops leading at once and empties the lease's holder, so that a successor starts now."""
        with self._lock:
            leading, self._renewed_at = self._renewed_at is not None, None
        if leading:
            self._empty_holder()

    def _give_up(self) -> None:
        """Stops leading (if it did) and empties the lease's holder if it is still this replica."""
        with self._lock:
            self._renewed_at = None
        self._empty_holder()

    def _empty_holder(self) -> None:
        try:
            lease = self.rest.request("GET", f"{self.path}/{self.settings.name}", timeout_s=2.0)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.settings.identity:
                return
            now = micro_time(self.clock.now_s())
            released = {**spec, "holderIdentity": "", "leaseDurationSeconds": 1, "renewTime": now}
            self.rest.request("PUT", f"{self.path}/{self.settings.name}", {**lease, "spec": released}, timeout_s=2.0)
        except Exception as error:  # the lease then expires by itself
            log.warning("releasing lease %s: %s", self.settings.name, error)

    def run(self) -> None:
        """Tries every `retry_period_s` until `stop()`, then releases the lease."""
        while not self._stop.is_set():
            self.try_acquire_or_renew()
            self._stop.wait(self.settings.retry_period_s)
        self.release()

    def stop(self) -> None:
        self._stop.set()
