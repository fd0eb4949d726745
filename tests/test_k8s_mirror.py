"""The mirror's list and watch (pages, bookmarks, resume, relist only on 410), staleness, and the server over TLS."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import urllib3

from extender.kubeapi import ApiError, Mirror, Rest, requeue
from extender.main import start
from extender.state import ClusterView
from extender.wire import BindingArgs, ExtenderArgs
from scheduler.catalog import default_catalog
from tests.e2e.controlplane import local_extender
from tests.test_k8s_extender import NOW, ON_DEMAND, FakeClock, extender, pod
from tests.test_k8s_extender import node as node_of

CATALOG = default_catalog()


def node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version, "labels": {"nvidia.com/gpu.product": "H100-80GB"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}


Step = Mapping[str, Any] | Exception | Callable[[], object]  # a callable runs between two events


class ScriptedRest(Rest):
    """The API server as scripted: each list request takes the next page (or error) of `pages`,
    each watch the next script of `watches` (events, then perhaps an error). When the watches
    run out it says so (`done`) and holds the last watch open until the test ends."""

    def __init__(self, pages: list[Step], watches: list[list[Step]]) -> None:
        super().__init__("https://unused.invalid", verify=False)
        self.pages = pages
        self.watches = watches
        self.lists: list[str] = []
        self.watched: list[str] = []
        self.done = threading.Event()
        self.ended = threading.Event()

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.lists.append(path)
        step = self.pages.pop(0)
        if isinstance(step, Exception):
            raise step
        assert not callable(step), "a list page is data"
        return step

    def stream(self, path: str, timeout_s: float) -> Iterator[Mapping[str, Any]]:
        self.watched.append(path)
        if not self.watches:
            self.done.set()
            self.ended.wait(10)
            return
        for step in self.watches.pop(0):
            if isinstance(step, Exception):
                raise step
            if callable(step):
                step()
                continue
            yield step


def page(version: str, *names: str, token: str = "") -> dict[str, Any]:
    return {"metadata": {"resourceVersion": version, "continue": token}, "items": [node(name, version) for name in names]}


def mirrored(api: ScriptedRest, view: ClusterView | None = None, mirror: Mirror | None = None
             ) -> tuple[ClusterView, Mirror]:
    """Runs the node watch of a Mirror over `api` until the script is played out."""
    view = view or (mirror.view if mirror else ClusterView((), CATALOG, "fleetsched"))
    mirror = mirror or Mirror(api, view, page_size=2)
    thread = threading.Thread(target=mirror._run, args=("node",), daemon=True)
    thread.start()
    assert api.done.wait(10), "the mirror stopped before the script ended"
    mirror.stop()
    api.ended.set()
    return view, mirror


def versions(paths: list[str]) -> list[str]:
    return [path.split("resourceVersion=")[1].split("&")[0] for path in paths]


def test_a_list_comes_in_pages_and_keeps_no_managed_fields() -> None:
    first = page("7", "n-1", "n-2", token="next/1")
    first["items"][0]["metadata"]["managedFields"] = [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]
    watched = node("n-4", "9")
    watched["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    api = ScriptedRest([first, page("7", "n-3")], [[{"type": "ADDED", "object": watched}]])
    view, _ = mirrored(api)
    assert api.lists == ["/api/v1/nodes?limit=2", "/api/v1/nodes?limit=2&continue=next%2F1"]
    assert set(view.view().snapshot.nodes) == {"n-1", "n-2", "n-3", "n-4"}
    stored = view._store("node")
    assert all("managedFields" not in raw["metadata"] for raw in stored.values())
    assert stored["n-1"]["metadata"]["name"] == "n-1" and "allowWatchBookmarks=true" in api.watched[0]
    assert versions(api.watched) == ["7", "9"]  # the list's version, then the last event's


def test_an_expired_continue_token_starts_the_list_again() -> None:
    api = ScriptedRest([page("7", "n-1", "n-2", token="t"), ApiError(410, "continue token expired"),
                        page("8", "n-1", token="u"), page("8", "n-3")], [])
    view, _ = mirrored(api)
    assert api.lists == ["/api/v1/nodes?limit=2", "/api/v1/nodes?limit=2&continue=t",
                         "/api/v1/nodes?limit=2", "/api/v1/nodes?limit=2&continue=u"]
    assert set(view.view().snapshot.nodes) == {"n-1", "n-3"}  # the second list alone: n-2 is gone
    assert versions(api.watched) == ["8"]


def test_only_410_gone_lists_again_any_other_failure_resumes_the_watch() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    api = ScriptedRest(
        [page("10", "n-1"), page("40", "n-1", "n-2")],
        [
            [{"type": "ADDED", "object": node("n-2", "12")}, OSError("connection reset")],
            [ApiError(500, "etcdserver: request timed out")],
            [{"type": "MODIFIED", "object": node("n-2", "13")}, urllib3.exceptions.ProtocolError("broken")],
            [gone],
        ],
    )
    view, _ = mirrored(api)
    assert api.lists == ["/api/v1/nodes?limit=2", "/api/v1/nodes?limit=2"]  # once at start, once after 410
    assert versions(api.watched) == ["10", "12", "12", "13", "40"]
    assert set(view.view().snapshot.nodes) == {"n-1", "n-2"}



class Recorded(ClusterView):
    """A view that records the node names it holds after every list and watch event."""

    def __init__(self) -> None:
        super().__init__((), CATALOG, "fleetsched")
        self.history: list[set[str]] = []

    def replace(self, kind: str, objects: Any, *version: str) -> None:
        super().replace(kind, objects, *version)
        self.history.append(set(self._nodes))

    def apply(self, kind: str, event: str, obj: Mapping[str, Any], **options: Any) -> bool:
        applied = super().apply(kind, event, obj, **options)
        self.history.append(set(self._nodes))
        return applied


def test_events_older_than_a_relist_from_another_thread_do_not_bring_back_what_it_deleted() -> None:
    view = Recorded()
    mirror = Mirror(ScriptedRest([], []), view, page_size=2)
    # The watch from 10 lags: n-2 was modified at 11 and deleted at 12, and a new leader's relist
    # (at 12, without n-2) lands before the watch delivers those events.
    api = ScriptedRest(
        [page("10", "n-1", "n-2"), page("12", "n-1"), page("12")],  # the nodes, then the relist: nodes, pods
        [[mirror.sync_once, {"type": "MODIFIED", "object": node("n-2", "11")},
          {"type": "DELETED", "object": node("n-2", "12")}],
         [{"type": "ADDED", "object": node("n-3", "13")}]],
    )
    mirror.rest = api
    mirrored(api, mirror=mirror)
    relisted = view.history.index({"n-1"})
    assert all("n-2" not in names for names in view.history[relisted:])  # never back, not even for a moment
    assert view.history[-1] == {"n-1", "n-3"}
    assert versions(api.watched) == ["10", "12", "13"]  # the lagging watch ended; the next went on from the relist


def test_events_newer_than_a_relist_that_it_overwrote_come_again_from_the_watch_after_it() -> None:
    view = Recorded()
    mirror = Mirror(ScriptedRest([], []), view, page_size=2)
    # The watch is ahead of the relist: n-3 was added at 13, after the list's version 12.
    api = ScriptedRest(
        [page("10", "n-1"), page("12", "n-1"), page("12")],
        [[{"type": "ADDED", "object": node("n-3", "13")}, mirror.sync_once,
          {"type": "MODIFIED", "object": node("n-1", "14")}],
         [{"type": "ADDED", "object": node("n-3", "13")}, {"type": "MODIFIED", "object": node("n-1", "14")}]],
    )
    mirror.rest = api
    mirrored(api, mirror=mirror)
    assert view.history[-1] == {"n-1", "n-3"}  # the list had dropped n-3; the watch from 12 brought it back
    assert view._store("node")["n-1"]["metadata"]["resourceVersion"] == "14"
    # From 12, the API server replays 13 and 14 (as scripted); from 14, as the watch left off, it would not.
    assert versions(api.watched) == ["10", "12", "14"]


def test_a_bookmark_or_a_cleanly_ended_watch_keeps_a_quiet_view_fresh_a_broken_one_does_not() -> None:
    clock = FakeClock(NOW)
    view = ClusterView((), CATALOG, "fleetsched", clock)
    view.replace("pod", [])
    bookmark = {"type": "BOOKMARK", "object": {"kind": "Node", "metadata": {"resourceVersion": "55"}}}
    ages: list[float] = []

    class Quiet(ScriptedRest):
        def stream(self, path: str, timeout_s: float) -> Iterator[Mapping[str, Any]]:
            ages.append(view.age_s())
            if self.watches:
                clock.monotonic += 20.0  # 20 s of a quiet watch (the pods' watch keeps up meanwhile)
                view.touch("pod")
            yield from super().stream(path, timeout_s)

    api = Quiet([page("50", "n-1")], [[bookmark, OSError("reset")], [OSError("reset")], []])
    mirrored(api, view)
    assert ages == [0.0, 0.0, 20.0, 0.0]  # the bookmark refreshed, the broken watch did not, the clean end did
    assert versions(api.watched) == ["50", "55", "55", "55"]
    assert api.lists == ["/api/v1/nodes?limit=2"]


def test_past_stale_after_s_readiness_and_the_verbs_fail_closed() -> None:
    clock = FakeClock(NOW)
    waiting = pod("a", 1)
    ext, view, api = extender([node_of("od-1", labels=ON_DEMAND)], [waiting], clock=clock)
    assert ext.readiness()[0] and ext.filter(ExtenderArgs(waiting, ("od-1",))).node_names == ("od-1",)
    clock.monotonic += 29.0
    # A filter for a pod the mirror has not seen is no news from the API server: the age stands.
    assert ext.filter(ExtenderArgs(pod("b", 1), ("od-1",))).node_names == ("od-1",)
    assert view.age_s() == 29.0
    clock.monotonic += 2.0
    ready, why = ext.readiness()
    assert not ready and why == "not ready: cluster view 31.0 s old (stale after 30 s)"
    refused = ext.filter(ExtenderArgs(pod("c", 1), ("od-1",)))
    assert refused.node_names == () and refused.error.startswith("fleetsched promises nothing now: not ready")
    assert ext.bind(BindingArgs("a", "ml", "uid-a", "od-1")).startswith("fleetsched binds nothing now")
    assert ext.prioritize(ExtenderArgs(waiting, ("od-1",))) == {} and api.bound == {}
    view.touch("node")
    view.touch("pod")  # the watches speak again
    assert ext.readiness()[0] and ext.bind(BindingArgs("a", "ml", "uid-a", "od-1")) == ""


def test_the_server_speaks_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = replace(local_extender(), tls_cert=str(cert), tls_key=str(key), leader_elect=False)
    server, stop = start(config, Rest("http://127.0.0.1:9", verify=False))  # no API server: not ready, but serving
    try:
        host, port = server.server_address[:2]
        silent = socket.create_connection((str(host), port))  # connects, never says a word
        trusted = ssl.create_default_context(cafile=str(cert))
        trusted.check_hostname = False
        secure = http.client.HTTPSConnection(str(host), port, context=trusted, timeout=5)
        secure.request("GET", "/healthz")
        assert secure.getresponse().read() == b"ok\n"
        secure.close()
        plain = http.client.HTTPConnection(str(host), port, timeout=5)
        try:
            plain.request("GET", "/healthz")
            answered = plain.getresponse().status
        except (http.client.HTTPException, OSError):
            answered = 0
        assert answered != 200  # plain HTTP gets no answer from a TLS server
        silent.close()
    finally:
        stop()


class PatchRecorder(Rest):
    def __init__(self) -> None:
        super().__init__("https://unused.invalid", verify=False)
        self.patches: list[tuple[str, Any, str]] = []

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "", **_: Any) -> Any:
        if path.endswith("/gone"):
            raise ApiError(404, "pods \"gone\" not found")
        self.patches.append((path, body, content_type))
        return {}


def test_pods_waiting_for_a_node_are_asked_for_again_with_an_annotation_of_the_extenders_own() -> None:
    view = ClusterView((), CATALOG, "fleetsched")
    view.replace("pod", [pod("b", 1), pod("a", 1), pod("bound", 1, node_name="od-1"),
                         pod("theirs", 1, scheduler="default-scheduler"), {**pod("done", 1), "status": {"phase": "Failed"}}])
    assert view.unbound() == [("ml", "a"), ("ml", "b")]
    rest = PatchRecorder()
    assert requeue(rest, [*view.unbound(), ("ml", "gone")], 1234.5) == 2
    body = {"metadata": {"annotations": {"scheduling.fleetsched.io/requeued-at": "1234.500"}}}
    assert rest.patches == [("/api/v1/namespaces/ml/pods/a", body, "application/merge-patch+json"),
                            ("/api/v1/namespaces/ml/pods/b", body, "application/merge-patch+json")]


def test_the_api_token_is_read_again_from_its_file_when_due(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("first\n", encoding="utf-8")
    rest = Rest("https://unused.invalid", verify=False, token_file=str(token), token_reread_s=0.0)
    sent: list[str] = []

    class Pool:
        def request(self, method: str, url: str, **options: Any) -> Any:
            sent.append(options["headers"]["Authorization"])
            return type("Response", (), {"status": 200, "data": b"{}"})()

    rest.pool = Pool()  # type: ignore[assignment]
    rest.request("GET", "/api/v1/nodes")
    token.write_text("rotated", encoding="utf-8")  # the kubelet rotated it
    rest.request("GET", "/api/v1/nodes")
    token.unlink()  # unreadable for a moment: the last token is kept
    rest.request("GET", "/api/v1/nodes")
    assert sent == ["Bearer first", "Bearer rotated", "Bearer rotated"]
    rest.token_reread_s = 3600.0
    token.write_text("third", encoding="utf-8")
    rest.request("GET", "/api/v1/nodes")
    assert sent[-1] == "Bearer rotated"  # not due yet
