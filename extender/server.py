"""The extender's HTTP server: kube-scheduler's verbs, health, readiness and Prometheus metrics.

`POST {prefix}/filter`, `/prioritize`, `/preempt`, `/bind` take the extender v1 JSON
(`extender.wire`) and hand it to an `Extender`, which holds the scheduling logic; `GET
/healthz` says the process serves, `/readyz` whether the extender's view of the cluster is
fresh and it leads (503 with the reason when not), `/metrics` exports Prometheus text. A second, optional
health listener (for the kubelet's probes on the pod IP while the verbs stay on loopback)
serves only those three GETs; a verb there is a 404.

One asyncio loop owns every connection: it accepts (with a real listen backlog), completes TLS
handshakes, reads requests (`extender.http1`: `read_timeout_s` for a request once begun,
`idle_timeout_s` between requests on a kept-alive connection, a `max_body_bytes` limit) and
writes answers, so a slow or silent client costs a coroutine, never a thread. Complete verb
requests go to a bounded pool of `workers` threads that parse the JSON and call the Extender;
readiness and metrics have a thread of their own, so probes are not queued behind verbs, and
/healthz is answered by the loop itself. HTTP/1.1 keep-alive is kept: kube-scheduler reuses
its connections. Verbs need the credentials `extender.access` checks (401 without, 403 wrong).

Bad input never takes the server down or earns a 500: a body that breaks the protocol gets a
400 with `{"Error": "<field>: <problem>"}`; a missing `Content-Length` or a chunked body a
411, a body over the limit a 413, a request too slow a 408; an unknown path a 404; a wrong
method a 405. What kube-scheduler sends correctly but the extender cannot place (an unknown
node, a pod asking for nonsense) is answered in the verb's own result, as kube-scheduler
expects. Only a bug inside the extender answers 500, and it is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

from extender import wire
from extender.access import Access, Reloading, certificate_names
from extender.gauges import GAUGE_HELP
from extender.http1 import MAX_HEAD_BYTES, Answer, Head, RequestError, read_body, read_head
from extender.wire import BindingArgs, ExtenderArgs, FilterResult, PreemptionArgs, WireError

log = logging.getLogger(__name__)

VERBS = ("filter", "prioritize", "preempt", "bind")
#: Request latency histogram buckets, seconds (Prometheus convention: cumulative `le`).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Open connections per listener; beyond it a new one is closed at once (each may buffer a body).
MAX_CONNECTIONS = 4096
#: The health listener (on the pod IP, unauthenticated) serves the kubelet and a scraper or two.
MAX_HEALTH_CONNECTIONS = 64
#: The most a request outside the verbs may carry (it is read and dropped): a peer that may not
#: call the verbs cannot make the server buffer more than this per connection.
MAX_OTHER_BODY_BYTES = 4096


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


@dataclass(frozen=True, slots=True)
class Limits:
    """How much the server gives any one client: threads, time, bytes, pending connections."""

    workers: int = 16
    read_timeout_s: float = 5.0
    idle_timeout_s: float = 30.0
    max_body_bytes: int = 1024 * 1024
    backlog: int = 128


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
            if name in GAUGE_HELP:
                lines.append(f"# HELP {name} {GAUGE_HELP[name]}")
            lines.append(f"# TYPE {name} gauge")
            for labels, value in sorted(series.items()):
                text = ",".join(f'{key}="{_escape(str(item))}"' for key, item in labels)
                lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")
        return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _listen(address: tuple[str, int], backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(backlog)
    except OSError:
        listener.close()
        raise
    listener.setblocking(False)
    return listener


class ExtenderServer:
    """The HTTP server around one Extender; `serve_forever` in a thread, `shutdown` to stop.

    The listening sockets are bound here, so `server_address` (and a port 0's real port) is
    known before serving starts. `tls` is the server's (reloading) TLS context; `access` the
    rule for the verbs; `health` the second listener's address, or None for none.
    """

    def __init__(self, address: tuple[str, int], extender: Extender, *, prefix: str = "",
                 tls: Reloading[ssl.SSLContext] | None = None, access: Access | None = None,
                 health: tuple[str, int] | None = None, limits: Limits | None = None) -> None:
        self.extender = extender
        self.prefix = prefix.rstrip("/")
        self.metrics = Metrics()
        self.tls = tls
        self.access = access or Access()
        self.limits = limits or Limits()
        self._sockets = [_listen(address, self.limits.backlog)]
        if health is not None:
            try:
                self._sockets.append(_listen(health, self.limits.backlog))
            except OSError:
                self._sockets[0].close()
                raise
        self._workers = ThreadPoolExecutor(self.limits.workers, thread_name_prefix="extender-worker")
        self._probes = ThreadPoolExecutor(1, thread_name_prefix="extender-probe")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._connections: list[set[asyncio.Task[None]]] = [set(), set()]

    @property
    def server_address(self) -> tuple[str, int]:
        host, port = self._sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def health_address(self) -> tuple[str, int] | None:
        if len(self._sockets) < 2:
            return None
        host, port = self._sockets[1].getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}{self.prefix}"

    def serve_forever(self) -> None:
        asyncio.run(self._serve())

    def shutdown(self) -> None:
        """Stops serving (from another thread); open connections are closed."""
        self._started.wait(10)
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    def server_close(self) -> None:
        for listener in self._sockets:
            listener.close()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._probes.shutdown(wait=False, cancel_futures=True)

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        context = self._front_context()
        servers = []
        for index, listener in enumerate(self._sockets):
            verbs = index == 0
            servers.append(await asyncio.start_server(
                functools.partial(self._connection, verbs=verbs), sock=listener, backlog=self.limits.backlog,
                limit=MAX_HEAD_BYTES,
                ssl=context if verbs else None,
                ssl_handshake_timeout=self.limits.read_timeout_s if verbs and context else None,
            ))
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            for server in servers:
                server.close()
            for task in [task for tasks in self._connections for task in tasks]:
                task.cancel()

    def _front_context(self) -> ssl.SSLContext | None:
        """The context every handshake starts with; it swaps in the current (reloaded) one.

        OpenSSL calls the server-name callback on every ClientHello, with or without SNI (kube-
        scheduler sends none to an IP address): there the connection takes the newest context.
        """
        if self.tls is None:
            return None
        tls = self.tls
        front = tls.current()

        def newest(connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext) -> None:
            current = tls.current()
            if connection.context is not current:
                connection.context = current

        front.sni_callback = newest
        return front

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, verbs: bool) -> None:
        task = asyncio.current_task()
        tasks = self._connections[0 if verbs else 1]
        if task is None or len(tasks) >= (MAX_CONNECTIONS if verbs else MAX_HEALTH_CONNECTIONS):
            log.warning("%d connections open: refusing one more", len(tasks))
            writer.transport.abort()
            return
        tasks.add(task)
        try:
            await self._exchange(reader, writer, verbs)
            writer.close()  # what is still buffered is sent, then the connection closed
            async with asyncio.timeout(self.limits.read_timeout_s):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError) as error:
            log.debug("connection from %s ended: %s", writer.get_extra_info("peername"), error)
        except asyncio.CancelledError:
            pass  # shutting down: the connection's task ends quietly
        finally:
            tasks.discard(task)
            writer.transport.abort()  # at once, whatever is left: a peer that does not read, or shutdown

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, verbs: bool) -> None:
        """Requests answered in turn until the peer closes, idles out or an answer closes."""
        limits = self.limits
        certified = certificate_names(writer.get_extra_info("peercert"))
        wait_s = limits.read_timeout_s  # a new connection has a request to send at once
        while True:
            head: Head | None = None
            try:
                head = await read_head(reader, wait_s, limits.read_timeout_s)
                if head is None:
                    return
                answer = await self._answer(head, reader, writer, verbs, certified)
            except RequestError as error:
                answer = Answer.error(error.status, error.message, close=error.close)
            keep_alive = head is not None and head.keep_alive and not answer.close
            writer.write(answer.encode(head.version if head else "HTTP/1.1", keep_alive))
            async with asyncio.timeout(limits.read_timeout_s):  # a peer that does not read
                await writer.drain()
            if not keep_alive:
                return
            wait_s = limits.idle_timeout_s

    async def _answer(self, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, verbs: bool,
                      certified: frozenset[str] | None) -> Answer:
        path = head.path
        verb = self._verb(path) if verbs else None
        if verb is not None and head.method == "POST":
            started = time.perf_counter()
            try:
                answer = await self._verb_answer(verb, head, reader, writer, certified)
            except RequestError as error:
                answer = Answer.error(error.status, error.message, close=error.close)
            self.metrics.observe(verb, int(answer.status), time.perf_counter() - started)
            return answer
        size = head.content_length(min(self.limits.max_body_bytes, MAX_OTHER_BODY_BYTES), required=False)
        if size:  # read past a body no one wants: the connection stays usable
            await read_body(reader, size, self.limits.read_timeout_s)
        if head.method == "GET" and path == "/healthz":
            return Answer(HTTPStatus.OK, b"ok\n", "text/plain")
        if head.method == "GET" and path in ("/readyz", "/metrics"):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._probes, self._probe, path)
        if verb is not None:
            return Answer.error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes POST")
        if path in ("/healthz", "/readyz", "/metrics"):
            return Answer.error(HTTPStatus.METHOD_NOT_ALLOWED, f"{path} takes GET")
        return Answer.error(HTTPStatus.NOT_FOUND, f"no such path {path!r}; verbs: {', '.join(VERBS)}")

    async def _verb_answer(self, verb: str, head: Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           certified: frozenset[str] | None) -> Answer:
        refusal = self.access.check(certified, head.headers.get("authorization"))
        if refusal is not None:  # refused before its body is read: an unknown peer cannot make us buffer it
            log.info("refused %s from %s: %s", verb, writer.get_extra_info("peername"), refusal.message)
            challenge = (("WWW-Authenticate", "Bearer"),) if refusal.status == HTTPStatus.UNAUTHORIZED else ()
            return Answer.error(refusal.status, refusal.message, close=True, extra=challenge)
        size = head.content_length(self.limits.max_body_bytes)
        if head.headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await read_body(reader, size, self.limits.read_timeout_s)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._workers, self._call, verb, body)

    def _call(self, verb: str, body: bytes) -> Answer:
        """On a worker thread: the body parsed, the Extender asked, the reply encoded."""
        extender = self.extender
        try:
            reply: Any
            if verb == "filter":
                args = wire.parse_extender_args(body)
                reply = wire.filter_result_json(extender.filter(args), args)
            elif verb == "prioritize":
                reply = wire.priorities_json(extender.prioritize(wire.parse_extender_args(body)))
            elif verb == "preempt":
                reply = wire.preemption_result_json(*extender.preempt(wire.parse_preemption_args(body)))
            else:
                reply = wire.binding_result_json(extender.bind(wire.parse_binding_args(body)))
            return Answer.json(reply)
        except WireError as error:
            return Answer.error(HTTPStatus.BAD_REQUEST, str(error))
        except Exception:  # a bug in the extender: logged, answered, and the server goes on
            log.exception("extender failed on %s", verb)
            return Answer.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the extender failed on {verb}; see its log")

    def _probe(self, path: str) -> Answer:
        try:
            if path == "/readyz":
                ready, why = self.extender.readiness()
                body = f"{why}\n".encode()
                return Answer(HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE, body, "text/plain")
            text = self.metrics.render(self.extender.gauges())
            return Answer(HTTPStatus.OK, text.encode(), "text/plain; version=0.0.4")
        except Exception:
            log.exception("extender failed on %s", path)
            return Answer.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"the extender failed on {path}; see its log")

    def _verb(self, path: str) -> str | None:
        prefix = self.prefix
        if not path.startswith(prefix + "/"):
            return None
        verb = path[len(prefix) + 1 :]
        return verb if verb in VERBS else None


def serve_in_thread(server: ExtenderServer) -> Callable[[], None]:
    """Starts `server` on a daemon thread; returns the function that stops it."""
    thread = threading.Thread(target=server.serve_forever, name="fleetsched-extender", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)
        server.server_close()

    return stop
