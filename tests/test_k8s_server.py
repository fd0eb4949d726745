"""The extender's HTTP server: the verbs' JSON, health, metrics, bad input that never hurts it, and slow clients that cost no worker."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender.server import MAX_HEALTH_CONNECTIONS, ExtenderServer, Limits, serve_in_thread
from extender.wire import BindingArgs, ExtenderArgs, FilterResult, PreemptionArgs

POD = {"metadata": {"name": "train-0", "namespace": "ml", "uid": "u-1"}, "spec": {"containers": []}}


class FakeExtender:
    """Answers from fixed rules and records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.fail = False
        self.ready = (True, "ready: cluster view 1.5 s old")

    def filter(self, args: ExtenderArgs) -> FilterResult:
        self._record("filter", args)
        keep = tuple(name for name in args.node_names if name.startswith("gpu"))
        return FilterResult(keep, unresolvable={n: "no GPU" for n in args.node_names if n not in keep})

    def prioritize(self, args: ExtenderArgs) -> Mapping[str, float]:
        self._record("prioritize", args)
        return {name: 12.0 if name == "gpu-a" else 3.4 for name in args.node_names}

    def preempt(self, args: PreemptionArgs) -> tuple[Mapping[str, Sequence[str]], Mapping[str, int]]:
        self._record("preempt", args)
        return {node: uids[:1] for node, uids in args.victims.items() if uids}, args.pdb_violations

    def bind(self, args: BindingArgs) -> str:
        self._record("bind", args)
        return "" if args.node.startswith("gpu") else f"node {args.node} is not a GPU node"

    def readiness(self) -> tuple[bool, str]:
        return self.ready

    def gauges(self) -> Mapping[str, Mapping[tuple[tuple[str, str], ...], float]]:
        return {"fleetsched_idle_gpus": {(("pool", "h100-od"),): 6.0}}

    def _record(self, verb: str, args: object) -> None:
        if self.fail:
            raise RuntimeError("boom")
        self.calls.append((verb, args))


@contextmanager
def serving(extender: Any = None, **options: Any) -> Iterator[ExtenderServer]:
    server = ExtenderServer(("127.0.0.1", 0), extender or FakeExtender(), prefix="/extender", **options)
    stop = serve_in_thread(server)
    try:
        yield server
    finally:
        stop()


@pytest.fixture
def served() -> Iterator[tuple[ExtenderServer, FakeExtender]]:
    extender = FakeExtender()
    with serving(extender) as server:
        yield server, extender


