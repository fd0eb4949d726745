"""The scheduler extender's wire: kube-scheduler's JSON read strictly, replies written exactly, pods read as jobs."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extender import wire
from extender.translate import PodJob, read_pod
from extender.wire import (
    BindingArgs,
    ExtenderArgs,
    FilterResult,
    PreemptionArgs,
    WireError,
    decode,
    parse_binding_args,
    parse_extender_args,
    parse_preemption_args,
    preemption_result_json,
    priorities_json,
)
from scheduler.catalog import default_catalog
from scheduler.model import GpuRequest, Labels, RequestKind

CATALOG = default_catalog()
PARSERS: dict[str, tuple[Callable[[bytes], object], type]] = {
    "extender": (parse_extender_args, ExtenderArgs),
    "binding": (parse_binding_args, BindingArgs),
    "preemption": (parse_preemption_args, PreemptionArgs),
}


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def container(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None, name: str = "main") -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = requests
    if limits is not None:
        resources["limits"] = limits
    return {"name": name, "image": "trainer:1", "resources": resources}


def make_pod(
    name: str = "trainer-0",
    namespace: str | None = "ml",
    uid: str | None = "6f1c1b9e-uid",
    *,
    containers: Any = None,
    init_containers: Any = None,
    labels: Any = None,
    annotations: Any = None,
    node_selector: Any = None,
    priority: Any = None,
    node_name: Any = None,
    created: Any = None,
    deadline_s: Any = None,
) -> dict[str, Any]:
    """A pod as the API server writes it; by default one container asking for one whole GPU."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if uid is not None:
        metadata["uid"] = uid
    for key, value in (("labels", labels), ("annotations", annotations), ("creationTimestamp", created)):
        if value is not None:
            metadata[key] = value
    spec: dict[str, Any] = {"containers": [container({"nvidia.com/gpu": "1"})] if containers is None else containers}
    for key, value in (("initContainers", init_containers), ("nodeSelector", node_selector),
                       ("priority", priority), ("nodeName", node_name), ("activeDeadlineSeconds", deadline_s)):
        if value is not None:
            spec[key] = value
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": {"phase": "Pending"}}


def read(**kwargs: Any) -> PodJob:
    pod_job = read_pod(make_pod(**kwargs), CATALOG)
    assert pod_job is not None
    return pod_job


# --- golden payloads: the exact keys kube-scheduler sends and reads -----------------------------------------------


def test_a_node_cache_capable_filter_body_keeps_the_pod_and_the_node_names() -> None:
    pod = make_pod()
    args = parse_extender_args(body({"Pod": pod, "Nodes": None, "NodeNames": ["gpu-a-0", "gpu-b-1"]}))
    assert args == ExtenderArgs(pod=pod, node_names=("gpu-a-0", "gpu-b-1"), full_nodes=False)


