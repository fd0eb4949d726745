"""The labels of the pods that hold a node's GPUs, read from the API server, for teams named by a pod label.

The kubelet's PodResources API names pods but not their labels. When the team comes from a label
(`--team-label`, or a governance file's `team_from = "label"`), `PodLabels` asks the API server
for each pod once (`GET /api/v1/namespaces/NS/pods/NAME`, RBAC: `get pods`) and keeps the answer
while the pod holds a device. A pod the API server no longer has has no labels; an API server
that does not answer leaves the pod's team unknown (empty) and is asked again next scrape,
stopping at the first failure of a scrape so that an API server that is down is not hammered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote

import urllib3

from extender.kubeapi import ApiError

NOT_FOUND = 404


class Requester(Protocol):
    """The part of `extender.kubeapi.Rest` used here."""

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = ...,
                timeout_s: float = ...) -> Any: ...  # fmt: skip


class PodLabels:
    """Each device-holding pod's labels, read once per pod."""

    def __init__(self, api: Requester, timeout_s: float = 2.0) -> None:
        self.api = api
        self.timeout_s = timeout_s
        self.up = True
        self.reason = ""
        self.error = ""
        self._labels: dict[tuple[str, str], Mapping[str, str]] = {}

    def refresh(self, pods: Iterable[tuple[str, str]]) -> None:
        """Reads the labels of the pods (namespace, name) not read yet; forgets the others."""
        wanted = set(pods)
        for gone in set(self._labels) - wanted:
            del self._labels[gone]
        self.error = ""
        for namespace, name in sorted(wanted - set(self._labels)):
            try:
                pod = self.api.request("GET", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}",
                                       timeout_s=self.timeout_s)  # fmt: skip
            except ApiError as error:
                if error.status == NOT_FOUND:  # gone since the kubelet listed it: no labels to read
                    self._labels[(namespace, name)] = {}
                    continue
                self._fail(f"HTTP{error.status}", str(error))
                return
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as error:
                self._fail(type(error).__name__, str(error))
                return
            self._labels[(namespace, name)] = _labels_of(pod)
        self.up, self.reason = True, ""

    def labels(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The pod's labels; None when not read (the API server did not answer)."""
        return self._labels.get((namespace, name))

    def _fail(self, error: str, reason: str) -> None:
        self.up, self.error, self.reason = False, error, reason[:300]


def _labels_of(pod: Any) -> Mapping[str, str]:
    metadata = pod.get("metadata") if isinstance(pod, Mapping) else None
    labels = metadata.get("labels") if isinstance(metadata, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {str(key): str(value) for key, value in labels.items()}


__all__ = ["PodLabels", "Requester"]
