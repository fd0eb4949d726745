"""Kubernetes pods into scheduling jobs: GPU requests, labels and annotations, read strictly.

What a pod asks for:

| where | key | meaning |
|---|---|---|
| container `resources` (requests, else limits) | `nvidia.com/gpu` (or `nvidia.com/gpu.shared`) | whole GPUs |
| container `resources` | `nvidia.com/mig-<profile>` | MIG instances of one profile (mixed strategy; `+` written `.`) |
| `nvidia.com/gpu`, nodeSelector `nvidia.com/gpu.product` = `<model>-MIG-<profile>` | | MIG instances (single) |
| annotation | `fleetsched.io/gpu-milli`, `fleetsched.io/gpu-memory-mib` | a share of one GPU: milli-GPU and memory |
| label | `fleetsched.io/team`, `fleetsched.io/project`, `fleetsched.io/model` | whom the cost is attributed to |
| namespace or a label | (a governance file's `team_from`, `team_label`: `TeamRule`) | the team, when governance is on |
| label | `fleetsched.io/preemptible` = `"true"` | may run on spot capacity and be evicted |
| annotation | `fleetsched.io/checkpoint-interval-s` | seconds between checkpoints (0: none) |
| annotation | `fleetsched.io/expected-duration-s` | expected run time, for spot risk (0: unknown) |
| `spec.activeDeadlineSeconds` | | the longest it runs once started, for reservations |
| annotation | `fleetsched.io/runtime-limit-s` | the same, declared without a deadline (the smaller wins) |
| label, annotation | `fleetsched.io/gang`, `fleetsched.io/gang-size` | a gang's name and how many pods it has |
| annotation | `fleetsched.io/gpu-models` | comma-separated GPU models the pod accepts |
| nodeSelector | `nvidia.com/gpu.product` | the one GPU model the pod accepts (GFD's names) |
| `spec.priority` | | the priority (PriorityClass resolved by the API server) |

Containers' requests add up; an init container runs alone, so the pod needs the largest of
its init containers' requests and its containers' sum (Kubernetes' effective request). A
mistake raises `WireError` naming the field, e.g.
`Pod.spec.containers[0].resources.requests.nvidia.com/gpu: must be a whole number, got '0.5'`.

`managed_resources` lists every resource read here (every MIG profile of the catalog's GPUs):
kube-scheduler's `managedResources` for the extender must name exactly those.
`unknown_annotations` finds `fleetsched.io/` annotations nothing reads (a misspelt key is
otherwise silently ignored); the extender reports them as an Event on the pod.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from extender.modes import GPU, GPU_SHARED, MIG_PREFIX, profile_of, resource_of
from extender.wire import WireError, expect_object
from scheduler.catalog import Catalog
from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, Labels, RequestKind

__all__ = ["GPU", "MIG_PREFIX", "HeldBy", "PodJob", "TeamRule", "managed_resources", "read_pod", "unknown_annotations"]

PREFIX = "fleetsched.io/"
SHARE_MILLI = PREFIX + "gpu-milli"
SHARE_MEMORY = PREFIX + "gpu-memory-mib"
PREEMPTIBLE = PREFIX + "preemptible"
CHECKPOINT = PREFIX + "checkpoint-interval-s"
DURATION = PREFIX + "expected-duration-s"
RUNTIME_LIMIT = PREFIX + "runtime-limit-s"
GANG = PREFIX + "gang"
GANG_SIZE = PREFIX + "gang-size"
GPU_MODELS = PREFIX + "gpu-models"
PRODUCT = "nvidia.com/gpu.product"
GPUS = PREFIX + "gpus"  # written by the extender at bind
ANNOTATIONS = frozenset({SHARE_MILLI, SHARE_MEMORY, CHECKPOINT, DURATION, RUNTIME_LIMIT, GANG, GANG_SIZE, GPU_MODELS,
                         GPUS})  # fmt: skip
LABELS = frozenset({PREFIX + "team", PREFIX + "project", PREFIX + "model", PREEMPTIBLE, GANG, GANG_SIZE})
_SINGLE_PROFILE = re.compile(r"-MIG-(.+?)(?:-SHARED)?$", re.IGNORECASE)
MAX_COUNT = 1024
MAX_MEMORY_MIB = 1 << 20  # a terabyte of GPU memory


@dataclass(frozen=True, slots=True)
class PodJob:
    """A pod read as one replica of a job, and the gang it belongs to (None when alone)."""

    job: Job
    uid: str
    namespace: str
    name: str
    gang: str | None = None
    gang_size: int = 1
    node_name: str = ""
    start_s: float = 0.0  # when it started running (status.startTime; else when it was created)
    # The GPUs (`nvidia.com/gpu`) each init container and each container asks, in order: HAMi's
    # annotations name the devices per container.
    container_gpus: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


@dataclass(frozen=True, slots=True)
class TeamRule:
    """Where a pod's team comes from when governance is on: its namespace (`source` "namespace")
    or the pod label `label` (`source` "label"; no label: no team)."""

    source: str = "namespace"
    label: str = PREFIX + "team"

    def team(self, namespace: str, labels: Mapping[str, str]) -> str:
        return namespace if self.source == "namespace" else labels.get(self.label, "")


@dataclass(frozen=True, slots=True)
class HeldBy:
    """The pod that holds GPUs in a snapshot: its job's id and its UID. A snapshot keys running
    jobs by text, `str(HeldBy(...))` (`ml/train@5f1c...`): pods of one gang hold theirs apart."""

    job_id: str
    uid: str

    def __str__(self) -> str:
        return f"{self.job_id}@{self.uid}"

    @classmethod
    def parse(cls, key: str) -> HeldBy:
        """The pod a snapshot's running-job key names (namespaces, names and UIDs have no `@`)."""
        job_id, _, uid = key.rpartition("@")
        return cls(job_id, uid)