def test_a_filter_body_with_full_node_objects_keeps_only_their_names() -> None:
    nodes = {
        "metadata": {"resourceVersion": "4711"},
        "items": [
            {"metadata": {"name": "gpu-a-0", "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
             "status": {"capacity": {"nvidia.com/gpu": "8"}}},
            {"metadata": {"name": "gpu-b-1"}},
        ],
    }
    args = parse_extender_args(body({"Pod": make_pod(), "Nodes": nodes, "NodeNames": None}))
    assert args.node_names == ("gpu-a-0", "gpu-b-1")
    assert args.full_nodes is True and args.nodes == tuple(nodes["items"])


def test_filter_echoes_the_passing_full_nodes_when_kube_scheduler_sent_full_nodes() -> None:
    """Without nodeCacheCapable kube-scheduler reads only `Nodes` back: null there would mean no node passes."""
    items = [{"metadata": {"name": name, "labels": {"zone": name[-1]}}, "status": {"allocatable": {"cpu": "8"}}}
             for name in ("gpu-a-0", "gpu-b-1", "gpu-c-2")]
    args = parse_extender_args(body({"Pod": make_pod(), "Nodes": {"metadata": {}, "items": items}, "NodeNames": None}))
    result = FilterResult(node_names=("gpu-c-2", "gpu-a-0", "elsewhere"), failed={"gpu-b-1": "full"})
    reply = wire.filter_result_json(result, args)
    assert reply["Nodes"] == {"metadata": {}, "items": [items[2], items[0]]}  # the objects as sent; unknown names left out
    assert reply["FailedNodes"] == {"gpu-b-1": "full"} and reply["Error"] == ""
    by_names = parse_extender_args(body({"Pod": make_pod(), "Nodes": None, "NodeNames": ["gpu-a-0"]}))
    assert wire.filter_result_json(FilterResult(node_names=("gpu-a-0",)), by_names)["Nodes"] is None


CASES = {
    "lower": ({"pod": {}, "nodenames": ["a"]}, ("a",)),
    "upper": ({"POD": {}, "NODENAMES": ["a"]}, ("a",)),
    "camel": ({"pod": {}, "nodeNames": ["a"]}, ("a",)),
    "long-s": ({"Pod": {}, "NodeName\u017f": ["a"]}, ("a",)),  # Go folds the long s to s
    "full-nodes": ({"pod": {}, "NODES": {"Items": [{"Metadata": {"NAME": "a"}}]}}, ("a",)),
    "last-wins": ({"Pod": {}, "NodeNames": ["a"], "nodenames": ["b"]}, ("b",)),
    "last-wins-exact": ({"Pod": {}, "nodenames": ["b"], "NodeNames": ["a"]}, ("a",)),
}


@pytest.mark.parametrize(("document", "names"), list(CASES.values()), ids=list(CASES))
def test_keys_are_matched_without_regard_to_case_as_gos_decoder_does(document: dict[str, Any], names: tuple[str, ...]) -> None:
    assert parse_extender_args(body(document)).node_names == names


def test_a_key_repeated_exactly_counts_where_it_came_last() -> None:
    raw = b'{"Pod": {}, "NodeNames": ["a"], "nodeNames": ["b"], "NodeNames": ["c"]}'
    assert parse_extender_args(raw).node_names == ("c",)


def test_binding_and_preemption_keys_are_matched_without_regard_to_case() -> None:
    binding = parse_binding_args(body({"podname": "p", "PODNAMESPACE": "ml", "podUid": "u-1", "node": "gpu-a"}))
    assert binding == BindingArgs(pod_name="p", pod_namespace="ml", pod_uid="u-1", node="gpu-a")
    victims = {"gpu-a": {"pods": [{"uid": "v1"}], "numPdbViolations": 2}}
    args = parse_preemption_args(body({"pod": {}, "nodeNameToMetaVictims": victims}))
    assert args.victims == {"gpu-a": ("v1",)} and args.pdb_violations == {"gpu-a": 2}


def test_a_dotless_i_is_not_an_i_for_go_either() -> None:
    with pytest.raises(WireError, match="PodUID"):
        parse_binding_args(body({"PodName": "p", "PodNamespace": "ml", "PodU\u0131D": "u-1", "Node": "gpu-a"}))


def test_node_names_win_over_full_nodes_and_an_empty_candidate_list_is_allowed() -> None:
    both = parse_extender_args(body({"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "x"}}]}, "NodeNames": ["y"]}))
    assert both.node_names == ("y",) and both.full_nodes is False
    assert parse_extender_args(body({"Pod": {}, "NodeNames": []})).node_names == ()
    assert parse_extender_args(body({"Pod": {}, "Nodes": {"items": []}})) == ExtenderArgs({}, (), full_nodes=True)


def test_a_name_of_exactly_253_characters_is_accepted() -> None:
    name = "n" * wire.MAX_NAME
    assert parse_extender_args(body({"Pod": {}, "NodeNames": [name]})).node_names == (name,)


def test_the_filter_result_has_exactly_the_go_field_names_with_null_nodes() -> None:
    result = FilterResult(
        node_names=("gpu-a-0",),
        failed={"gpu-b-1": "2 GPUs free, the pod asks for 4"},
        unresolvable={"cpu-0": "no H100-80GB"},
    )
    assert result.to_json() == {
        "Nodes": None,
        "NodeNames": ["gpu-a-0"],
        # kube-scheduler 1.20 reads only FailedNodes; later ones let FailedAndUnresolvableNodes win
        "FailedNodes": {"gpu-b-1": "2 GPUs free, the pod asks for 4", "cpu-0": "no H100-80GB"},
        "FailedAndUnresolvableNodes": {"cpu-0": "no H100-80GB"},
        "Error": "",
    }
    assert json.loads(json.dumps(result.to_json()))["Nodes"] is None


def test_an_empty_filter_result_still_writes_every_field() -> None:
    assert FilterResult(error="Pod.spec.priority: must be a whole number").to_json() == {
        "Nodes": None, "NodeNames": [], "FailedNodes": {}, "FailedAndUnresolvableNodes": {},
        "Error": "Pod.spec.priority: must be a whole number",
    }


def test_priorities_are_host_score_pairs_clamped_to_whole_numbers_from_0_to_10() -> None:
    scores = {"a": 4.6, "b": -3.0, "c": 42, "d": math.nan, "e": math.inf, "f": -math.inf, "g": 7, "h": 10.4, "i": 0.2}
    reply = priorities_json(scores)
    assert reply == [
        {"Host": "a", "Score": 5}, {"Host": "b", "Score": 0}, {"Host": "c", "Score": 10},
        {"Host": "d", "Score": 0}, {"Host": "e", "Score": 0}, {"Host": "f", "Score": 0},
        {"Host": "g", "Score": 7}, {"Host": "h", "Score": 10}, {"Host": "i", "Score": 0},
    ]
    assert all(type(entry["Score"]) is int for entry in reply)
    assert json.loads(json.dumps(reply, allow_nan=False)) == reply
    assert priorities_json({}) == []


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.floats(allow_nan=True, allow_infinity=True), max_size=8))
def test_every_priority_is_an_integer_score_in_range_for_any_float(scores: dict[str, float]) -> None:
    reply = priorities_json(scores)
    assert [entry["Host"] for entry in reply] == list(scores)
    assert all(type(entry["Score"]) is int and wire.MIN_PRIORITY <= entry["Score"] <= wire.MAX_PRIORITY for entry in reply)


def test_binding_args_parse_from_the_go_field_names() -> None:
    args = parse_binding_args(body({"PodName": "trainer-0", "PodNamespace": "ml", "PodUID": "6f1c-uid", "Node": "gpu-a-0"}))
    assert args == BindingArgs(pod_name="trainer-0", pod_namespace="ml", pod_uid="6f1c-uid", node="gpu-a-0")
    assert wire.binding_result_json() == {"Error": ""}
    assert wire.binding_result_json("node gone") == {"Error": "node gone"}


def test_meta_preemption_args_keep_victim_uids_and_pdb_violations_including_empty_lists() -> None:
    pod = make_pod()
    document = {
        "Pod": pod,
        "NodeNameToVictims": None,
        "NodeNameToMetaVictims": {
            "gpu-a-0": {"Pods": [{"UID": "victim-1"}, {"UID": "victim-2"}], "NumPDBViolations": 1},
            "gpu-b-1": {"Pods": [], "NumPDBViolations": 0},
            "gpu-c-2": {"Pods": None, "NumPDBViolations": 0},
        },
    }
    args = parse_preemption_args(body(document))
    assert args.pod == pod
    assert args.victims == {"gpu-a-0": ("victim-1", "victim-2"), "gpu-b-1": (), "gpu-c-2": ()}
    assert args.pdb_violations == {"gpu-a-0": 1, "gpu-b-1": 0, "gpu-c-2": 0}


def test_full_preemption_args_reduce_victim_pods_to_their_uids() -> None:
    document = {
        "Pod": make_pod(),
        "NodeNameToVictims": {
            "gpu-a-0": {"Pods": [make_pod("low-0", uid="victim-1"), make_pod("low-1", uid="victim-2")], "NumPDBViolations": 2},
            "gpu-b-1": {"Pods": [], "NumPDBViolations": 0},
        },
        "NodeNameToMetaVictims": None,
    }
    args = parse_preemption_args(body(document))
    assert args.victims == {"gpu-a-0": ("victim-1", "victim-2"), "gpu-b-1": ()}
    assert args.pdb_violations == {"gpu-a-0": 2, "gpu-b-1": 0}


def test_preemption_args_without_victim_maps_name_no_nodes() -> None:
    args = parse_preemption_args(body({"Pod": {}, "NodeNameToVictims": None, "NodeNameToMetaVictims": None}))
    assert args.victims == {} and args.pdb_violations == {}


def test_the_preemption_reply_is_always_the_meta_form_and_reads_back() -> None:
    reply = preemption_result_json({"gpu-a-0": ["victim-1", "victim-2"], "gpu-b-1": ()}, {"gpu-a-0": 1})
    assert reply == {
        "NodeNameToMetaVictims": {
            "gpu-a-0": {"Pods": [{"UID": "victim-1"}, {"UID": "victim-2"}], "NumPDBViolations": 1},
            "gpu-b-1": {"Pods": [], "NumPDBViolations": 0},
        }
    }
    again = parse_preemption_args(body({"Pod": {}, **reply}))
    assert again.victims == {"gpu-a-0": ("victim-1", "victim-2"), "gpu-b-1": ()}
    assert again.pdb_violations == {"gpu-a-0": 1, "gpu-b-1": 0}


def test_decode_returns_the_json_object() -> None:
    assert decode(b'{"a": [1, 2.5, null, true, "x"]}') == {"a": [1, 2.5, None, True, "x"]}
    assert issubclass(WireError, ValueError)


# --- bad input: each names the field that is wrong ------------------------------------------------------------------

_GOOD_BINDING = {"PodName": "p", "PodNamespace": "ns", "PodUID": "u", "Node": "n"}

# id: (parser, body, expected where, module limits to lower for the case)
BAD_BODIES: dict[str, tuple[str, bytes, str, dict[str, int]]] = {
    "not-json": ("extender", b'{"Pod": {', "body", {}),
    "empty-body": ("binding", b"", "body", {}),
    "not-utf8": ("extender", b'{"Pod": {"x": "\xff\xfe"}, "NodeNames": []}', "body", {}),
    "array-not-object": ("extender", b'[{"Pod": {}}]', "body", {}),
    "string-not-object": ("binding", b'"PodName"', "body", {}),
    "null-not-object": ("preemption", b"null", "body", {}),
    "nan-constant": ("extender", b'{"Pod": {}, "NodeNames": [NaN]}', "body", {}),
    "infinity-constant": ("preemption", b'{"Pod": {"spec": {"priority": -Infinity}}}', "body", {}),
    "deeply-nested": ("extender", b"[" * 100_000, "body", {}),
    "deeply-nested-object": ("preemption", b'{"Pod": ' * 100_000, "body", {}),
    "over-max-body": ("extender", body({"Pod": {}, "NodeNames": ["a-long-node-name"]}), "body", {"MAX_BODY_BYTES": 16}),
    "missing-pod": ("extender", body({"NodeNames": ["n1"]}), "Pod", {}),
    "pod-null": ("extender", body({"Pod": None, "NodeNames": ["n1"]}), "Pod", {}),
    "pod-a-list": ("preemption", body({"Pod": [], "NodeNameToMetaVictims": {}}), "Pod", {}),
    "preemption-missing-pod": ("preemption", body({"NodeNameToMetaVictims": {}}), "Pod", {}),
    "no-nodes-at-all": ("extender", body({"Pod": {}, "Nodes": None, "NodeNames": None}), "NodeNames", {}),
    "node-names-a-string": ("extender", body({"Pod": {}, "NodeNames": "n1"}), "NodeNames", {}),
    "node-names-an-object": ("extender", body({"Pod": {}, "NodeNames": {"n1": True}}), "NodeNames", {}),
    "node-name-a-number": ("extender", body({"Pod": {}, "NodeNames": ["n0", 7]}), "NodeNames[1]", {}),
    "node-name-null": ("extender", body({"Pod": {}, "NodeNames": ["n0", "n1", None]}), "NodeNames[2]", {}),
    "node-name-empty": ("extender", body({"Pod": {}, "NodeNames": [""]}), "NodeNames[0]", {}),
    "node-name-254-chars": ("extender", body({"Pod": {}, "NodeNames": ["n1", "n" * 254]}), "NodeNames[1]", {}),
    "too-many-node-names": ("extender", body({"Pod": {}, "NodeNames": ["a", "b", "c"]}), "NodeNames", {"MAX_NODES": 2}),
    "nodes-a-list": ("extender", body({"Pod": {}, "Nodes": []}), "Nodes", {}),
    "nodes-without-items": ("extender", body({"Pod": {}, "Nodes": {"metadata": {}}}), "Nodes.items", {}),
    "node-item-not-object": ("extender", body({"Pod": {}, "Nodes": {"items": ["n1"]}}), "Nodes.items[0]", {}),
    "node-item-without-metadata": ("extender", body({"Pod": {}, "Nodes": {"items": [{"metadata": {"name": "a"}}, {}]}}),
                                   "Nodes.items[1].metadata", {}),
    "node-item-without-name": ("extender", body({"Pod": {}, "Nodes": {"items": [{"metadata": {"uid": "x"}}]}}),
                               "Nodes.items[0].metadata.name", {}),
    "too-many-full-nodes": ("extender", body({"Pod": {}, "Nodes": {"items": [{"metadata": {"name": n}} for n in "abc"]}}),
                            "Nodes.items", {"MAX_NODES": 2}),
    "binding-missing-pod-uid": ("binding", body({**_GOOD_BINDING, "PodUID": None}), "PodUID", {}),
    "binding-without-pod-uid": ("binding", body({k: v for k, v in _GOOD_BINDING.items() if k != "PodUID"}), "PodUID", {}),
    "binding-empty-pod-name": ("binding", body({**_GOOD_BINDING, "PodName": ""}), "PodName", {}),
    "binding-namespace-a-number": ("binding", body({**_GOOD_BINDING, "PodNamespace": 3}), "PodNamespace", {}),
    "binding-node-too-long": ("binding", body({**_GOOD_BINDING, "Node": "n" * 254}), "Node", {}),
    "victims-a-list": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": [{"Pods": []}]}), "NodeNameToMetaVictims", {}),
    "full-victims-a-string": ("preemption", body({"Pod": {}, "NodeNameToVictims": "n1"}), "NodeNameToVictims", {}),
    "victim-entry-not-object": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": 3}}), "NodeNameToMetaVictims.n1", {}),
    "victim-node-name-empty": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"": {"Pods": []}}}),
                               "NodeNameToMetaVictims", {}),
    "victim-pods-not-a-list": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": {"UID": "u"}}}}),
                               "NodeNameToMetaVictims.n1.Pods", {}),
    "victim-pod-not-object": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": ["u"]}}}),
                              "NodeNameToMetaVictims.n1.Pods[0]", {}),
    "meta-victim-without-uid": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": [{"UID": "a"}, {}]}}}),
                                "NodeNameToMetaVictims.n1.Pods[1].UID", {}),
    "full-victim-without-metadata": ("preemption", body({"Pod": {}, "NodeNameToVictims": {"n1": {"Pods": [{"spec": {}}]}}}),
                                     "NodeNameToVictims.n1.Pods[0].metadata", {}),
    "full-victim-without-uid": ("preemption", body({"Pod": {}, "NodeNameToVictims": {"n1": {"Pods": [{"metadata": {"name": "v"}}]}}}),
                                "NodeNameToVictims.n1.Pods[0].metadata.uid", {}),
    "negative-pdb-violations": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": [], "NumPDBViolations": -1}}}),
                                "NodeNameToMetaVictims.n1.NumPDBViolations", {}),
    "bool-pdb-violations": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"Pods": [], "NumPDBViolations": True}}}),
                            "NodeNameToMetaVictims.n1.NumPDBViolations", {}),
    "fractional-pdb-violations": ("preemption", body({"Pod": {}, "NodeNameToVictims": {"n1": {"Pods": [], "NumPDBViolations": 1.5}}}),
                                  "NodeNameToVictims.n1.NumPDBViolations", {}),
    "text-pdb-violations": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {"n1": {"NumPDBViolations": "1"}}}),
                            "NodeNameToMetaVictims.n1.NumPDBViolations", {}),
    "too-many-victim-nodes": ("preemption", body({"Pod": {}, "NodeNameToMetaVictims": {n: {"Pods": []} for n in "abc"}}),
                              "NodeNameToMetaVictims", {"MAX_NODES": 2}),
}