def request(server: ExtenderServer, method: str, path: str, body: bytes | None = None,
            headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def post(server: ExtenderServer, verb: str, document: Any) -> tuple[int, Any]:
    status, body = request(server, "POST", f"/extender/{verb}", json.dumps(document).encode(),
                           {"Content-Type": "application/json"})
    return status, json.loads(body)


def test_filter_and_prioritize_speak_kube_schedulers_json(served: tuple[ExtenderServer, FakeExtender]) -> None:
    server, extender = served
    status, reply = post(server, "filter", {"Pod": POD, "Nodes": None, "NodeNames": ["gpu-a", "cpu-b"]})
    assert status == 200
    assert reply == {"Nodes": None, "NodeNames": ["gpu-a"], "FailedNodes": {"cpu-b": "no GPU"},  # 1.20 reads these only
                     "FailedAndUnresolvableNodes": {"cpu-b": "no GPU"}, "Error": ""}
    status, reply = post(server, "prioritize", {"Pod": POD, "Nodes": None, "NodeNames": ["gpu-a", "gpu-b"]})
    assert status == 200 and reply == [{"Host": "gpu-a", "Score": 10}, {"Host": "gpu-b", "Score": 3}]
    assert [verb for verb, _ in extender.calls] == ["filter", "prioritize"]


def test_bind_and_preempt(served: tuple[ExtenderServer, FakeExtender]) -> None:
    server, _ = served
    binding = {"PodName": "train-0", "PodNamespace": "ml", "PodUID": "u-1", "Node": "gpu-a"}
    assert post(server, "bind", binding) == (200, {"Error": ""})
    assert post(server, "bind", {**binding, "Node": "cpu-b"}) == (200, {"Error": "node cpu-b is not a GPU node"})
    victims = {"gpu-a": {"Pods": [{"UID": "v1"}, {"UID": "v2"}], "NumPDBViolations": 0},
               "gpu-b": {"Pods": [], "NumPDBViolations": 0}}
    status, reply = post(server, "preempt", {"Pod": POD, "NodeNameToVictims": None, "NodeNameToMetaVictims": victims})
    assert status == 200
    assert reply == {"NodeNameToMetaVictims": {"gpu-a": {"Pods": [{"UID": "v1"}], "NumPDBViolations": 0}}}


def test_health_readiness_and_metrics(served: tuple[ExtenderServer, FakeExtender]) -> None:
    server, extender = served
    assert request(server, "GET", "/healthz") == (200, b"ok\n")
    assert request(server, "GET", "/readyz") == (200, b"ready: cluster view 1.5 s old\n")
    extender.ready = (False, "not ready: cluster view 93.0 s old")
    assert request(server, "GET", "/readyz") == (503, b"not ready: cluster view 93.0 s old\n")
    extender.ready = (False, "follower (leader: fleetsched-1)")
    assert request(server, "GET", "/readyz") == (503, b"follower (leader: fleetsched-1)\n")
    post(server, "filter", {"Pod": POD, "NodeNames": ["gpu-a"]})
    request(server, "POST", "/extender/filter", b"{", {"Content-Type": "application/json"})
    status, body = request(server, "GET", "/metrics")
    text = body.decode()
    assert status == 200
    assert 'fleetsched_extender_requests_total{verb="filter",code="200"} 1' in text
    assert 'fleetsched_extender_requests_total{verb="filter",code="400"} 1' in text
    assert 'fleetsched_extender_request_seconds_count{verb="filter"} 2' in text
    assert 'fleetsched_idle_gpus{pool="h100-od"} 6.0' in text
    assert "# HELP fleetsched_idle_gpus Free GPUs of ready, schedulable nodes" in text  # every gauge says what it is


BAD = {
    "not-json": (b"{nope", 400, "body: not JSON"),
    "array": (b"[]", 400, "body: must be a JSON object"),
    "no-pod": (b'{"NodeNames": ["gpu-a"]}', 400, "Pod: must be an object, got null"),
    "no-nodes": (json.dumps({"Pod": POD}).encode(), 400, "NodeNames: missing"),
    "name-not-string": (json.dumps({"Pod": POD, "NodeNames": ["gpu-a", 7]}).encode(), 400, "NodeNames[1]: must be a string"),
    "not-utf8": (b'{"Pod": "\xff"}', 400, "body: not UTF-8"),
}


@pytest.mark.parametrize(("body", "status", "message"), list(BAD.values()), ids=list(BAD))
def test_malformed_bodies_get_a_400_naming_the_field(
    served: tuple[ExtenderServer, FakeExtender], body: bytes, status: int, message: str
) -> None:
    server, extender = served
    got, reply = request(server, "POST", "/extender/filter", body, {"Content-Type": "application/json"})
    assert got == status
    assert json.loads(reply)["Error"].startswith(message)
    assert extender.calls == []


def test_paths_methods_and_lengths() -> None:
    with serving(limits=Limits(max_body_bytes=64)) as server:
        assert request(server, "POST", "/extender/schedule", b"{}")[0] == 404
        assert request(server, "POST", "/filter", b"{}")[0] == 404  # outside the prefix
        assert request(server, "GET", "/extender/filter")[0] == 405
        assert request(server, "PUT", "/extender/filter", b"{}")[0] == 405
        assert request(server, "GET", "/nowhere")[0] == 404
        status, reply = request(server, "POST", "/extender/filter", b"x" * 65)
        assert status == 413 and b"at most 64 bytes" in reply
        assert request(server, "GET", "/healthz")[0] == 200


def test_a_missing_length_is_411_and_a_short_body_400(served: tuple[ExtenderServer, FakeExtender]) -> None:
    server, _ = served
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=10) as raw:
        raw.sendall(b"POST /extender/filter HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 411")
    with socket.create_connection((str(host), port), timeout=10) as raw:
        raw.sendall(b"POST /extender/filter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}")
        raw.shutdown(socket.SHUT_WR)
        assert raw.recv(4096).startswith(b"HTTP/1.1 400")
    with socket.create_connection((str(host), port), timeout=10) as raw:
        raw.sendall(b"\x00\x01garbage that is not HTTP\r\n\r\n")
        assert b"400" in raw.recv(4096)  # the standard library answers a non-HTTP line in HTTP/0.9 style
    assert request(server, "GET", "/healthz")[0] == 200


