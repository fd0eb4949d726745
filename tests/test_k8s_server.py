"""The extender's HTTP server: the verbs' JSON, health, metrics, and bad input that never hurts it."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender import wire
from extender.server import ExtenderServer, serve_in_thread
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


@pytest.fixture
def served() -> Iterator[tuple[ExtenderServer, FakeExtender]]:
    extender = FakeExtender()
    server = ExtenderServer(("127.0.0.1", 0), extender, prefix="/extender")
    stop = serve_in_thread(server)
    try:
        yield server, extender
    finally:
        stop()


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
    assert reply == {"Nodes": None, "NodeNames": ["gpu-a"], "FailedNodes": {},
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


def test_paths_methods_and_lengths(served: tuple[ExtenderServer, FakeExtender], monkeypatch: pytest.MonkeyPatch) -> None:
    server, _ = served
    assert request(server, "POST", "/extender/schedule", b"{}")[0] == 404
    assert request(server, "POST", "/filter", b"{}")[0] == 404  # outside the prefix
    assert request(server, "GET", "/extender/filter")[0] == 405
    assert request(server, "GET", "/nowhere")[0] == 404
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", 64)
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