@pytest.mark.parametrize(("parser", "raw", "where", "limits"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_malformed_body_raises_a_wire_error_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, parser: str, raw: bytes, where: str, limits: dict[str, int]
) -> None:
    for name, value in limits.items():
        monkeypatch.setattr(wire, name, value)
    with pytest.raises(WireError) as caught:
        PARSERS[parser][0](raw)
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.where == where
    assert str(error) == f"{where}: {error.problem}"
    assert error.problem and "\n" not in str(error)


def test_the_limits_bound_but_do_not_reject_what_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_NODES", 2)
    assert parse_extender_args(body({"Pod": {}, "NodeNames": ["a", "b"]})).node_names == ("a", "b")
    raw = body({"Pod": {}, "NodeNames": ["a"]})
    monkeypatch.setattr(wire, "MAX_BODY_BYTES", len(raw))
    assert parse_extender_args(raw).node_names == ("a",)
    with pytest.raises(WireError, match=r"^body: larger than"):
        parse_extender_args(raw + b" ")


@pytest.mark.parametrize("parser", PARSERS)
def test_an_integer_too_long_to_convert_is_a_wire_error(parser: str) -> None:
    with pytest.raises(WireError) as caught:
        PARSERS[parser][0](b'{"Pod": {"spec": {"priority": ' + b"1" * 5000 + b"}}}")
    assert caught.value.where == "body"


def test_a_node_name_with_a_newline_still_gives_a_one_line_error() -> None:
    with pytest.raises(WireError) as caught:
        parse_preemption_args(body({"Pod": {}, "NodeNameToMetaVictims": {"n1\nforged: line": 3}}))
    assert "\n" not in str(caught.value)


# --- nothing but WireError escapes, for any input --------------------------------------------------------------------

_WIRE_KEYS = ["Pod", "Nodes", "NodeNames", "items", "metadata", "name", "uid", "PodName", "PodNamespace", "PodUID",
              "Node", "NodeNameToVictims", "NodeNameToMetaVictims", "Pods", "UID", "NumPDBViolations"]
_KEYS = st.sampled_from(_WIRE_KEYS) | st.text(max_size=6)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(_WIRE_KEYS),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=25,
)
_DOCUMENTS = _JSON | st.dictionaries(_KEYS, _JSON, max_size=6)


