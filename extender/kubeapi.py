"""The API server, as the extender uses it: list and watch nodes and pods, annotate, bind.

One small transport (httpx's one-method idea): `Rest.request(method, path, body)` over
urllib3 with the credentials of a kubeconfig or of the pod's service account, resolved by the
official client's config loaders. On it, `Mirror` keeps a `ClusterView` current with list and
watch: it starts from a list's resourceVersion, applies watch events, lists again when the
server answers 410 Gone (the version expired), and backs off exponentially (to 30 s) while the
server cannot be reached; the view keeps its last state meanwhile and reports its age.
`RestApi` implements the extender's `KubeApi` (annotate a pod, create its Binding; read a node
and patch its annotations guarded by resourceVersion, for HAMi's node lock).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from urllib3.util.ssl_ import create_urllib3_context

from extender.hami import Conflict
from extender.state import ClusterView
from extender.verbs import AlreadyBound

log = logging.getLogger(__name__)

PATHS = {"node": "/api/v1/nodes", "pod": "/api/v1/pods"}
MAX_BACKOFF_S = 30.0


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class Rest:
    """JSON requests to one API server with one set of credentials."""

    def __init__(self, host: str, *, token: str = "", ca_file: str | None = None, verify: bool = True,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        self.host = host.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        # One TLS context for every connection: given only file names, urllib3 would read and
        # parse the CA bundle and client key again for each new connection (binds open many).
        context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
        if verify:
            if ca_file:
                context.load_verify_locations(ca_file)
            else:
                context.load_default_certs()
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
        # Up to 32 kept connections: kube-scheduler binds many pods at once.
        self.pool = urllib3.PoolManager(ssl_context=context, cert_reqs=context.verify_mode, maxsize=32)
        if not verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    @classmethod
    def from_config(cls, kubeconfig: str | None = None) -> Rest:
        """Credentials from a kubeconfig file, or in-cluster (service account) when None."""
        from kubernetes import client, config

        configuration = client.Configuration()
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        keys = configuration.api_key or {}
        token = str(keys.get("authorization", "") or keys.get("BearerToken", "")).removeprefix("Bearer ").strip()
        return cls(configuration.host, token=token, ca_file=configuration.ssl_ca_cert,
                   verify=bool(configuration.verify_ssl), cert_file=configuration.cert_file,
                   key_file=configuration.key_file)

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                timeout_s: float = 30.0) -> Any:
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        response = self.pool.request(method, self.host + path, body=data, headers=headers,
                                     timeout=urllib3.Timeout(total=timeout_s), retries=False)
        if response.status >= 300:
            raise ApiError(response.status, response.data.decode("utf-8", "replace")[:500])
        return json.loads(response.data) if response.data else None

    def stream(self, path: str, timeout_s: float) -> Iterator[Mapping[str, Any]]:
        """A watch: one JSON event per line until the server ends the stream."""
        response = self.pool.request("GET", self.host + path, headers=self.headers, preload_content=False,
                                     timeout=urllib3.Timeout(connect=10.0, read=timeout_s + 10), retries=False)
        try:
            if response.status >= 300:
                raise ApiError(response.status, response.read().decode("utf-8", "replace")[:500])
            buffer = b""
            for chunk in response.stream(65536):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            response.release_conn()


class RestApi:
    """The extender's `KubeApi` over `Rest`."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        # The API server copies a Binding's annotations onto the pod: one request, atomic.
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": dict(annotations)},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            self.rest.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", binding)
        except ApiError as error:
            if error.status != 409:
                raise
            pod = self.rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
            raise AlreadyBound(str((pod.get("spec") or {}).get("nodeName") or "")) from None

    def get_node(self, name: str) -> Mapping[str, Any]:
        node: Mapping[str, Any] = self.rest.request("GET", f"/api/v1/nodes/{name}", timeout_s=10.0)
        return node

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None], resource_version: str) -> None:
        """A JSON merge patch of the node's annotations (None removes one), refused with 409 by
        the API server unless the node is still at `resource_version`: raised as hami.Conflict."""
        body = {"metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)}}
        try:
            self.rest.request("PATCH", f"/api/v1/nodes/{name}", body, content_type="application/merge-patch+json",
                              timeout_s=10.0)
        except ApiError as error:
            if error.status == 409:
                raise Conflict(f"node {name} is no longer at resourceVersion {resource_version}") from None
            raise

    def pod_exists(self, namespace: str, name: str) -> bool:
        try:
            self.rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", timeout_s=10.0)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True

    def post_event(self, namespace: str, involved_object: Mapping[str, str], reason: str, message: str) -> None:
        """Creates a Warning Event about `involved_object` (shown by `kubectl describe`)."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": f"{involved_object.get('name', 'object')}.", "namespace": namespace},
                 "involvedObject": dict(involved_object), "reason": reason, "message": message[:1024],
                 "type": "Warning", "source": {"component": "fleetsched-extender"},
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}  # fmt: skip
        self.rest.request("POST", f"/api/v1/namespaces/{namespace}/events", event, timeout_s=10.0)


class Mirror:
    """Keeps a ClusterView current with list and watch, one thread per kind."""

    def __init__(self, rest: Rest, view: ClusterView, *, watch_timeout_s: int = 300) -> None:
        self.rest = rest
        self.view = view
        self.watch_timeout_s = watch_timeout_s
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for kind in PATHS:
            thread = threading.Thread(target=self._run, args=(kind,), name=f"mirror-{kind}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def sync_once(self) -> None:
        """Lists every kind once (a first sync before serving)."""
        for kind in PATHS:
            self._list(kind)

    def _list(self, kind: str) -> str:
        listed = self.rest.request("GET", PATHS[kind])
        self.view.replace(kind, listed.get("items") or [])
        return str((listed.get("metadata") or {}).get("resourceVersion", ""))

    def _run(self, kind: str) -> None:
        backoff = 0.5
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list(kind)
                path = f"{PATHS[kind]}?watch=1&resourceVersion={version}&timeoutSeconds={self.watch_timeout_s}"
                for event in self.rest.stream(path, self.watch_timeout_s):
                    if self._stop.is_set():
                        return
                    version = self._apply(kind, event, version)
                backoff = 0.5
            except ApiError as error:
                if error.status == 410:
                    version = ""  # our version expired: list again
                    continue
                log.warning("watching %ss: %s; again in %.1f s", kind, error, backoff)
                version = ""
                self._stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                log.warning("watching %ss: %s; again in %.1f s", kind, error, backoff)
                version = ""
                self._stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)

    def _apply(self, kind: str, event: Mapping[str, Any], version: str) -> str:
        kind_of_event = event.get("type")
        obj = event.get("object") or {}
        if kind_of_event == "ERROR":
            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "watch error")))
        if kind_of_event in ("ADDED", "MODIFIED", "DELETED"):
            self.view.apply(kind, str(kind_of_event), obj)
        return str((obj.get("metadata") or {}).get("resourceVersion", version))


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Polls `predicate` until it is true or `timeout_s` passes (for tests and start-up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
