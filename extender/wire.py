"""The scheduler extender v1 wire types: kube-scheduler's JSON, read strictly and written exactly.

kube-scheduler marshals Go structs without json tags, so the keys are the capitalised Go field
names (`Pod`, `NodeNames`, `FailedNodes`, `Host`, `Score`, `PodUID`...), and fields without
`omitempty` are always present, `null` when unset. Nested Kubernetes objects (the `Pod`) use
ordinary Kubernetes JSON. See shared/research/kubernetes.md, section 1.1. Keys are read as Go's
`encoding/json` reads them into those structs: matched without regard to case (Unicode case
folding: `nodenames`, `NODENAMES` and `NodeNames` are one field), the last of a repeated key
winning; kube-scheduler itself always sends the exact names.

With `nodeCacheCapable: false` kube-scheduler sends full `Nodes` and reads only `Nodes` back:
the filter reply then echoes the node objects that pass (`filter_result_json`), where a reply
with `"Nodes": null` would read as "no node passes".

Every parser takes the raw body and returns a frozen value or raises `WireError`, which names
the part of the request that is wrong (`NodeNames[3]: must be a string`); the server answers
it with a 400 or, where kube-scheduler expects a result, a result whose `Error` says it. Nothing
here trusts sizes: bodies, lists and names are bounded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The extender's score range (k8s.io/kube-scheduler/extender/v1: MinExtenderPriority..Max).
MIN_PRIORITY = 0
MAX_PRIORITY = 10
#: Largest request body this module parses (a filter call naming 100,000 nodes is about 3 MiB;
#: full `Nodes` objects take a few KiB each). The server's own `max_body_bytes` is at most this.
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_NODES = 100_000
MAX_NAME = 253  # a DNS subdomain, the longest Kubernetes object name


class WireError(ValueError):
    """A request that breaks the extender protocol; `where` names the field (a JSON path)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = _one_line(where)
        self.problem = _one_line(problem)
        super().__init__(f"{self.where}: {self.problem}" if self.where else self.problem)


def _one_line(text: str) -> str:
    """Control characters escaped: a message stays one line whatever a request put in it."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def decode(body: bytes) -> Mapping[str, Any]:
    """The body as a JSON object; WireError when it is too big, not UTF-8, not JSON or not an object."""
    if len(body) > MAX_BODY_BYTES:
        raise WireError("body", f"larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
        document = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_object)
    except UnicodeDecodeError as error:
        raise WireError("body", f"not UTF-8 ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise WireError("body", f"not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except RecursionError:
        raise WireError("body", "nested too deeply") from None
    except ValueError as error:  # e.g. an integer longer than Python converts
        raise WireError("body", f"not usable JSON ({error})") from None
    if not isinstance(document, dict):
        raise WireError("body", f"must be a JSON object, got {type(document).__name__}")
    return document


def _reject_constant(name: str) -> None:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys stand in the order Go's decoder sees them last (see `go_field`)."""
    document = dict(pairs)
    if len(document) != len(pairs):  # a key given twice: it counts where it came last
        document = {}
        for key, value in pairs:
            document.pop(key, None)
            document[key] = value
    return document


def _fold(text: str) -> str:
    """`text` case-folded character by character (K and the Kelvin sign alike; ß stays ß, as in Go)."""
    return "".join(folded if len(folded := char.casefold()) == 1 else char for char in text)


def go_field(document: Mapping[str, Any], name: str) -> Any:
    """The value of Go struct field `name` in a decoded object, found as `encoding/json` finds it.

    Every key equal to `name` under case folding sets the field, so the last such key in the
    object wins, whatever its case; None when there is none.
    """
    value = document.get(name)
    if len(document) <= 1 and (value is not None or name in document):  # the hot path: the exact key alone
        return value
    wanted = _fold(name)
    found = None
    for key, item in document.items():
        if key == name or (len(key) == len(name) and (key.lower() if key.isascii() else _fold(key)) == wanted):
            found = item
    return found