def pod_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def managed_resources(catalog: Catalog) -> tuple[str, ...]:
    """The extended resources pods ask fleetsched for: GPUs, and every MIG profile of the catalog's GPUs."""
    profiles = {profile for model in catalog.models.values() if model.mig is not None for profile in model.mig.profiles}
    return (GPU, GPU_SHARED, *sorted({resource_of(profile) for profile in profiles}))


def unknown_annotations(annotations: Mapping[str, str]) -> list[str]:
    """A line for every `fleetsched.io/` annotation nothing reads, with the key it may have meant."""
    found = []
    for key in sorted(annotations):
        if not key.startswith(PREFIX) or key in ANNOTATIONS:
            continue
        if key in LABELS:
            found.append(f"annotation {key} is read as a label only; set it under metadata.labels")
            continue
        close = _closest(key.removeprefix(PREFIX), sorted(known.removeprefix(PREFIX) for known in ANNOTATIONS))
        hint = f"; did you mean {PREFIX}{close}?" if close else f"; known: {', '.join(sorted(ANNOTATIONS))}"
        found.append(f"annotation {key} is not one fleetsched reads{hint}")
    return found


def _closest(name: str, names: list[str]) -> str:
    """The name `name` is most likely a misspelling of: at most 3 edits away, or one extends the other."""
    best = min(names, key=lambda known: (_edits(name, known), known))
    near = _edits(name, best) <= 3 or best.startswith(name) or name.startswith(best)
    return best if near and min(len(name), len(best)) >= 3 else ""


def _edits(first: str, second: str) -> int:
    """Levenshtein distance: insertions, deletions and substitutions."""
    row = list(range(len(second) + 1))
    for i, a in enumerate(first, 1):
        previous, row[0] = row[0], i
        for j, b in enumerate(second, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (a != b))
    return row[-1]


def read_pod(
    pod: Mapping[str, Any], catalog: Catalog, where: str = "Pod", teams: TeamRule | None = None
) -> PodJob | None:
    """The pod as a job, or None when it asks for no GPU (the extender lets it go anywhere).
    With `teams` (governance on) the job's team is the one the rule names."""
    metadata = expect_object(pod.get("metadata"), f"{where}.metadata")
    spec = expect_object(pod.get("spec"), f"{where}.spec")
    name = _string(metadata.get("name"), f"{where}.metadata.name")
    namespace = _string(metadata.get("namespace", "default"), f"{where}.metadata.namespace")
    uid = _string(metadata.get("uid"), f"{where}.metadata.uid")
    labels = _strings(metadata.get("labels"), f"{where}.metadata.labels")
    annotations = _strings(metadata.get("annotations"), f"{where}.metadata.annotations")
    request, container_gpus = _request(spec, annotations, where)
    if request is None:
        return None
    models = _models(spec, annotations, catalog, where)
    priority = spec.get("priority", 0)
    if priority is None:
        priority = 0
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise WireError(f"{where}.spec.priority", f"must be a whole number, got {priority!r}")
    gang = labels.get(GANG) or annotations.get(GANG)
    size = _count(annotations.get(GANG_SIZE, labels.get(GANG_SIZE, "1")), f"{where}.metadata.annotations.{GANG_SIZE}")
    if gang is None and size != 1:
        raise WireError(f"{where}.metadata.annotations.{GANG_SIZE}", f"a gang size needs a {GANG} label")
    job = Job(
        id=pod_key(namespace, name),
        request=request,
        submit_s=_timestamp(metadata.get("creationTimestamp"), f"{where}.metadata.creationTimestamp"),
        duration_s=_seconds(annotations.get(DURATION, "0"), f"{where}.metadata.annotations.{DURATION}"),
        gpu_models=models,
        priority=priority,
        preemptible=_flag(labels.get(PREEMPTIBLE, "false"), f"{where}.metadata.labels.{PREEMPTIBLE}"),
        checkpoint_interval_s=_seconds(annotations.get(CHECKPOINT, "0"), f"{where}.metadata.annotations.{CHECKPOINT}"),
        runtime_limit_s=_runtime_limit(spec, annotations, where),
        labels=Labels(
            team=teams.team(namespace, labels) if teams is not None else labels.get(PREFIX + "team", ""),
            project=labels.get(PREFIX + "project", ""),
            model=labels.get(PREFIX + "model", ""),
        ),
    )
    node_name = spec.get("nodeName") or ""
    if not isinstance(node_name, str):
        raise WireError(f"{where}.spec.nodeName", "must be a string")
    status = pod.get("status") or {}
    started = status.get("startTime") if isinstance(status, Mapping) else None
    start_s = _timestamp(started, f"{where}.status.startTime") if started is not None else job.submit_s
    return PodJob(job, uid, namespace, name, gang, size, node_name, start_s, container_gpus)


