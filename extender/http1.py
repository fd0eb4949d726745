"""HTTP/1.1 requests read from an asyncio stream and answers written to it: bounded, timed and strict.

Only what kube-scheduler, probes and Prometheus send is accepted: a request line, at most
`MAX_HEADERS` header lines in `MAX_HEAD_BYTES`, and a body announced by `Content-Length`.
Anything else is a `RequestError` carrying the status to answer (400, 408, 411, 413, 431, 505)
and whether the connection must close because the stream can no longer be trusted to be at
the start of the next request. `Transfer-Encoding` (chunked) is refused with 411: Go's client
sends a length with every extender call, and a server that reads only one framing cannot be
fooled by a request that carries both.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class RequestError(Exception):
    """A request that cannot be served; answered with `status` and `message`, then maybe closed."""

    def __init__(self, status: HTTPStatus, message: str, *, close: bool = True) -> None:
        self.status = status
        self.message = message
        self.close = close
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Head:
    """A request line and its headers (names lower case; a repeated header's values joined by commas)."""

    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def keep_alive(self) -> bool:
        tokens = {token.strip().lower() for token in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens

    def content_length(self, max_body_bytes: int, *, required: bool = True) -> int:
        """The announced body size; RequestError when absent (and `required`), not a number, or over the limit."""
        if "transfer-encoding" in self.headers:
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Transfer-Encoding: not accepted; send Content-Length")
        raw = self.headers.get("content-length")
        if raw is None:
            if not required:
                return 0  # a request without a length has no body (RFC 9112 6.3)
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length: a whole number of bytes is required")
        values = {value.strip() for value in raw.split(",")}
        value = values.pop()
        if values or not value.isdigit() or not value.isascii():
            raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length: a whole number of bytes is required")
        if len(value) > 12 or int(value) > max_body_bytes:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Content-Length: at most {max_body_bytes} bytes")
        return int(value)


async def read_head(reader: asyncio.StreamReader, wait_s: float, read_timeout_s: float) -> Head | None:
    """The next request's head: up to `wait_s` for its first byte, then `read_timeout_s` for the rest.

    None when the peer closed or stayed silent for `wait_s` between requests (nothing to answer).
    """
    try:
        async with asyncio.timeout(wait_s):
            first = await reader.readexactly(1)
            while first in (b"\r", b"\n"):  # stray line ends before a request are allowed (RFC 9112 2.2)
                first = await reader.readexactly(1)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        return None
    try:
        async with asyncio.timeout(read_timeout_s):
            rest = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"request head: not whole in {read_timeout_s:g} s") from None
    except asyncio.LimitOverrunError:
        raise RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"head: over {MAX_HEAD_BYTES} bytes") from None
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return parse_head(first + rest)


def parse_head(raw: bytes) -> Head:
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN or not parts[1].startswith("/"):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"request line: not HTTP ({_shown(lines[0])})")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED if version.startswith("HTTP/") else HTTPStatus.BAD_REQUEST
        raise RequestError(status, f"request line: {_shown(version)} is not HTTP/1.1 or HTTP/1.0")
    if len(lines) - 1 > MAX_HEADERS:
        raise RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"headers: more than {MAX_HEADERS}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN:  # also refuses obsolete folded lines
            raise RequestError(HTTPStatus.BAD_REQUEST, f"header: not 'Name: value' ({_shown(line)})")
        key = name.lower()
        value = value.strip(" \t")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Head(method, target, version, headers)


async def read_body(reader: asyncio.StreamReader, size: int, read_timeout_s: float) -> bytes:
    try:
        async with asyncio.timeout(read_timeout_s):
            return await reader.readexactly(size)
    except TimeoutError:
        raise RequestError(HTTPStatus.REQUEST_TIMEOUT, f"body: not complete within {read_timeout_s:g} s") from None
    except asyncio.IncompleteReadError as error:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"body: {len(error.partial)} of {size} bytes arrived") from None


def _shown(text: str) -> str:
    """At most 80 characters of a peer's text, control characters escaped: one short log line."""
    return json.dumps(text[:80])[1:-1]


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: status, body and its type, whether to close after it, extra headers."""

    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    close: bool = False
    extra: tuple[tuple[str, str], ...] = ()

    @classmethod
    def error(cls, status: HTTPStatus, message: str, *, close: bool = False,
              extra: tuple[tuple[str, str], ...] = ()) -> Answer:
        return cls(status, json.dumps({"Error": message}).encode(), close=close, extra=extra)

    @classmethod
    def json(cls, document: Any) -> Answer:
        return cls(HTTPStatus.OK, json.dumps(document).encode())

    def encode(self, version: str, keep_alive: bool) -> bytes:
        lines = [f"HTTP/1.1 {self.status.value} {self.status.phrase}", f"Content-Type: {self.content_type}",
                 f"Content-Length: {len(self.body)}"]  # fmt: skip
        lines += [f"{name}: {value}" for name, value in self.extra]
        if self.close or not keep_alive:
            lines.append("Connection: close")
        elif version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body
