"""Where the extender's guardrails live in the API server: the spend book and the approvals.

Both are in the extender's namespace (its Lease's), where the owner of a pod cannot write:

- the ConfigMap `fleetsched-spend` holds the spend book (`scheduler.spend.SpendBook.to_json`)
  and the start of every running reservation, written by the leader (`extender.guardrails`);
- `Approval` objects (CustomResourceDefinition `approvals.fleetsched.io`, deploy/manifests/
  governance.yaml) say a person approved or rejected a pod or a gang that an approval rule
  holds. `fleetsched approve` (fleetsched/approve.py) writes one; the extender only lists them.

```yaml
apiVersion: fleetsched.io/v1alpha1
kind: Approval
metadata: {name: pod.ml.big-train, namespace: fleetsched}
spec: {pod: ml/big-train, decision: approve, reason: "quarterly eval", approver: alice}   # or gang: ml/llama
```
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from extender.kubeapi import ApiError

log = logging.getLogger(__name__)

SPEND_CONFIGMAP = "fleetsched-spend"
GROUP = "fleetsched.io"
VERSION = "v1alpha1"
DECISIONS = ("approve", "reject")
#: What a request raises when the API server cannot be reached (not an answer from it).
UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


class RestLike(Protocol):
    """`extender.kubeapi.Rest`'s one method (a fake stands in for it in tests)."""

    def request(self, method: str, path: str, body: Any = None, *, content_type: str = "application/json",
                timeout_s: float = 30.0) -> Any: ...  # fmt: skip


@dataclass(frozen=True, slots=True)
class Approval:
    """One person's decision on one pod or gang, by the job id the extender gives it."""

    name: str
    job_id: str
    approved: bool
    reason: str = ""
    approver: str = ""


def job_id_of(target: str, gang: bool) -> str:
    """The job id of a pod (`namespace/name`) or of a gang (`namespace/gang:name`), as
    `extender.state` names pending jobs."""
    namespace, _, name = target.partition("/")
    return f"{namespace}/gang:{name}" if gang else f"{namespace}/{name}"


def approval_name(target: str, gang: bool) -> str:
    """The object's name: one per pod or gang, so that a second decision cannot contradict the first."""
    return f"{'gang' if gang else 'pod'}.{target.replace('/', '.')}"


def approval_object(namespace: str, target: str, gang: bool, approved: bool, reason: str,
                    approver: str) -> dict[str, Any]:  # fmt: skip
    """The Approval `fleetsched approve` creates. `target` is namespace/name; ValueError when it is not."""
    pod_namespace, _, name = target.partition("/")
    if not _NAME.match(pod_namespace) or not _NAME.match(name):
        raise ValueError(f"{target!r} is not NAMESPACE/NAME in lower case letters, digits, '-' and '.'")
    spec = {"gang" if gang else "pod": target, "decision": DECISIONS[0] if approved else DECISIONS[1]}
    spec.update({key: value for key, value in (("reason", reason), ("approver", approver)) if value})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Approval",
            "metadata": {"name": approval_name(target, gang), "namespace": namespace}, "spec": spec}  # fmt: skip


def read_approval(obj: Mapping[str, Any]) -> Approval | None:
    """An Approval object read; None (logged) for one that says nothing clear."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    name = str(metadata.get("name") or "") if isinstance(metadata, Mapping) else ""
    if not isinstance(spec, Mapping):
        log.warning("approval %s: spec is not an object; ignored", name)
        return None
    pod, gang, decision = spec.get("pod"), spec.get("gang"), spec.get("decision")
    target = pod if pod else gang
    if bool(pod) == bool(gang) or not isinstance(target, str) or "/" not in target or decision not in DECISIONS:
        log.warning("approval %s: needs one of pod or gang (NAMESPACE/NAME) and decision approve or reject; ignored",
                    name)
        return None
    return Approval(name, job_id_of(target, gang=not pod), decision == DECISIONS[0], str(spec.get("reason") or ""),
                    str(spec.get("approver") or ""))


class GovernanceStore:
    """Reads and writes the guardrails' objects in `namespace` over the extender's REST client."""

    def __init__(self, rest: RestLike, namespace: str) -> None:
        self.rest = rest
        self.namespace = namespace
        self._version = ""  # the ConfigMap's resourceVersion last read or written

    @property
    def spend_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{SPEND_CONFIGMAP}"

    def read_spend(self) -> str | None:
        """The stored state (JSON text), or None when there is none yet."""
        self._version = ""
        try:
            found = self.rest.request("GET", self.spend_path, timeout_s=10.0)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        self._version = str((found.get("metadata") or {}).get("resourceVersion") or "")
        data = found.get("data") or {}
        text = data.get("state")
        return str(text) if text else None

    def write_spend(self, text: str) -> None:
        """Replaces the stored state (created when missing). A write made meanwhile by another
        replica (409) is overwritten: only the leader writes, and it read the book when it took the lead."""
        for _ in range(3):
            metadata = {"name": SPEND_CONFIGMAP, "namespace": self.namespace}
            if self._version:
                metadata["resourceVersion"] = self._version
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"state": text}}
            try:
                if self._version:
                    stored = self.rest.request("PUT", self.spend_path, body, timeout_s=10.0)
                else:
                    stored = self.rest.request("POST", f"/api/v1/namespaces/{self.namespace}/configmaps", body,
                                               timeout_s=10.0)  # fmt: skip
            except ApiError as error:
                if error.status not in (404, 409):
                    raise
                self.read_spend()  # learns its resourceVersion, or that it is gone
                continue
            self._version = str((stored.get("metadata") or {}).get("resourceVersion") or "")
            return
        raise RuntimeError(f"configmap {self.namespace}/{SPEND_CONFIGMAP} changed under every write")

    def approvals(self) -> list[Approval]:
        """Every readable Approval in the namespace, in name order."""
        listed = self.rest.request("GET", f"/apis/fleetsched.io/v1alpha1/namespaces/{self.namespace}/approvals",
                                   timeout_s=10.0)  # fmt: skip
        found = [read_approval(item) for item in (listed or {}).get("items") or [] if isinstance(item, Mapping)]
        return sorted((a for a in found if a is not None), key=lambda a: a.name)



def spend_state(book_json: str, started: Mapping[str, Sequence[float]]) -> str:
    """The stored state: the spend book and, per reservation, [bind time, usd per hour]."""
    return json.dumps({"book": json.loads(book_json), "started": {key: list(value) for key, value in started.items()}},
                      sort_keys=True)


def read_spend_state(text: str) -> tuple[str, dict[str, tuple[float, float]]]:
    """The spend book's JSON and the reservations' starts, from `spend_state`'s text; ValueError when garbled."""
    data = json.loads(text)
    if not isinstance(data, dict) or "book" not in data or not isinstance(data.get("started"), dict):
        raise ValueError("not a fleetsched spend state (keys book and started)")
    started = {}
    for key, value in data["started"].items():
        if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, int | float) for v in value):
            raise ValueError(f"started.{key}: must be [bind time, usd per hour]")
        started[str(key)] = (float(value[0]), float(value[1]))
    return json.dumps(data["book"]), started