def _request(
    spec: Mapping[str, Any], annotations: Mapping[str, str], where: str
) -> tuple[GpuRequest | None, tuple[tuple[int, ...], tuple[int, ...]]]:
    containers = _containers(spec.get("containers"), f"{where}.spec.containers")
    inits = _containers(spec.get("initContainers") or [], f"{where}.spec.initContainers")
    total: dict[str, int] = {}
    regular = [_gpu_resources(c, f"{where}.spec.containers[{i}]") for i, c in enumerate(containers)]
    initial = [_gpu_resources(c, f"{where}.spec.initContainers[{i}]") for i, c in enumerate(inits)]
    for asked in regular:
        for key, count in asked.items():
            total[key] = total.get(key, 0) + count
    for asked in initial:
        for key, count in asked.items():
            total[key] = max(total.get(key, 0), count)
    total = {key: count for key, count in total.items() if count > 0}
    per_container = (tuple(asked.get(GPU, 0) for asked in initial), tuple(asked.get(GPU, 0) for asked in regular))
    return _kind(spec, total, annotations, where), per_container


def _kind(spec: Mapping[str, Any], total: Mapping[str, int], annotations: Mapping[str, str],
          where: str) -> GpuRequest | None:  # fmt: skip
    migs = sorted(key for key in total if key.startswith(MIG_PREFIX))
    share = SHARE_MILLI in annotations or SHARE_MEMORY in annotations
    if len(migs) > 1:
        raise WireError(f"{where}.spec.containers", f"asks for two MIG profiles ({', '.join(migs)}); one per pod")
    if migs and (GPU in total or share):
        raise WireError(f"{where}.spec.containers", f"asks for {migs[0]} and whole or shared GPUs; one kind per pod")
    if migs:
        return GpuRequest(kind=RequestKind.MIG, gpus=total[migs[0]], mig_profile=profile_of(migs[0][len(MIG_PREFIX):]))
    single = _single_strategy_profile(spec)
    if single and GPU in total and not share:  # MIG single strategy: each nvidia.com/gpu is an instance
        return GpuRequest(kind=RequestKind.MIG, gpus=total[GPU], mig_profile=single)
    if share:
        if total.get(GPU, 1) != 1:
            problem = f"a share is of one GPU; the pod asks for {total[GPU]}"
            raise WireError(f"{where}.metadata.annotations.{SHARE_MILLI}", problem)
        milli = _count(annotations.get(SHARE_MILLI, "1000"), f"{where}.metadata.annotations.{SHARE_MILLI}")
        memory = _count(annotations.get(SHARE_MEMORY, "0"), f"{where}.metadata.annotations.{SHARE_MEMORY}", zero=True,
                        most=MAX_MEMORY_MIB)
        if not 0 < milli <= 1000:
            raise WireError(f"{where}.metadata.annotations.{SHARE_MILLI}", f"must be 1..1000, got {milli}")
        return GpuRequest(kind=RequestKind.SHARE, milli=milli, memory_mib=memory)
    if GPU in total:
        return GpuRequest(gpus=total[GPU])
    return None