def _parses_or_wire_error(parser: str, raw: bytes) -> None:
    parse, result_type = PARSERS[parser]
    try:
        result = parse(raw)
    except WireError as error:
        assert error.where and error.problem
        return
    assert isinstance(result, result_type)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(PARSERS)), st.binary(max_size=300))
def test_any_bytes_parse_or_raise_a_wire_error(parser: str, raw: bytes) -> None:
    _parses_or_wire_error(parser, raw)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(PARSERS)), _DOCUMENTS)
def test_any_json_value_parses_or_raises_a_wire_error(parser: str, document: object) -> None:
    _parses_or_wire_error(parser, json.dumps(document).encode())


# --- read_pod: a pod's requests, labels and annotations as a Job ----------------------------------------------------


def test_a_plain_gpu_pod_is_a_job_keyed_by_namespace_and_name() -> None:
    pod_job = read(node_name="gpu-a-0")
    assert (pod_job.uid, pod_job.namespace, pod_job.name, pod_job.node_name) == ("6f1c1b9e-uid", "ml", "trainer-0", "gpu-a-0")
    assert pod_job.gang is None and pod_job.gang_size == 1
    job = pod_job.job
    assert job.id == "ml/trainer-0"
    assert job.request == GpuRequest(kind=RequestKind.WHOLE, gpus=1)
    assert (job.priority, job.preemptible, job.submit_s, job.duration_s, job.checkpoint_interval_s) == (0, False, 0.0, 0.0, 0.0)
    assert job.gpu_models == frozenset() and job.labels == Labels()
    assert job.replicas == 1


