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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Generic, TypeVar

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


class Access:
    """The rule for the verbs: a verified client certificate or the right bearer token, when either is configured."""

    def __init__(self, *, client_ca: bool = False, token: Reloading[bytes] | None = None) -> None:
        self.client_ca = client_ca
        self.token = token

    @property
    def open(self) -> bool:
        return not self.client_ca and self.token is None

    def check(self, peer_certificate: bool, authorization: str | None) -> Refusal | None:
        """None when the caller may use the verbs; else the refusal to answer."""
        if self.open or (self.client_ca and peer_certificate):
            return None
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