def test_a_bug_in_the_extender_is_a_500_and_the_server_goes_on(served: tuple[ExtenderServer, FakeExtender]) -> None:
    server, extender = served
    extender.fail = True
    status, reply = post(server, "filter", {"Pod": POD, "NodeNames": ["gpu-a"]})
    assert status == 500 and "see its log" in reply["Error"]
    extender.fail = False
    assert post(server, "filter", {"Pod": POD, "NodeNames": ["gpu-a"]})[0] == 200


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
_BODIES = st.one_of(
    st.binary(max_size=300),
    _JSON.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"Pod": _JSON, "NodeNames": _JSON}).map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"PodName": _JSON, "PodNamespace": _JSON, "PodUID": _JSON, "Node": _JSON})
    .map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries({"Pod": _JSON, "NodeNameToMetaVictims": _JSON}).map(lambda value: json.dumps(value).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(verb=st.sampled_from(["filter", "prioritize", "preempt", "bind"]), body=_BODIES)
def test_fuzzed_bodies_never_get_a_5xx_nor_stop_the_server(
    served: tuple[ExtenderServer, FakeExtender], verb: str, body: bytes
) -> None:
    server, _ = served
    status, reply = request(server, "POST", f"/extender/{verb}", body, {"Content-Type": "application/json"})
    assert status in (200, 400), (status, reply)
    document = json.loads(reply)
    if status == 400:
        assert document["Error"] and "\n" not in document["Error"]
    assert request(server, "GET", "/healthz")[0] == 200


def exchange(server: ExtenderServer, raw: bytes, *, timeout_s: float = 10) -> bytes:
    """`raw` sent on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(server.server_address, timeout=timeout_s) as connection:
        connection.sendall(raw)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


FILTER = json.dumps({"Pod": POD, "NodeNames": ["gpu-a"]}).encode()


def filter_request(extra: str = "") -> bytes:
    return (f"POST /extender/filter HTTP/1.1\r\nHost: x\r\nContent-Length: {len(FILTER)}\r\n{extra}\r\n").encode() + FILTER


def test_one_connection_carries_many_requests() -> None:
    with serving() as server:
        raw = filter_request() + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + filter_request("Connection: close\r\n")
        answers = exchange(server, raw)
    assert answers.count(b"HTTP/1.1 200 OK") == 3 and answers.count(b'"NodeNames": ["gpu-a"]') == 2
    assert answers.count(b"Connection: close") == 1 and answers.endswith(b'"Error": ""}')


def test_http_1_0_closes_unless_kept_alive_and_expect_continue_is_honoured() -> None:
    with serving() as server:
        assert exchange(server, b"GET /healthz HTTP/1.0\r\n\r\n").endswith(b"Connection: close\r\n\r\nok\n")
        with socket.create_connection(server.server_address, timeout=10) as connection:
            connection.sendall(b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert b"Connection: keep-alive" in connection.recv(4096)
            connection.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # still open: answered
            assert connection.recv(4096).startswith(b"HTTP/1.1 200")
        with socket.create_connection(server.server_address, timeout=10) as connection:
            head = f"POST /extender/filter HTTP/1.1\r\nContent-Length: {len(FILTER)}\r\nExpect: 100-continue\r\n\r\n"
            connection.sendall(head.encode())
            assert connection.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
            connection.sendall(FILTER)
            assert connection.recv(4096).startswith(b"HTTP/1.1 200 OK")


MALFORMED = {
    "garbage": (b"\x00\x01garbage that is not HTTP\r\n\r\n", b"400", b"request line: not HTTP"),
    "no-version": (b"GET /healthz\r\n\r\n", b"400", b"request line"),
    "absolute-form": (b"GET http://x/healthz HTTP/1.1\r\n\r\n", b"400", b"request line"),
    "http-2": (b"GET /healthz HTTP/2.0\r\n\r\n", b"505", b"HTTP/2.0 is not HTTP/1.1"),
    "header-without-colon": (b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", b"400", b"header: not 'Name: value'"),
    "folded-header": (b"GET /healthz HTTP/1.1\r\nHost: x\r\n  folded\r\n\r\n", b"400", b"header"),
    "too-many-headers": (b"GET /healthz HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", b"431", b"more than 100"),
    "head-too-big": (b"GET /healthz HTTP/1.1\r\nX-A: " + b"a" * 70_000 + b"\r\n\r\n", b"431", b"over 65536 bytes"),
    "chunked": (b"POST /extender/filter HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{}{}{\r\n0\r\n\r\n", b"411",
                b"Transfer-Encoding: not accepted"),
    "chunked-and-length": (b"POST /extender/filter HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}",
                           b"411", b"Transfer-Encoding"),
    "huge-length": (b"POST /extender/filter HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n{}", b"413",
                    b"at most 1048576 bytes"),
    "negative-length": (b"POST /extender/filter HTTP/1.1\r\nContent-Length: -5\r\n\r\n", b"411", b"Content-Length"),
    "two-lengths": (b"POST /extender/filter HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", b"411",
                    b"Content-Length"),
    "no-length": (b"POST /extender/filter HTTP/1.1\r\nHost: x\r\n\r\n", b"411", b"Content-Length"),
    "short-body": (b"POST /extender/filter HTTP/1.1\r\nContent-Length: 100\r\n\r\n{}", b"400", b"2 of 100 bytes"),
    "bad-json": (b"POST /extender/filter HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope", b"400", b"body: not JSON"),
}


@pytest.mark.parametrize(("raw", "status", "message"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_requests_get_a_4xx_and_the_server_goes_on(raw: bytes, status: bytes, message: bytes) -> None:
    extender = FakeExtender()
    with serving(extender) as server:
        with socket.create_connection(server.server_address, timeout=10) as connection:
            connection.sendall(raw)
            connection.shutdown(socket.SHUT_WR)  # the short body ends here
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        assert message in answer
        assert extender.calls == []
        assert request(server, "GET", "/healthz") == (200, b"ok\n")


def test_silent_and_slow_clients_hold_no_worker() -> None:
    """One worker, 200 connections that say nothing and 20 that stall mid-request: a filter is still answered at once."""
    with serving(limits=Limits(workers=1, read_timeout_s=5.0)) as server:
        silent = [socket.create_connection(server.server_address) for _ in range(200)]
        stalled = [socket.create_connection(server.server_address) for _ in range(20)]
        for connection in stalled:
            connection.sendall(b"POST /extender/filter HTTP/1.1\r\nContent-Length: 500\r\n\r\n{")
        try:
            started = time.perf_counter()
            for _ in range(5):
                assert post(server, "filter", {"Pod": POD, "NodeNames": ["gpu-a"]})[0] == 200
            assert time.perf_counter() - started < 2.0
        finally:
            for connection in silent + stalled:
                connection.close()


def test_a_request_begun_must_end_within_the_read_timeout() -> None:
    with serving(limits=Limits(read_timeout_s=0.3, idle_timeout_s=60)) as server:
        started = time.perf_counter()
        answer = exchange(server, b"POST /extender/filter HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
        assert answer.startswith(b"HTTP/1.1 408") and b"body: not complete within 0.3 s" in answer
        answer = exchange(server, b"GET /healthz HTTP/1.1\r\nHost")
        assert answer.startswith(b"HTTP/1.1 408") and b"request head" in answer
        assert exchange(server, b"") == b""  # a new connection that says nothing is closed, unanswered
        assert time.perf_counter() - started < 5


def test_a_kept_alive_connection_is_closed_after_the_idle_timeout() -> None:
    with serving(limits=Limits(read_timeout_s=5, idle_timeout_s=0.3)) as server, \
            socket.create_connection(server.server_address, timeout=10) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        assert connection.recv(4096).endswith(b"ok\n")
        started = time.perf_counter()
        assert connection.recv(4096) == b""  # closed by the server
        assert 0.2 < time.perf_counter() - started < 3


def test_the_listen_backlog_is_the_configured_one() -> None:
    import subprocess

    with serving(limits=Limits(backlog=77)) as server:
        port = server.server_address[1]
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    assert listing.split()[2] == "77"  # a listening socket's Send-Q is its backlog


def test_the_health_listener_serves_probes_and_no_verb() -> None:
    extender = FakeExtender()
    with serving(extender, health=("127.0.0.1", 0)) as server:
        assert server.health_address is not None
        host, port = server.health_address

        def ask(method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection(host, port, timeout=10)
            try:
                connection.request(method, path, body=body)
                response = connection.getresponse()
                return response.status, response.read()
            finally:
                connection.close()

        assert ask("GET", "/healthz") == (200, b"ok\n")
        assert ask("GET", "/readyz") == (200, b"ready: cluster view 1.5 s old\n")
        extender.ready = (False, 40.0)
        assert ask("GET", "/readyz")[0] == 503
        assert b"fleetsched_idle_gpus" in ask("GET", "/metrics")[1]
        assert ask("POST", "/extender/filter", FILTER)[0] == 404
        assert ask("POST", "/extender/bind", b"{}")[0] == 404
        assert ask("GET", "/extender/filter")[0] == 404
        status, body = ask("POST", "/metrics", b"")
        assert status == 405 and b"/metrics takes GET" in body  # a probe's path with the wrong method
        assert extender.calls == []
        assert post(server, "filter", {"Pod": POD, "NodeNames": ["gpu-a"]})[0] == 200  # the verbs' port still serves


def test_probes_do_not_wait_behind_busy_workers() -> None:
    release = threading.Event()

    class Slow(FakeExtender):
        def bind(self, args: BindingArgs) -> str:
            release.wait(10)
            return ""

    binding = json.dumps({"PodName": "p", "PodNamespace": "ml", "PodUID": "u", "Node": "gpu-a"}).encode()
    with serving(Slow(), limits=Limits(workers=1)) as server:
        stuck = threading.Thread(target=request, args=(server, "POST", "/extender/bind", binding))
        stuck.start()
        try:
            time.sleep(0.2)
            started = time.perf_counter()
            assert request(server, "GET", "/readyz")[0] == 200
            assert request(server, "GET", "/healthz")[0] == 200
            assert time.perf_counter() - started < 2
        finally:
            release.set()
            stuck.join()


def test_full_nodes_are_echoed_in_the_filter_reply() -> None:
    nodes = [{"metadata": {"name": name, "labels": {"k": name}}, "status": {}} for name in ("gpu-a", "cpu-b", "gpu-c")]
    with serving() as server:
        status, reply = post(server, "filter", {"Pod": POD, "Nodes": {"metadata": {}, "items": nodes}, "NodeNames": None})
    assert status == 200
    assert reply["Nodes"] == {"metadata": {}, "items": [nodes[0], nodes[2]]}
    assert reply["FailedAndUnresolvableNodes"] == {"cpu-b": "no GPU"}


def test_the_unauthenticated_health_listener_bounds_what_a_peer_can_make_it_hold() -> None:
    with serving(FakeExtender(), health=("127.0.0.1", 0)) as server:
        assert server.health_address is not None
        host, port = server.health_address
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        with socket.create_connection((host, port), timeout=10) as connection:
            connection.sendall(big)  # announced, never sent: refused on its length, nothing buffered
            assert connection.recv(65536).startswith(b"HTTP/1.1 413")
        held = [socket.create_connection((host, port), timeout=10) for _ in range(MAX_HEALTH_CONNECTIONS)]
        try:
            time.sleep(0.3)  # every one accepted and counted
            with socket.create_connection((host, port), timeout=10) as extra:
                extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                try:
                    answered = extra.recv(65536)
                except ConnectionResetError:  # the server aborts it: a reset is a close too
                    answered = b""
                assert answered == b""  # closed at once, unanswered: one over the limit
        finally:
            for connection in held:
                connection.close()
        time.sleep(0.3)
        with socket.create_connection((host, port), timeout=10) as again:
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert again.recv(65536).startswith(b"HTTP/1.1 200")
