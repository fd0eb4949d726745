"""Events the extender raises on pods: `fleetsched.io/` annotations nothing reads, and guardrails.

A misspelt annotation (`fleetsched.io/checkpoint-intervall`) would otherwise be silently
ignored. The check runs where pods are read (`ClusterView`), and the Event is posted once per
pod UID, from a thread of its own (`EventPoster`): a planning pass never waits on the API
server for it. `extender.guardrails` posts through the same kind of poster why a pod is held.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

from extender.translate import unknown_annotations

log = logging.getLogger(__name__)

REASON = "UnknownAnnotation"
MAX_REMEMBERED = 200_000  # UIDs already reported; forgotten all at once past this (a repeat is harmless)


class EventApi(Protocol):
    """What posting an Event needs of the API server (`extender.kubeapi.RestApi`)."""

    def post_event(self, namespace: str, involved_object: Mapping[str, str], reason: str, message: str) -> None:
        """Creates a Warning Event about `involved_object`."""
        ...


class EventPoster:
    """Posts Warning Events from a thread of its own (or at once when not `background`): the
    caller never waits on the API server, and a lost Event is logged, never raised."""

    def __init__(self, api: EventApi, *, background: bool = True) -> None:
        self.api = api
        self.background = background
        self._queue: deque[tuple[str, dict[str, str], str, str]] = deque()
        self._ready = threading.Condition(threading.Lock())
        if background:
            threading.Thread(target=self._post_queued, name="events", daemon=True).start()

    def post(self, namespace: str, involved: dict[str, str], reason: str, message: str) -> None:
        if not self.background:
            self._post(namespace, involved, reason, message)
            return
        with self._ready:
            self._queue.append((namespace, involved, reason, message))
            self._ready.notify()

    def _post_queued(self) -> None:
        while True:
            with self._ready:
                self._ready.wait_for(lambda: bool(self._queue))
                event = self._queue.popleft()
            self._post(*event)

    def _post(self, namespace: str, involved: dict[str, str], reason: str, message: str) -> None:
        try:
            self.api.post_event(namespace, involved, reason, message)
        except Exception as error:  # an Event is advice: losing one must not stop anything
            name = involved.get("name", "")
            log.warning("pod %s/%s: %s (the Event could not be posted: %s)", namespace, name, message, error)


def pod_reference(namespace: str, name: str, uid: str) -> dict[str, str]:
    """An Event's involvedObject for a pod."""
    return {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name, "uid": uid}


class AnnotationReporter:
    """Reports each pod's unknown `fleetsched.io/` annotations once, as one Event."""

    def __init__(self, api: EventApi, *, background: bool = True) -> None:
        self.poster = EventPoster(api, background=background)
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def check(self, pod: Mapping[str, Any]) -> None:
        """Looks at one pod as read from the API server; posts an Event the first time its UID
        shows unknown annotations."""
        metadata = pod.get("metadata") or {}
        annotations = metadata.get("annotations") or {}
        if not isinstance(metadata, Mapping) or not isinstance(annotations, Mapping):
            return
        lines = unknown_annotations({str(key): str(value) for key, value in annotations.items()})
        uid = str(metadata.get("uid") or "")
        if not lines or not uid:
            return
        with self._lock:
            if uid in self._seen:
                return
            if len(self._seen) >= MAX_REMEMBERED:
                self._seen.clear()
            self._seen.add(uid)
        namespace = str(metadata.get("namespace") or "default")
        involved = pod_reference(namespace, str(metadata.get("name") or ""), uid)
        self.poster.post(namespace, involved, REASON, "; ".join(lines))