def test_a_pod_without_a_namespace_is_in_default() -> None:
    assert read(namespace=None).job.id == "default/trainer-0"


def test_a_pod_asking_for_no_gpu_is_none() -> None:
    assert read_pod(make_pod(containers=[container({"cpu": "4", "memory": "16Gi"})]), CATALOG) is None
    assert read_pod(make_pod(containers=[container()]), CATALOG) is None
    assert read_pod(make_pod(containers=[container({"nvidia.com/gpu": "0"})]), CATALOG) is None
    assert read_pod(make_pod(containers=[]), CATALOG) is None


def test_whole_gpus_add_up_across_containers_with_requests_preferred_over_limits() -> None:
    pod_job = read(containers=[
        container({"nvidia.com/gpu": "2", "cpu": "8"}, {"nvidia.com/gpu": "2"}, name="trainer"),
        container(None, {"nvidia.com/gpu": "3"}, name="limits-only"),
        container({"nvidia.com/gpu": 1}, {"nvidia.com/gpu": "7"}, name="requests-win"),
        container({"cpu": "1"}, name="sidecar"),
    ])
    assert pod_job.job.request == GpuRequest(gpus=6)


@pytest.mark.parametrize(("containers", "inits", "gpus"), [
    (["1", "2"], ["2"], 3),   # the containers' sum is larger
    (["1", "2"], ["4"], 4),   # an init container alone needs more
    (["1"], ["2", "5", "3"], 5),  # the largest init container, not their sum
    (["0"], ["2"], 2),        # only an init container asks
])
def test_init_containers_take_the_max_with_the_containers_sum(containers: list[str], inits: list[str], gpus: int) -> None:
    pod_job = read(
        containers=[container({"nvidia.com/gpu": n}, name=f"c{i}") for i, n in enumerate(containers)],
        init_containers=[container(None, {"nvidia.com/gpu": n}, name=f"i{i}") for i, n in enumerate(inits)],
    )
    assert pod_job.job.request == GpuRequest(gpus=gpus)


def test_a_mig_resource_is_a_mig_request_of_that_profile() -> None:
    pod_job = read(containers=[container({"nvidia.com/mig-1g.10gb": "2", "cpu": "2"})])
    request = pod_job.job.request
    assert (request.kind, request.gpus, request.mig_profile) == (RequestKind.MIG, 2, "1g.10gb")


def test_mig_instances_of_one_profile_add_up_across_containers() -> None:
    pod_job = read(containers=[container({"nvidia.com/mig-3g.40gb": "1"}, name="a"),
                               container(None, {"nvidia.com/mig-3g.40gb": "1"}, name="b")])
    assert pod_job.job.request == GpuRequest(kind=RequestKind.MIG, gpus=2, mig_profile="3g.40gb")


def test_a_share_comes_from_the_milli_and_memory_annotations() -> None:
    ann = {"fleetsched.io/gpu-milli": "300", "fleetsched.io/gpu-memory-mib": "512"}
    assert read(annotations=ann, containers=[container({"cpu": "1"})]).job.request == \
        GpuRequest(kind=RequestKind.SHARE, milli=300, memory_mib=512)
    # A share may also keep the one nvidia.com/gpu the device plugin hands out.
    assert read(annotations=ann).job.request == GpuRequest(kind=RequestKind.SHARE, milli=300, memory_mib=512)
    assert read(annotations={"fleetsched.io/gpu-memory-mib": "256"}).job.request == \
        GpuRequest(kind=RequestKind.SHARE, milli=1000, memory_mib=256)
    assert read(annotations={"fleetsched.io/gpu-milli": "1000"}).job.request == \
        GpuRequest(kind=RequestKind.SHARE, milli=1000, memory_mib=0)


def test_a_share_may_ask_for_gigabytes_of_gpu_memory() -> None:
    ann = {"fleetsched.io/gpu-milli": "250", "fleetsched.io/gpu-memory-mib": "20480"}
    assert read(annotations=ann).job.request == GpuRequest(kind=RequestKind.SHARE, milli=250, memory_mib=20480)
    whole_h100 = {"fleetsched.io/gpu-memory-mib": "81920"}
    assert read(annotations=whole_h100).job.request == GpuRequest(kind=RequestKind.SHARE, milli=1000, memory_mib=81920)


