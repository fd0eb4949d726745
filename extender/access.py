"""Who may call the extender's verbs: mutual TLS or a bearer token, reloaded when their files change.

kube-scheduler is the only legitimate caller of filter, prioritize, preempt and bind. Off
loopback it proves who it is with a client certificate signed by `client_ca` (its extender
`tlsConfig.certFile`/`keyFile`); any other caller may present the token in `token_file` as
`Authorization: Bearer <token>` (kube-scheduler's extender client, 1.20 to today, cannot send
one). Either credential suffices; with neither configured every caller is let in (loopback).

The server asks for a client certificate without demanding it (`CERT_OPTIONAL`): a caller
without one completes the handshake and is answered 401 in HTTP, where a demand would only
show it a TLS alert, and the health paths stay reachable. A certificate that is presented but
not signed by the CA still fails the handshake. Certificates, key, CA and token are read again
when one of their files changes (Kubernetes swaps a mounted Secret by a symlink), checked on
every new connection; a rotation caught half-written keeps the previous, working credentials.
"""

from __future__ import annotations

import hmac
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Generic, TypeVar

from scheduler.errors import InputError

log = logging.getLogger(__name__)

T = TypeVar("T")
_Signature = tuple[tuple[int, int, int, int], ...]


def _signature(paths: Sequence[str]) -> _Signature:
    """What changes when a file is rewritten or its symlink swapped: device, inode, size, mtime."""
    found = []
    for path in paths:
        stat = os.stat(path)
        found.append((stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


class Reloading(Generic[T]):
    """A value built from files, built again when any of them changes; the first build must work."""

    def __init__(self, paths: Sequence[str], build: Callable[[], T], what: str, field: str) -> None:
        self._paths = tuple(paths)
        self._build = build
        self._what = what
        self._lock = threading.Lock()
        try:
            self._seen = _signature(self._paths)
            self._value = build()
        except (OSError, ssl.SSLError, ValueError) as error:
            raise InputError(f"cannot read {what} ({', '.join(self._paths)}): {error}", field=field) from None

    def current(self) -> T:
        try:
            seen = _signature(self._paths)
        except OSError as error:  # mid-rotation: a file is briefly gone
            log.warning("%s: %s; keeping the previous one", self._what, error)
            return self._value
        with self._lock:
            if seen != self._seen:
                try:
                    self._value = self._build()
                    log.warning("%s changed on disk: reloaded", self._what)
                except (OSError, ssl.SSLError, ValueError) as error:
                    log.warning("%s changed but does not load (%s); keeping the previous one", self._what, error)
                self._seen = seen
            return self._value


def server_tls(cert: str, key: str, client_ca: str = "") -> Reloading[ssl.SSLContext]:
    """The server's TLS context, reloaded when the certificate, key or client CA changes."""

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL  # see the module docstring: a 401 rather than an alert
        return context

    return Reloading([cert, key, *([client_ca] if client_ca else [])], build, "TLS certificate", "tls_cert")


def token_file(path: str) -> Reloading[bytes]:
    """The bearer token in `path` (surrounding white space dropped), reloaded when the file changes."""

    def build() -> bytes:
        with open(path, "rb") as file:
            token = file.read().strip()
        if not token:
            raise ValueError("the token file is empty")
        return token

    return Reloading([path], build, "token file", "token_file")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a verb is refused: 401 when no credential came, 403 when a wrong one did."""

    status: HTTPStatus
    message: str


def certificate_names(certificate: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The common names and DNS names of a verified peer certificate (`getpeercert()`'s form);
    None when the peer sent none."""
    if not certificate:
        return None
    subject: Any = certificate.get("subject", ())
    names = {value for part in subject for key, value in part if key == "commonName"}
    names |= {value for kind, value in certificate.get("subjectAltName", ()) if kind == "DNS"}
    return frozenset(names)


class Access:
    """The rule for the verbs: a verified client certificate (named `client_name`, when set) or
    the right bearer token, when either is configured.

    Any certificate `client_ca` signed is a caller unless `client_name` says whose: with a CA
    that signs other clients too (the cluster's own, whose kubelets hold client certificates),
    set it to kube-scheduler's certificate's common name.
    """

    def __init__(
        self, *, client_ca: bool = False, token: Reloading[bytes] | None = None, client_name: str = ""
    ) -> None:
        self.client_ca = client_ca
        self.token = token
        self.client_name = client_name

    @property
    def open(self) -> bool:
        return not self.client_ca and self.token is None

    def check(self, peer_names: frozenset[str] | None, authorization: str | None) -> Refusal | None:
        """None when the caller may use the verbs; else the refusal to answer. `peer_names`: the
        names of the client certificate the handshake verified (None: it sent none)."""
        if self.open:
            return None
        if self.client_ca and peer_names is not None:
            refused = self._certificate(peer_names)
            if refused is None or self.token is None or authorization is None:
                return refused
        if self.token is None or authorization is None:
            wanted = "a client certificate signed by client_ca" if self.token is None else "a bearer token"
            if self.client_ca and self.token is not None:
                wanted = "a client certificate signed by client_ca or a bearer token"
            return Refusal(HTTPStatus.UNAUTHORIZED, f"Authorization: this verb needs {wanted}")
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return Refusal(HTTPStatus.UNAUTHORIZED, "Authorization: expected 'Bearer <token>'")
        # Constant time: how long the comparison takes tells nothing about the token.
        if not hmac.compare_digest(presented.strip().encode("utf-8", "replace"), self.token.current()):
            return Refusal(HTTPStatus.FORBIDDEN, "Authorization: the token is not the one configured")
        return None

    def _certificate(self, peer_names: frozenset[str]) -> Refusal | None:
        """A verified certificate: accepted unless `client_name` names another."""
        if not self.client_name or self.client_name in peer_names:
            return None
        shown = ", ".join(sorted(peer_names)) or "no name"
        return Refusal(HTTPStatus.FORBIDDEN, f"client certificate: {shown} is not {self.client_name!r}")
