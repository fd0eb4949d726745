"""The mirror's list and watch (resource versions, relist on 410) and the server over TLS."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from extender.kubeapi import ApiError, Mirror, Rest, wait_until
from extender.main import start
from extender.state import ClusterView
from scheduler.catalog import default_catalog
from tests.e2e.controlplane import local_extender

CATALOG = default_catalog()


def node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version, "labels": {"nvidia.com/gpu.product": "H100-80GB"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}}


class ScriptedApi(Rest):
    """Lists and watches nodes as scripted: the first watch is answered 410 Gone."""

    def __init__(self, done: threading.Event) -> None:
        super().__init__("https://unused.invalid", verify=False)
        self.done = done
        self.lists: list[str] = []
        self.watches: list[str] = []

    def request(self, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.lists.append(path)
        version = str(10 * len(self.lists))
        return {"metadata": {"resourceVersion": version}, "items": [node(f"listed-{len(self.lists)}", version)]}

    def stream(self, path: str, timeout_s: float) -> Iterator[Mapping[str, Any]]:
        self.watches.append(path)
        if len(self.watches) == 1:
            raise ApiError(410, "too old resource version: 10 (15)")
        yield {"type": "ADDED", "object": node("watched", "25")}
        yield {"type": "MODIFIED", "object": node("watched", "26")}
        self.done.set()


def test_a_watch_answered_410_lists_again_and_watches_from_the_new_version() -> None:
    done = threading.Event()
    api = ScriptedApi(done)
    view = ClusterView((), CATALOG, "fleetsched")
    mirror = Mirror(api, view)
    thread = threading.Thread(target=mirror._run, args=("node",), daemon=True)
    thread.start()
    assert done.wait(10)
    mirror.stop()
    assert api.lists == ["/api/v1/nodes", "/api/v1/nodes"]  # listed, then listed again after 410
    assert "resourceVersion=10&" in api.watches[0] and "resourceVersion=20&" in api.watches[1]
    assert wait_until(lambda: set(view.view().snapshot.nodes) == {"listed-2", "watched"}, 5)
    if len(api.watches) > 2:  # the stream ended: the next watch goes on from the last event seen
        assert "resourceVersion=26&" in api.watches[2]


def test_the_server_speaks_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    config = replace(local_extender(), tls_cert=str(cert), tls_key=str(key))
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