def _single_strategy_profile(spec: Mapping[str, Any]) -> str:
    """The MIG profile a pod selects by GFD's single-strategy product (`...-MIG-1g.5gb`), or ''."""
    selector = spec.get("nodeSelector")
    product = selector.get(PRODUCT) if isinstance(selector, Mapping) else None
    found = _SINGLE_PROFILE.search(product) if isinstance(product, str) else None
    return found.group(1) if found is not None and found.group(1).upper() != "INVALID" else ""


def _gpu_resources(container: Mapping[str, Any], where: str) -> dict[str, int]:
    resources = container.get("resources") or {}
    resources = expect_object(resources, f"{where}.resources")
    found: dict[str, int] = {}
    for part in ("limits", "requests"):  # requests win where both are given
        values = resources.get(part) or {}
        values = expect_object(values, f"{where}.resources.{part}")
        for key, value in values.items():
            if key in (GPU, GPU_SHARED) or (isinstance(key, str) and key.startswith(MIG_PREFIX)):
                if key == MIG_PREFIX:
                    problem = f"names no MIG profile (like {MIG_PREFIX}1g.10gb)"
                    raise WireError(f"{where}.resources.{part}.{key}", problem)
                # A replica of a shared GPU (renameByDefault) is asked for like a GPU.
                found[GPU if key == GPU_SHARED else key] = _count(value, f"{where}.resources.{part}.{key}", zero=True)
    return found


def _models(spec: Mapping[str, Any], annotations: Mapping[str, str], catalog: Catalog, where: str) -> frozenset[str]:
    names: list[tuple[str, str]] = []
    selector = spec.get("nodeSelector") or {}
    selector = expect_object(selector, f"{where}.spec.nodeSelector")
    if PRODUCT in selector:
        field_path = f"{where}.spec.nodeSelector.{PRODUCT}"
        names.append((_string(selector[PRODUCT], field_path), field_path))
    if GPU_MODELS in annotations:
        field_path = f"{where}.metadata.annotations.{GPU_MODELS}"
        names.extend((part.strip(), field_path) for part in annotations[GPU_MODELS].split(",") if part.strip())
    models = set()
    for name, field_path in names:
        try:
            models.add(catalog.resolve(name).name)
        except InputError as error:
            raise WireError(field_path, str(error)) from None
    return frozenset(models)


def _containers(value: object, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        raise WireError(where, f"must be a list of containers, got {type(value).__name__}")
    return [expect_object(item, f"{where}[{index}]") for index, item in enumerate(value)]


def _string(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(where, f"must be a non-empty string, got {value!r}")
    return value


def _strings(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    items = expect_object(value, where)
    for key, item in items.items():
        if not isinstance(item, str):
            raise WireError(f"{where}.{key}", f"must be a string, got {type(item).__name__}")
    return dict(items)


def _count(value: object, where: str, *, zero: bool = False, most: int = MAX_COUNT) -> int:
    """A whole number as Kubernetes writes extended-resource quantities: 2 or "2"."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**12 else value
    if not isinstance(text, str) or not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise WireError(where, f"must be a whole number, got {value!r}")
    count = int(text)
    if count > most or (count == 0 and not zero):
        raise WireError(where, f"must be {0 if zero else 1}..{most}, got {count}")
    return count


def _seconds(value: object, where: str) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise WireError(where, f"must be a number of seconds, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise WireError(where, f"must be a finite number >= 0, got {value!r}")
    return seconds


def _runtime_limit(spec: Mapping[str, Any], annotations: Mapping[str, str], where: str) -> float:
    """The longest the pod runs once started: the smaller of `spec.activeDeadlineSeconds` (after
    which the kubelet ends it) and the runtime-limit annotation; 0 when neither is given."""
    limits: list[float] = []
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if not isinstance(deadline, int) or isinstance(deadline, bool) or deadline < 1:
            raise WireError(f"{where}.spec.activeDeadlineSeconds", f"must be a whole number >= 1, got {deadline!r}")
        limits.append(float(deadline))
    if RUNTIME_LIMIT in annotations:
        limit = _seconds(annotations[RUNTIME_LIMIT], f"{where}.metadata.annotations.{RUNTIME_LIMIT}")
        if limit > 0:
            limits.append(limit)
    return min(limits, default=0.0)


def _flag(value: str, where: str) -> bool:
    if value not in ("true", "false"):
        raise WireError(where, f'must be "true" or "false", got {value!r}')
    return value == "true"


def _timestamp(value: object, where: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise WireError(where, f"must be an RFC 3339 time, got {value!r}")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise WireError(where, f"must be an RFC 3339 time, got {value!r}") from None