def _name(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise WireError(where, f"must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME:
        raise WireError(where, f"must be 1..{MAX_NAME} characters, got {len(value)}")
    return value


def expect_object(value: object, where: str) -> Mapping[str, Any]:
    """`value` as a JSON object; WireError naming `where` otherwise."""
    if not isinstance(value, dict):
        raise WireError(where, f"must be an object, got {'null' if value is None else type(value).__name__}")
    return value


def _names(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise WireError(where, f"must be a list of node names, got {type(value).__name__}")
    if len(value) > MAX_NODES:
        raise WireError(where, f"names {len(value)} nodes; at most {MAX_NODES}")
    if all(type(item) is str and 0 < len(item) <= MAX_NAME for item in value):  # the hot path: all good
        return tuple(value)
    return tuple(_name(item, f"{where}[{index}]") for index, item in enumerate(value))


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """The body of POST filter and prioritize: the pod and the candidate nodes.

    With `nodeCacheCapable: true` kube-scheduler sends `NodeNames`; otherwise full `Nodes`
    objects: the extender decides from its own view of nodes by their names, and keeps the
    objects (`nodes`, in the order of `node_names`) only to echo those that pass filter.
    """

    pod: Mapping[str, Any]
    node_names: tuple[str, ...]
    full_nodes: bool = False
    nodes: tuple[Mapping[str, Any], ...] = ()


def parse_extender_args(body: bytes) -> ExtenderArgs:
    document = decode(body)
    pod = expect_object(go_field(document, "Pod"), "Pod")
    names = go_field(document, "NodeNames")
    if names is not None:
        return ExtenderArgs(pod, _names(names, "NodeNames"))
    nodes = go_field(document, "Nodes")
    if nodes is None:
        raise WireError("NodeNames", "missing: a filter or prioritize call names its nodes (NodeNames or Nodes)")
    items = go_field(expect_object(nodes, "Nodes"), "items")
    if not isinstance(items, list):
        raise WireError("Nodes.items", "must be a list of nodes")
    if len(items) > MAX_NODES:
        raise WireError("Nodes.items", f"names {len(items)} nodes; at most {MAX_NODES}")
    found = []
    for index, item in enumerate(items):
        where = f"Nodes.items[{index}]"
        metadata = expect_object(go_field(expect_object(item, where), "metadata"), f"{where}.metadata")
        found.append(_name(go_field(metadata, "name"), f"{where}.metadata.name"))
    return ExtenderArgs(pod, tuple(found), full_nodes=True, nodes=tuple(items))


@dataclass(frozen=True, slots=True)
class FilterResult:
    """The reply to filter: the nodes that pass, and why each other one does not.

    `failed` nodes may pass after preemption (Unschedulable); `unresolvable` ones never will for
    this pod (UnschedulableAndUnresolvable: wrong GPU model, spot not tolerated, no MIG).
    """

    node_names: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    unresolvable: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    def to_json(self, nodes: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The reply; `nodes` (the passing full node objects) fills `Nodes`, else it is null."""
        return {
            "Nodes": None if nodes is None else {"metadata": {}, "items": list(nodes)},
            "NodeNames": list(self.node_names),
            # Unresolvable nodes are in FailedNodes too: kube-scheduler 1.20 reads only FailedNodes (its
            # events would leave them out), and later ones let FailedAndUnresolvableNodes win.
            "FailedNodes": {**self.failed, **self.unresolvable},
            "FailedAndUnresolvableNodes": dict(self.unresolvable),
            "Error": self.error,
        }


def filter_result_json(result: FilterResult, args: ExtenderArgs) -> dict[str, Any]:
    """The reply to filter for the request `args`: full nodes asked, the passing ones echoed in `Nodes`.

    kube-scheduler without `nodeCacheCapable` reads only `Nodes` back; a name the request did not
    carry has no object to echo (kube-scheduler would reject it in either form) and is left out.
    """
    if not args.full_nodes:
        return result.to_json()
    by_name = dict(zip(args.node_names, args.nodes, strict=True))
    return result.to_json([by_name[name] for name in result.node_names if name in by_name])


def priorities_json(scores: Mapping[str, float]) -> list[dict[str, Any]]:
    """The reply to prioritize: one {"Host", "Score"} per node, scores clamped to 0..10 integers."""
    clamped: dict[float, int] = {}  # scores repeat: clamp each distinct one once
    reply = []
    for host, score in scores.items():
        score_int = clamped.get(score)
        if score_int is None:
            value = score if math.isfinite(score) else MIN_PRIORITY
            score_int = clamped[score] = int(min(MAX_PRIORITY, max(MIN_PRIORITY, round(value))))
        reply.append({"Host": host, "Score": score_int})
    return reply


@dataclass(frozen=True, slots=True)
class BindingArgs:
    """The body of POST bind: which pod goes to which node."""

    pod_name: str
    pod_namespace: str
    pod_uid: str
    node: str


def parse_binding_args(body: bytes) -> BindingArgs:
    document = decode(body)
    return BindingArgs(
        pod_name=_name(go_field(document, "PodName"), "PodName"),
        pod_namespace=_name(go_field(document, "PodNamespace"), "PodNamespace"),
        pod_uid=_name(go_field(document, "PodUID"), "PodUID"),
        node=_name(go_field(document, "Node"), "Node"),
    )


def binding_result_json(error: str = "") -> dict[str, str]:
    return {"Error": error}


@dataclass(frozen=True, slots=True)
class PreemptionArgs:
    """The body of POST preempt: the pod, and per candidate node the UIDs kube-scheduler would evict.

    Victim lists may be empty (newer kube-schedulers send such nodes when only the extender can
    tell what to evict); full `NodeNameToVictims` pods are reduced to their UIDs.
    """

    pod: Mapping[str, Any]
    victims: Mapping[str, tuple[str, ...]]
    pdb_violations: Mapping[str, int]


def parse_preemption_args(body: bytes) -> PreemptionArgs:
    document = decode(body)
    pod = expect_object(go_field(document, "Pod"), "Pod")
    meta = go_field(document, "NodeNameToMetaVictims")
    key = "NodeNameToMetaVictims" if meta is not None else "NodeNameToVictims"
    raw = expect_object(go_field(document, key), key) if go_field(document, key) is not None else {}
    if len(raw) > MAX_NODES:
        raise WireError(key, f"names {len(raw)} nodes; at most {MAX_NODES}")
    victims: dict[str, tuple[str, ...]] = {}
    violations: dict[str, int] = {}
    for node, value in raw.items():
        where = f"{key}.{node}"
        _name(node, key)
        entry = expect_object(value, where)
        pods = go_field(entry, "Pods")
        pods = [] if pods is None else pods
        if not isinstance(pods, list):
            raise WireError(f"{where}.Pods", "must be a list")
        uids = []
        for index, pod_entry in enumerate(pods):
            item = expect_object(pod_entry, f"{where}.Pods[{index}]")
            if key == "NodeNameToMetaVictims":
                uids.append(_name(go_field(item, "UID"), f"{where}.Pods[{index}].UID"))
            else:
                metadata = expect_object(go_field(item, "metadata"), f"{where}.Pods[{index}].metadata")
                uids.append(_name(go_field(metadata, "uid"), f"{where}.Pods[{index}].metadata.uid"))
        count = go_field(entry, "NumPDBViolations")
        count = 0 if count is None else count
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise WireError(f"{where}.NumPDBViolations", f"must be a whole number >= 0, got {count!r}")
        victims[node] = tuple(uids)
        violations[node] = count
    return PreemptionArgs(pod, victims, violations)


def preemption_result_json(victims: Mapping[str, Sequence[str]], violations: Mapping[str, int]) -> dict[str, Any]:
    """The reply to preempt, always in the meta form (UIDs), as kube-scheduler expects."""
    return {
        "NodeNameToMetaVictims": {
            node: {"Pods": [{"UID": uid} for uid in uids], "NumPDBViolations": violations.get(node, 0)}
            for node, uids in victims.items()
        }
    }