def test_team_project_and_model_labels_become_the_job_labels() -> None:
    labels = {"fleetsched.io/team": "research", "fleetsched.io/project": "llm-pretrain", "fleetsched.io/model": "llama-70b",
              "app": "trainer"}
    assert read(labels=labels).job.labels == Labels(team="research", project="llm-pretrain", model="llama-70b")


def test_the_preemptible_label_checkpoint_and_duration_annotations() -> None:
    job = read(
        labels={"fleetsched.io/preemptible": "true"},
        annotations={"fleetsched.io/checkpoint-interval-s": "1800", "fleetsched.io/expected-duration-s": "7200.5"},
    ).job
    assert job.preemptible is True
    assert job.checkpoint_interval_s == 1800.0 and job.checkpointable
    assert job.duration_s == 7200.5
    assert read(labels={"fleetsched.io/preemptible": "false"}).job.preemptible is False


def test_a_runtime_limit_comes_from_the_active_deadline_or_the_annotation_the_smaller_winning() -> None:
    limit = "fleetsched.io/runtime-limit-s"
    assert read().job.runtime_limit_s == 0.0, "nothing declared: no estimate"
    assert read(deadline_s=3600).job.runtime_limit_s == 3600.0
    assert read(annotations={limit: "5400.5"}).job.runtime_limit_s == 5400.5
    assert read(deadline_s=3600, annotations={limit: "1800"}).job.runtime_limit_s == 1800.0
    assert read(deadline_s=3600, annotations={limit: "7200"}).job.runtime_limit_s == 3600.0
    assert read(annotations={limit: "0"}).job.runtime_limit_s == 0.0


def test_a_gang_label_and_size_annotation_name_the_gang() -> None:
    pod_job = read(labels={"fleetsched.io/gang": "llm-run-7"}, annotations={"fleetsched.io/gang-size": "8"})
    assert (pod_job.gang, pod_job.gang_size) == ("llm-run-7", 8)
    assert read(labels={"fleetsched.io/gang": "solo"}).gang_size == 1


def test_spec_priority_is_the_job_priority() -> None:
    assert read(priority=1000).job.priority == 1000
    assert read(priority=-5).job.priority == -5


def test_a_gpu_product_node_selector_resolves_to_the_catalog_model() -> None:
    job = read(node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "kubernetes.io/os": "linux"}).job
    assert job.gpu_models == frozenset({default_catalog().resolve("H100-80GB").name})


def test_the_gpu_models_annotation_accepts_several_models() -> None:
    job = read(annotations={"fleetsched.io/gpu-models": "H100-80GB, A100-SXM4-40GB,"}).job
    assert job.gpu_models == frozenset({CATALOG.resolve("H100-80GB").name, CATALOG.resolve("A100-SXM4-40GB").name})
    assert len(job.gpu_models) == 2


@pytest.fixture
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The host's time zone set far from UTC, so a timestamp read as local time shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_creation_timestamp_is_the_submit_time_in_epoch_seconds() -> None:
    assert read(created="2026-11-27T03:00:00Z").job.submit_s == datetime(2026, 11, 27, 3, tzinfo=UTC).timestamp() == 1_795_748_400.0
    plus_one = read(created="2026-11-27T03:00:00+01:00").job.submit_s
    assert plus_one == datetime(2026, 11, 27, 3, tzinfo=timezone(timedelta(hours=1))).timestamp() == 1_795_748_400.0 - 3600


def test_a_pod_read_from_a_filter_body_becomes_a_job() -> None:
    pod = make_pod(labels={"fleetsched.io/team": "infra"}, node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
                   containers=[container({"nvidia.com/gpu": "4"})])
    args = parse_extender_args(body({"Pod": pod, "Nodes": None, "NodeNames": ["gpu-a-0"]}))
    pod_job = read_pod(args.pod, CATALOG)
    assert pod_job is not None
    assert pod_job.job.request.gpus == 4 and pod_job.job.labels.team == "infra"


