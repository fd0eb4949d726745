"""The extender's HTTP server: kube-scheduler's verbs, health, readiness and Prometheus metrics.

`POST {prefix}/filter`, `/prioritize`, `/preempt`, `/bind` take the extender v1 JSON
(`extender.wire`) and hand it to an `Extender`, which holds the scheduling logic; `GET
/healthz` says the process serves, `/readyz` whether the extender's view of the cluster is
fresh (503 with its age when not), `/metrics` exports Prometheus text.

Bad input never takes the server down or earns a 500: a body that breaks the protocol gets a
400 with `{"Error": "<field>: <problem>"}`; a missing or absurd `Content-Length` a 411 or 413;
an unknown path a 404; a wrong method a 405. What kube-scheduler sends correctly but the
extender cannot place (an unknown node, a pod asking for nonsense) is answered in the verb's
own result, as kube-scheduler expects: unknown nodes as unresolvable, a bad pod in `Error`.
Only a bug inside the extender answers 500, and it is logged with its traceback.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from extender import wire
from extender.wire import BindingArgs, ExtenderArgs, FilterResult, PreemptionArgs, WireError

log = logging.getLogger(__name__)

VERBS = ("filter", "prioritize", "preempt", "bind")
#: Request latency histogram buckets, seconds (Prometheus convention: cumulative `le`).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Extender(Protocol):
    """The scheduling logic behind the verbs (the planner over the mirrored cluster)."""

    def filter(self, args: ExtenderArgs) -> FilterResult: ...

    def prioritize(self, args: ExtenderArgs) -> Mapping[str, float]: ...

    def preempt(self, args: PreemptionArgs) -> tuple[Mapping[str, Sequence[str]], Mapping[str, int]]: ...

    def bind(self, args: BindingArgs) -> str: ...

    def readiness(self) -> tuple[bool, str]:
        """Whether the extender answers (the leader, with a fresh view), and a line saying so
        (e.g. "follower (leader: NAME)", "not ready: cluster view 93.0 s old ...")."""
        ...

    def gauges(self) -> Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]:
        """Gauges to export: name -> {labels: value}, e.g. idle GPUs by pool."""
        ...


class Metrics:
    """Request counters and latency histograms per verb and code; thread-safe, Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets: dict[str, list[int]] = {verb: [0] * (len(BUCKETS) + 1) for verb in VERBS}
        self.sums: dict[str, float] = dict.fromkeys(VERBS, 0.0)

    def observe(self, verb: str, code: int, seconds: float) -> None:
        with self._lock:
            self.requests[(verb, code)] = self.requests.get((verb, code), 0) + 1
            if verb in self.buckets:
                counts = self.buckets[verb]
                for index, bound in enumerate(BUCKETS):
                    if seconds <= bound:
                        counts[index] += 1
                counts[-1] += 1
                self.sums[verb] += seconds

    def render(self, gauges: Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]) -> str:
        lines = [
            "# HELP fleetsched_extender_requests_total Requests served, by verb and HTTP status.",
            "# TYPE fleetsched_extender_requests_total counter",
        ]
        with self._lock:
            for (verb, code), count in sorted(self.requests.items()):
                lines.append(f'fleetsched_extender_requests_total{{verb="{verb}",code="{code}"}} {count}')
            lines += [
                "# HELP fleetsched_extender_request_seconds Time to answer a verb.",
                "# TYPE fleetsched_extender_request_seconds histogram",
            ]
            for verb in VERBS:
                counts = self.buckets[verb]
                for bound, count in zip(BUCKETS, counts, strict=False):
                    lines.append(f'fleetsched_extender_request_seconds_bucket{{verb="{verb}",le="{bound}"}} {count}')
                lines.append(f'fleetsched_extender_request_seconds_bucket{{verb="{verb}",le="+Inf"}} {counts[-1]}')
                lines.append(f'fleetsched_extender_request_seconds_sum{{verb="{verb}"}} {self.sums[verb]:.6f}')
                lines.append(f'fleetsched_extender_request_seconds_count{{verb="{verb}"}} {counts[-1]}')
        for name, series in sorted(gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            for labels, value in sorted(series.items()):
                text = ",".join(f'{key}="{_escape(str(item))}"' for key, item in labels)
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Handler(BaseHTTPRequestHandler):
    server: ExtenderServer
    protocol_version = "HTTP/1.1"  # keep-alive: kube-scheduler reuses its connections
    # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm and the
    # peer's delayed ACK hold each reply back about 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        elif path == "/readyz":
            ready, why = self.server.extender.readiness()
            body = f"{why}\n".encode()
            self._send(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain")
        elif path == "/metrics":
            text = self.server.metrics.render(self.server.extender.gauges())
            self._send(HTTPStatus.OK, text.encode(), "text/plain; version=0.0.4")
        elif self._verb(path) is not None:
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no such path {path!r}")

    def do_POST(self) -> None:
        started = time.perf_counter()
        path = self.path.split("?", 1)[0]
        verb = self._verb(path)
        if verb is None:
            self._drain()
            self._error(HTTPStatus.NOT_FOUND, f"no such path {path!r}; verbs: {', '.join(VERBS)}")
            return
        code = self._serve(verb)
        self.server.metrics.observe(verb, code, time.perf_counter() - started)

    def _serve(self, verb: str) -> int:
        length = self.headers.get("Content-Length")
        if length is None or not length.strip().isdigit():
            self.close_connection = True
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length: a whole number of bytes is required")
        size = int(length)
        if size > wire.MAX_BODY_BYTES:
            self.close_connection = True
            limit = f"Content-Length: at most {wire.MAX_BODY_BYTES} bytes"
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, limit)
        body = self.rfile.read(size)
        if len(body) < size:
            self.close_connection = True
            return self._error(HTTPStatus.BAD_REQUEST, f"body: {len(body)} of {size} bytes arrived")
        extender = self.server.extender
        try:
            reply: Any
            if verb == "filter":
                reply = extender.filter(wire.parse_extender_args(body)).to_json()
            elif verb == "prioritize":
                reply = wire.priorities_json(extender.prioritize(wire.parse_extender_args(body)))
            elif verb == "preempt":
                reply = wire.preemption_result_json(*extender.preempt(wire.parse_preemption_args(body)))
            else:
                reply = wire.binding_result_json(extender.bind(wire.parse_binding_args(body)))
        except WireError as error:
            return self._error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception:  # a bug in the extender: logged, answered, and the server goes on
            log.exception("extender failed on %s", verb)
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the extender failed on {verb}; see its log")
        return self._send(HTTPStatus.OK, json.dumps(reply).encode(), "application/json")

    def _verb(self, path: str) -> str | None:
        prefix = self.server.prefix
        if not path.startswith(prefix + "/"):
            return None
        verb = path[len(prefix) + 1 :]
        return verb if verb in VERBS else None

    def _drain(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit() and int(length) <= wire.MAX_BODY_BYTES:
            self.rfile.read(int(length))
        else:
            self.close_connection = True

    def _error(self, status: HTTPStatus, message: str) -> int:
        return self._send(status, json.dumps({"Error": message}).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        return int(status)


HANDSHAKE_TIMEOUT_S = 10.0


class ExtenderServer(ThreadingHTTPServer):
    """The HTTP server around one Extender; `serve_forever` in a thread, `shutdown` to stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], extender: Extender, *, prefix: str = "",
                 tls: ssl.SSLContext | None = None) -> None:
        self.extender = extender
        self.prefix = prefix.rstrip("/")
        self.metrics = Metrics()
        self.tls = tls
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, on the connection's own thread and with a time
        # limit: done on accept (a wrapped listening socket), one client that connects and
        # says nothing would hold up every other.
        if self.tls is not None:
            request.settimeout(HANDSHAKE_TIMEOUT_S)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as error:
                log.info("TLS handshake with %s failed: %s", client_address, error)
                return
            request.settimeout(None)
        super().finish_request(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.prefix}"


def serve_in_thread(server: ExtenderServer) -> Callable[[], None]:
    """Starts `server` on a daemon thread; returns the function that stops it."""
    thread = threading.Thread(target=server.serve_forever, name="fleetsched-extender", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
