"""The API server, as the extender uses it: list and watch nodes and pods, annotate, bind.

One small transport (httpx's one-method idea): `Rest.request(method, path, body)` over
urllib3 with the credentials of a kubeconfig or of the pod's service account, resolved by the
official client's config loaders. On it, `Mirror` keeps a `ClusterView` current with paginated
lists and watches with bookmarks: it starts from a list's resourceVersion, applies watch events,
resumes a broken watch from the last version seen, lists again only when the server answers
410 Gone (the version expired), and backs off exponentially (to 8 s) while the server cannot
be reached; the view keeps its last state meanwhile and reports its age.
`RestApi` implements the extender's `KubeApi` (annotate a pod, create its Binding; read a node
and patch its annotations guarded by resourceVersion, for HAMi's node lock; post an Event).
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import urllib3
from urllib3.util.ssl_ import create_urllib3_context

from extender.hami import Conflict
from extender.state import ClusterView
from extender.verbs import AlreadyBound
from scheduler.errors import InputError

log = logging.getLogger(__name__)

#: Where a pod's service account token is mounted (what the in-cluster configuration reads).
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"

PATHS = {"node": "/api/v1/nodes", "pod": "/api/v1/pods"}
# Outside the fleetsched.io/ annotations a user sets: only the extender writes it.
REQUEUED = "scheduling.fleetsched.io/requeued-at"
MAX_BACKOFF_S = 8.0  # an API server back from a restart is seen within seconds


class ApiError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {message}")


class Rest:
    """JSON requests to one API server with one set of credentials.

    A `token_file` (in-cluster: the service account's) is read again every `token_reread_s`,
    as client-go does: the kubelet rotates projected tokens, an operator a token Secret, and a
    long-running extender must not keep presenting the one it started with.
    """

    def __init__(self, host: str, *, token: str = "", ca_file: str | None = None, verify: bool = True,
                 cert_file: str | None = None, key_file: str | None = None, token_file: str | None = None,
                 token_reread_s: float = 60.0) -> None:
        self.host = host.rstrip("/")
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.token_file = token_file
        self.token_reread_s = token_reread_s
        self._token_read_at = time.monotonic() if token else -math.inf
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
                   key_file=configuration.key_file, token_file=None if kubeconfig else SERVICE_ACCOUNT_TOKEN)

    def _current_headers(self) -> dict[str, str]:
        """The headers of the next request, the token read again from its file when due (a file
        that cannot be read keeps the last token: the API server says whether it still holds)."""
        if self.token_file is not None and time.monotonic() - self._token_read_at >= self.token_reread_s:
            self._token_read_at = time.monotonic()
            try:
                with open(self.token_file, encoding="utf-8") as file:
                    token = file.read().strip()
            except OSError as error:
                log.warning("reading the API token %s: %s", self.token_file, error)
                token = ""
            if token:
                self.headers = {**self.headers, "Authorization": f"Bearer {token}"}
        return dict(self.headers)

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                timeout_s: float = 30.0) -> Any:
        headers = self._current_headers()
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
        response = self.pool.request("GET", self.host + path, headers=self._current_headers(), preload_content=False,
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


def load_rest(kubeconfig: str) -> Rest:
    """`Rest.from_config` for a command: a kubeconfig that cannot be read or parsed, or no
    kubeconfig outside a cluster, is one InputError naming the file (and the line of a YAML
    mistake) rather than the kubernetes client's own exception."""
    if not kubeconfig:
        if not os.environ.get("KUBERNETES_SERVICE_HOST"):
            raise InputError("no kubeconfig given, and not running in a cluster (KUBERNETES_SERVICE_HOST is not set)",
                             field="kubeconfig")
        try:
            return Rest.from_config(None)
        except Exception as error:  # the in-cluster loader: ConfigException, a service account file missing
            raise InputError(f"cannot load the in-cluster configuration: {_one_line(error)}") from None
    try:
        with open(kubeconfig, "rb"):  # the client says only "No configuration found" for a missing file
            pass
        return Rest.from_config(kubeconfig)
    except OSError as error:
        raise InputError(f"cannot load the kubeconfig: {error.strerror or error}", source=kubeconfig) from None
    except Exception as error:  # the client's loaders raise many kinds: ConfigException, yaml's, ssl's
        mark = getattr(error, "problem_mark", None)  # yaml's MarkedYAMLError: where the mistake is
        line = int(mark.line) + 1 if mark is not None else None
        problem = f"not valid YAML: {getattr(error, 'problem', '')}" if mark is not None else _one_line(error)
        raise InputError(f"cannot load the kubeconfig: {problem}", source=kubeconfig, line=line) from None


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


class RestApi:
    """The extender's `KubeApi` over `Rest`."""

    def __init__(self, rest: Rest) -> None:
        self.rest = rest

    def bind_pod(self, namespace: str, name: str, uid: str, node: str, annotations: Mapping[str, str], *,
                 timeout_s: float = 5.0) -> None:  # fmt: skip
        # The API server copies a Binding's annotations onto the pod: one request, atomic.
        binding = {"apiVersion": "v1", "kind": "Binding",
                   "metadata": {"name": name, "namespace": namespace, "uid": uid, "annotations": dict(annotations)},
                   "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        try:
            self.rest.request("POST", f"/api/v1/namespaces/{namespace}/pods/{name}/binding", binding,
                              timeout_s=timeout_s)
        except ApiError as error:
            if error.status != 409:
                raise
            pod = self.rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", timeout_s=timeout_s)
            raise AlreadyBound(str((pod.get("spec") or {}).get("nodeName") or "")) from None

    def get_node(self, name: str, *, timeout_s: float = 10.0) -> Mapping[str, Any]:
        node: Mapping[str, Any] = self.rest.request("GET", f"/api/v1/nodes/{name}", timeout_s=timeout_s)
        return node

    def patch_node_annotations(self, name: str, annotations: Mapping[str, str | None], resource_version: str, *,
                               timeout_s: float = 10.0) -> None:  # fmt: skip
        """A JSON merge patch of the node's annotations (None removes one), refused with 409 by
        the API server unless the node is still at `resource_version`: raised as hami.Conflict."""
        body = {"metadata": {"resourceVersion": resource_version, "annotations": dict(annotations)}}
        try:
            self.rest.request("PATCH", f"/api/v1/nodes/{name}", body, content_type="application/merge-patch+json",
                              timeout_s=timeout_s)
        except ApiError as error:
            if error.status == 409:
                raise Conflict(f"node {name} is no longer at resourceVersion {resource_version}") from None
            raise

    def pod_exists(self, namespace: str, name: str, *, timeout_s: float = 10.0) -> bool:
        try:
            self.rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{name}", timeout_s=timeout_s)
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


def requeue(rest: Rest, pods: Sequence[tuple[str, str]], clock_s: float) -> int:
    """Asks kube-scheduler to try `pods` again now; returns how many it asked for.

    A pod kube-scheduler failed (the extender was unreachable, or not the leader, or its gang
    was incomplete) waits in its unschedulable queue until some cluster event moves it, or for
    up to 90 s (kube-scheduler 1.20: 60 s, checked every 30 s). An update of the pod itself
    moves it at once: the extender writes the time into an annotation of its own.
    """
    asked = 0
    patch = {"metadata": {"annotations": {REQUEUED: f"{clock_s:.3f}"}}}
    for namespace, name in pods:
        try:
            rest.request("PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", patch,
                         content_type="application/merge-patch+json", timeout_s=5.0)
            asked += 1
        except (ApiError, urllib3.exceptions.HTTPError, OSError) as error:
            log.info("could not ask for pod %s/%s again: %s", namespace, name, error)
    if asked:
        log.info("asked kube-scheduler to try %d pending pods again", asked)
    return asked


class Mirror:
    """Keeps a ClusterView current with list and watch, one thread per kind.

    Lists come in pages of `page_size` (a continue token that expired, 410, starts the list
    again); every stored object loses its `managedFields` (most of a pod's bytes, never read).
    A watch asks for bookmarks and is given `watch_timeout_s`, well under the view's staleness
    limit, so that a quiet, healthy watch still refreshes the view's age: the API server sends a
    bookmark before it ends a watch. A watch that fails or ends is resumed from the last
    resourceVersion seen; only 410 Gone (the version expired) lists again. A watch the server
    ends cleanly refreshes the view's age too; one that breaks does not. A list made meanwhile by
    another thread (`sync_once` on taking the lead) ends the watch at its next event, which the
    view drops (it may be older than the list), and the watch starts again from that list.
    """

    def __init__(self, rest: Rest, view: ClusterView, *, watch_timeout_s: int = 300, page_size: int = 500) -> None:
        self.rest = rest
        self.view = view
        self.watch_timeout_s = watch_timeout_s
        self.page_size = page_size
        self._stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.versions: dict[str, str] = {}  # kind -> the resourceVersion a watch goes on from
        self.listings: dict[str, int] = {}  # kind -> the view's listing count its watch goes on from

    def start(self) -> None:
        for kind in PATHS:
            thread = threading.Thread(target=self._run, args=(kind,), name=f"mirror-{kind}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def sync_once(self) -> None:
        """Lists every kind once (a first sync before serving, or a consistent read on taking the lead)."""
        for kind in PATHS:
            self.versions[kind] = self._list(kind)

    def _list(self, kind: str) -> str:
        """Every object of `kind`, page by page; the list's resourceVersion."""
        items: list[Mapping[str, Any]] = []
        token = ""
        while True:
            query = f"?limit={self.page_size}" + (f"&continue={quote(token, safe='')}" if token else "")
            try:
                page = self.rest.request("GET", PATHS[kind] + query)
            except ApiError as error:
                if error.status != 410 or not token:
                    raise
                items, token = [], ""  # the continue token expired: a consistent list starts again
                continue
            items.extend(slim(item) for item in page.get("items") or [])
            metadata = page.get("metadata") or {}
            token = str(metadata.get("continue") or "")
            if not token:
                self.view.replace(kind, items, str(metadata.get("resourceVersion", "")))
                return str(metadata.get("resourceVersion", ""))

    def _run(self, kind: str) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                if not self.versions.get(kind):
                    self.versions[kind] = self._list(kind)
                self._watch(kind)
                backoff = 0.5
            except ApiError as error:
                if error.status == 410:
                    log.info("watching %ss: %s; listing again", kind, error)
                    self.versions[kind] = ""  # our version expired: list again, at once
                    continue
                backoff = self._wait(kind, error, backoff)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                backoff = self._wait(kind, error, backoff)

    def _wait(self, kind: str, error: Exception, backoff: float) -> float:
        """A failed list or watch: the view keeps what it has; the watch resumes later from its version."""
        log.warning("watching %ss: %s; again in %.1f s", kind, error, backoff)
        self._stop.wait(backoff)
        return min(MAX_BACKOFF_S, backoff * 2)

    def _watch(self, kind: str) -> None:
        listing, listed_version = self.view.listing(kind)
        if listing != self.listings.get(kind):  # listed since (by sync_once, say): watch from that list
            self.listings[kind], self.versions[kind] = listing, listed_version
        path = (f"{PATHS[kind]}?watch=1&allowWatchBookmarks=true&resourceVersion={self.versions[kind]}"
                f"&timeoutSeconds={self.watch_timeout_s}")
        for event in self.rest.stream(path, self.watch_timeout_s):
            if self._stop.is_set():
                return
            version = self._apply(kind, event, self.versions[kind], listing)
            if version is None:
                log.info("watching %ss: listed again meanwhile; watching from that list's version", kind)
                return
            self.versions[kind] = version
        # The API server ended the watch at its timeout with every event delivered: as good as a
        # bookmark (kube-apiserver 1.20 sends a bookmark only when a watch has a context deadline).
        self.view.touch(kind)

    def _apply(self, kind: str, event: Mapping[str, Any], version: str, listing: int) -> str | None:
        """The version the watch goes on from after `event`; None when a newer list dropped it."""
        kind_of_event = event.get("type")
        obj = event.get("object") or {}
        if kind_of_event == "ERROR":
            raise ApiError(int(obj.get("code", 500)), str(obj.get("message", "watch error")))
        if kind_of_event in ("ADDED", "MODIFIED", "DELETED"):
            if not self.view.apply(kind, str(kind_of_event), slim(obj), listing=listing):
                return None
        elif kind_of_event == "BOOKMARK":
            self.view.touch(kind)  # nothing changed, and the API server says so: the view is current
        return str((obj.get("metadata") or {}).get("resourceVersion") or version)


def slim(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """The object without `metadata.managedFields` (server-side apply's bookkeeping, never read here)."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, Mapping) or "managedFields" not in metadata:
        return obj
    return {**obj, "metadata": {key: value for key, value in metadata.items() if key != "managedFields"}}


def wait_until(predicate: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    """Polls `predicate` until it is true or `timeout_s` passes (for tests and start-up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step_s)
    return bool(predicate())