def _c(requests: dict[str, Any] | None = None, limits: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [container(requests, limits)]


_ANN = "Pod.metadata.annotations."
_REQ = "Pod.spec.containers[0].resources.requests.nvidia.com/gpu"
_ONE_GPU_SHARE = {"fleetsched.io/gpu-milli": "500"}

# id: (make_pod keyword arguments, expected where)
BAD_PODS: dict[str, tuple[dict[str, Any], str]] = {
    "two-mig-profiles": ({"containers": [container({"nvidia.com/mig-1g.10gb": "1"}, name="a"),
                                         container({"nvidia.com/mig-2g.20gb": "1"}, name="b")]}, "Pod.spec.containers"),
    "mig-and-whole-gpus": ({"containers": _c({"nvidia.com/mig-1g.10gb": "1", "nvidia.com/gpu": "1"})}, "Pod.spec.containers"),
    "mig-and-whole-in-init": ({"containers": _c({"nvidia.com/mig-1g.10gb": "1"}),
                               "init_containers": _c({"nvidia.com/gpu": "1"})}, "Pod.spec.containers"),
    "mig-and-share": ({"containers": _c({"nvidia.com/mig-1g.10gb": "1"}), "annotations": _ONE_GPU_SHARE}, "Pod.spec.containers"),
    "share-of-two-gpus": ({"containers": _c({"nvidia.com/gpu": "2"}), "annotations": _ONE_GPU_SHARE}, _ANN + "fleetsched.io/gpu-milli"),
    "milli-zero": ({"annotations": {"fleetsched.io/gpu-milli": "0"}}, _ANN + "fleetsched.io/gpu-milli"),
    "milli-1001": ({"annotations": {"fleetsched.io/gpu-milli": "1001"}}, _ANN + "fleetsched.io/gpu-milli"),
    "milli-1500": ({"annotations": {"fleetsched.io/gpu-milli": "1500"}}, _ANN + "fleetsched.io/gpu-milli"),
    "milli-abc": ({"annotations": {"fleetsched.io/gpu-milli": "abc"}}, _ANN + "fleetsched.io/gpu-milli"),
    "milli-fraction": ({"annotations": {"fleetsched.io/gpu-milli": "250.5"}}, _ANN + "fleetsched.io/gpu-milli"),
    "memory-over-a-terabyte": ({"annotations": {"fleetsched.io/gpu-memory-mib": str(2**20 + 1)}}, _ANN + "fleetsched.io/gpu-memory-mib"),
    "memory-negative": ({"annotations": {"fleetsched.io/gpu-memory-mib": "-512"}}, _ANN + "fleetsched.io/gpu-memory-mib"),
    "quantity-half": ({"containers": _c({"nvidia.com/gpu": "0.5"})}, _REQ),
    "quantity-1k": ({"containers": _c({"nvidia.com/gpu": "1k"})}, _REQ),
    "quantity-negative": ({"containers": _c({"nvidia.com/gpu": -1})}, _REQ),
    "quantity-negative-text": ({"containers": _c({"nvidia.com/gpu": "-1"})}, _REQ),
    "quantity-bool": ({"containers": _c({"nvidia.com/gpu": True})}, _REQ),
    "quantity-float": ({"containers": _c({"nvidia.com/gpu": 2.0})}, _REQ),
    "quantity-null": ({"containers": _c({"nvidia.com/gpu": None})}, _REQ),
    "quantity-empty": ({"containers": _c({"nvidia.com/gpu": ""})}, _REQ),
    "quantity-too-many": ({"containers": _c({"nvidia.com/gpu": "100000"})}, _REQ),
    "quantity-in-limits": ({"containers": _c(None, {"nvidia.com/gpu": "0.5"})}, "Pod.spec.containers[0].resources.limits.nvidia.com/gpu"),
    "mig-quantity": ({"containers": _c({"nvidia.com/mig-1g.10gb": "1.5"})}, "Pod.spec.containers[0].resources.requests.nvidia.com/mig-1g.10gb"),
    "init-quantity": ({"init_containers": _c({"nvidia.com/gpu": "two"})}, "Pod.spec.initContainers[0].resources.requests.nvidia.com/gpu"),
    "second-container-quantity": ({"containers": [container({"nvidia.com/gpu": "1"}), container({"nvidia.com/gpu": "x"})]},
                                  "Pod.spec.containers[1].resources.requests.nvidia.com/gpu"),
    "unknown-model-selector": ({"node_selector": {"nvidia.com/gpu.product": "NVIDIA-Q9000-1TB"}},
                               "Pod.spec.nodeSelector.nvidia.com/gpu.product"),
    "empty-model-selector": ({"node_selector": {"nvidia.com/gpu.product": ""}}, "Pod.spec.nodeSelector.nvidia.com/gpu.product"),
    "unknown-model-annotation": ({"annotations": {"fleetsched.io/gpu-models": "H100-80GB,Q9000"}}, _ANN + "fleetsched.io/gpu-models"),
    "preemptible-yes": ({"labels": {"fleetsched.io/preemptible": "yes"}}, "Pod.metadata.labels.fleetsched.io/preemptible"),
    "gang-size-without-gang": ({"annotations": {"fleetsched.io/gang-size": "4"}}, _ANN + "fleetsched.io/gang-size"),
    "gang-size-zero": ({"labels": {"fleetsched.io/gang": "g"}, "annotations": {"fleetsched.io/gang-size": "0"}},
                       _ANN + "fleetsched.io/gang-size"),
    "priority-high": ({"priority": "high"}, "Pod.spec.priority"),
    "priority-bool": ({"priority": True}, "Pod.spec.priority"),
    "priority-float": ({"priority": 1.5}, "Pod.spec.priority"),
    "checkpoint-negative": ({"annotations": {"fleetsched.io/checkpoint-interval-s": "-60"}}, _ANN + "fleetsched.io/checkpoint-interval-s"),
    "checkpoint-words": ({"annotations": {"fleetsched.io/checkpoint-interval-s": "hourly"}}, _ANN + "fleetsched.io/checkpoint-interval-s"),
    "duration-infinite": ({"annotations": {"fleetsched.io/expected-duration-s": "inf"}}, _ANN + "fleetsched.io/expected-duration-s"),
    "duration-nan": ({"annotations": {"fleetsched.io/expected-duration-s": "nan"}}, _ANN + "fleetsched.io/expected-duration-s"),
    "deadline-zero": ({"deadline_s": 0}, "Pod.spec.activeDeadlineSeconds"),
    "deadline-text": ({"deadline_s": "3600"}, "Pod.spec.activeDeadlineSeconds"),
    "deadline-fraction": ({"deadline_s": 3600.5}, "Pod.spec.activeDeadlineSeconds"),
    "runtime-limit-words": ({"annotations": {"fleetsched.io/runtime-limit-s": "an hour"}}, _ANN + "fleetsched.io/runtime-limit-s"),
    "runtime-limit-infinite": ({"annotations": {"fleetsched.io/runtime-limit-s": "inf"}}, _ANN + "fleetsched.io/runtime-limit-s"),
    "label-not-a-string": ({"labels": {"fleetsched.io/team": 7}}, "Pod.metadata.labels.fleetsched.io/team"),
    "annotation-not-a-string": ({"annotations": {"note": None}}, _ANN + "note"),
    "labels-a-list": ({"labels": ["team=research"]}, "Pod.metadata.labels"),
    "containers-not-a-list": ({"containers": {"name": "main"}}, "Pod.spec.containers"),
    "container-not-an-object": ({"containers": ["main"]}, "Pod.spec.containers[0]"),
    "init-containers-not-a-list": ({"init_containers": "setup"}, "Pod.spec.initContainers"),
    "resources-not-an-object": ({"containers": [{"name": "main", "resources": ["gpu"]}]}, "Pod.spec.containers[0].resources"),
    "requests-not-an-object": ({"containers": [{"name": "main", "resources": {"requests": "gpu"}}]},
                               "Pod.spec.containers[0].resources.requests"),
    "node-selector-a-list": ({"node_selector": ["gpu"]}, "Pod.spec.nodeSelector"),
    "missing-uid": ({"uid": None}, "Pod.metadata.uid"),
    "empty-uid": ({"uid": ""}, "Pod.metadata.uid"),
    "empty-name": ({"name": ""}, "Pod.metadata.name"),
    "timestamp-words": ({"created": "yesterday"}, "Pod.metadata.creationTimestamp"),
    "timestamp-a-number": ({"created": 1795748400}, "Pod.metadata.creationTimestamp"),
    "node-name-a-number": ({"node_name": 5}, "Pod.spec.nodeName"),
}


@pytest.mark.parametrize(("kwargs", "where"), BAD_PODS.values(), ids=BAD_PODS.keys())
def test_a_bad_pod_raises_a_wire_error_naming_the_field(kwargs: dict[str, Any], where: str) -> None:
    with pytest.raises(WireError) as caught:
        read_pod(make_pod(**kwargs), CATALOG)
    error = caught.value
    assert error.where.startswith("Pod.")
    assert error.where == where
    assert str(error).startswith(f"{where}: ") and "\n" not in str(error)


@pytest.mark.parametrize("part", ["metadata", "spec"])
def test_a_pod_without_metadata_or_spec_names_it(part: str) -> None:
    pod = make_pod()
    del pod[part]
    with pytest.raises(WireError) as caught:
        read_pod(pod, CATALOG)
    assert caught.value.where == f"Pod.{part}"


def test_the_quantity_error_quotes_the_value_as_the_docstring_shows() -> None:
    with pytest.raises(WireError) as caught:
        read_pod(make_pod(containers=_c({"nvidia.com/gpu": "0.5"})), CATALOG)
    assert str(caught.value) == "Pod.spec.containers[0].resources.requests.nvidia.com/gpu: must be a whole number, got '0.5'"


def test_a_caller_may_root_the_field_path_elsewhere() -> None:
    with pytest.raises(WireError) as caught:
        read_pod(make_pod(priority="high"), CATALOG, where="NodeNameToVictims.n1.Pods[0]")
    assert caught.value.where == "NodeNameToVictims.n1.Pods[0].spec.priority"


@pytest.mark.parametrize("quantity", ["²", "9" * 5000])
def test_a_quantity_that_int_cannot_read_is_a_wire_error(quantity: str) -> None:
    with pytest.raises(WireError) as caught:
        read_pod(make_pod(containers=_c({"nvidia.com/gpu": quantity})), CATALOG)
    assert caught.value.where == _REQ


def test_a_mig_resource_without_a_profile_is_a_wire_error() -> None:
    with pytest.raises(WireError) as caught:
        read_pod(make_pod(containers=_c({"nvidia.com/mig-": "1"})), CATALOG)
    assert caught.value.where.startswith("Pod.spec.containers[0].resources.requests")


# The fuzz keeps text ASCII (non-ASCII digits have their own test above).
_ASCII_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2000) | st.floats() | st.text(st.characters(max_codepoint=127), max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), children, max_size=3),
    max_leaves=12,
)
_POD_PATHS = [
    ("metadata", "name"), ("metadata", "namespace"), ("metadata", "uid"), ("metadata", "labels"),
    ("metadata", "annotations"), ("metadata", "creationTimestamp"),
    ("metadata", "labels", "fleetsched.io/preemptible"), ("metadata", "labels", "fleetsched.io/gang"),
    ("metadata", "annotations", "fleetsched.io/gpu-milli"), ("metadata", "annotations", "fleetsched.io/gpu-memory-mib"),
    ("metadata", "annotations", "fleetsched.io/gang-size"), ("metadata", "annotations", "fleetsched.io/gpu-models"),
    ("metadata", "annotations", "fleetsched.io/checkpoint-interval-s"),
    ("spec", "containers"), ("spec", "initContainers"), ("spec", "nodeSelector"), ("spec", "priority"), ("spec", "nodeName"),
    ("spec", "nodeSelector", "nvidia.com/gpu.product"),
    ("spec", "containers", 0), ("spec", "containers", 0, "resources"), ("spec", "containers", 0, "resources", "limits"),
    ("spec", "containers", 0, "resources", "requests", "nvidia.com/gpu"),
    ("spec", "containers", 0, "resources", "requests", "nvidia.com/mig-1g.10gb"),
]


def _holds(target: object, step: Any) -> bool:
    if isinstance(target, dict):
        return step in target
    return isinstance(target, list) and isinstance(step, int) and step < len(target)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(_POD_PATHS), _ASCII_JSON), min_size=1, max_size=3))
def test_any_pod_field_value_reads_or_raises_a_wire_error(changes: list[tuple[tuple[Any, ...], object]]) -> None:
    pod = make_pod(labels={}, annotations={}, node_selector={}, init_containers=[])
    for path, value in changes:
        target: Any = pod
        for step in path[:-1]:
            target = target[step] if _holds(target, step) else None
        if isinstance(target, dict) or _holds(target, path[-1]):
            target[path[-1]] = value
    try:
        result = read_pod(pod, CATALOG)
    except WireError as error:
        assert error.where.startswith("Pod.")
        return
    assert result is None or isinstance(result, PodJob)
