"""The mirrored cluster: nodes and pods as the API server last said, turned into a snapshot.

`ClusterView` holds the raw objects the mirror's list and watch deliver (by name for nodes, by
UID for pods) and builds, on demand, what the scheduling core reads: a `ClusterSnapshot` of
the GPU nodes with every bound pod holding its GPUs, and the pending pods of this scheduler
as jobs. A gang's pods become one job with a replica per pod once all of them exist; until
then they wait, with the reason.

Which GPUs a bound pod holds comes from the `fleetsched.io/gpus` annotation the extender
writes when it binds (`0,1`; `3@4` for a MIG instance at start 4 on GPU 3); a pod bound
without it (by another scheduler) is given the GPUs the device allocator would pick.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from extender.nodes import NodeInfo, PoolRule, read_node
from extender.translate import PREFIX, HeldBy, PodJob, TeamRule, read_pod
from extender.wire import WireError
from extender.world import Clock, SystemClock
from scheduler import capacity
from scheduler.catalog import Catalog
from scheduler.decision import Status
from scheduler.model import (
    AllocationError,
    ClusterSnapshot,
    Grant,
    Job,
    Node,
    Placement,
    Pool,
    ReplicaPlacement,
    empty_node,
)

log = logging.getLogger(__name__)

GPUS = PREFIX + "gpus"
READ_CACHE = 200_000
DONE = ("Succeeded", "Failed")
#: How long a pod known only from a filter request is kept without the API server showing it:
#: the watch shows a real one within a second or two.
UNCONFIRMED_S = 30.0


@dataclass(frozen=True, slots=True)
class View:
    """One consistent reading of the mirror."""

    snapshot: ClusterSnapshot
    pending: tuple[Job, ...]
    pods_of: Mapping[str, tuple[PodJob, ...]]  # job id -> its pods (a gang's in name order)
    job_of: Mapping[str, str]  # pod UID -> job id
    waiting: Mapping[str, Status]  # pod UID -> why it cannot be placed yet (an incomplete gang)
    problems: Mapping[str, str] = field(default_factory=dict)  # object -> why it was left out
    guessed: frozenset[str] = frozenset()  # running jobs whose GPUs are a guess (no annotation)


def format_grants(grants: Sequence[Grant]) -> str:
    return ",".join(str(g.gpu) if g.mig_start is None else f"{g.gpu}@{g.mig_start}" for g in grants)


def parse_grants(text: str) -> tuple[Grant, ...]:
    grants = []
    for part in text.split(","):
        gpu, _, start = part.strip().partition("@")
        if not gpu.isdigit() or (start and not start.isdigit()):
            raise ValueError(f"{GPUS}: {text!r} is not like 0,1 or 3@4")
        grants.append(Grant(int(gpu), int(start) if start else None))
    return tuple(grants)


class ClusterView:
    """Nodes and pods as last listed or watched; thread-safe; `view()` builds the snapshot."""

    def __init__(
        self, rules: Sequence[PoolRule], catalog: Catalog, scheduler_name: str, clock: Clock | None = None
    ) -> None:
        self.rules = tuple(rules)
        self.clock = clock or SystemClock()
        self.catalog = catalog
        self.scheduler_name = scheduler_name
        self._lock = threading.Lock()
        self._nodes: dict[str, Mapping[str, Any]] = {}
        self._pods: dict[str, Mapping[str, Any]] = {}
        # kind -> the clock's monotonic seconds when the API server last spoke for it (a list,
        # an event, a bookmark): the view is as old as its least recently confirmed kind.
        self.synced_at: dict[str, float] = {}
        self.version = 0  # counts changes: a planner need not plan again while it stands
        # kind -> how many lists have replaced it, and the last one's resourceVersion: a watch
        # begun before the last list applies none of its events after it (see `apply`).
        self._listings: dict[str, tuple[int, str]] = {}
        self._read_cache: dict[str, tuple[Mapping[str, Any], NodeInfo | PodJob | str | None]] = {}
        self.on_pod_read: Callable[[Mapping[str, Any]], None] | None = None  # each new pod object (events)
        self.teams: TeamRule | None = None  # governance on: where a pod's team comes from (set before reading)
        # Pods known only from a filter request (the watch not yet caught up), and since when: one
        # the API server never confirms (deleted meanwhile, or never real) must not hold GPUs in
        # every plan after; past UNCONFIRMED_S it is forgotten.
        self._unconfirmed: dict[str, float] = {}
        self._freed = False  # a bound pod ended or went since `take_freed` (its GPUs are free)

    def use_teams(self, rule: TeamRule) -> None:
        """Governance on: pods' teams come from `rule` (pods read before are read again)."""
        with self._lock:
            self.teams = rule
            self._read_cache.clear()
            self.version += 1

    def replace(self, kind: str, objects: Sequence[Mapping[str, Any]], version: str = "") -> None:
        """A fresh list of `kind` ("node" or "pod"), at resourceVersion `version`, replaces everything known of it."""
        with self._lock:
            store = self._store(kind)
            store.clear()
            for obj in objects:
                store[self._key(kind, obj)] = obj
            if kind == "pod":
                self._unconfirmed.clear()  # the list speaks for every pod: those not in it are gone
            self.synced_at[kind] = self.clock.monotonic_s()
            self.version += 1
            self._listings[kind] = (self._listings.get(kind, (0, ""))[0] + 1, version)

    def listing(self, kind: str) -> tuple[int, str]:
        """How many lists have replaced `kind` so far, and the resourceVersion of the last ("" if none)."""
        with self._lock:
            return self._listings.get(kind, (0, ""))

    def touch(self, kind: str) -> None:
        """The API server confirmed that nothing of `kind` changed (a watch bookmark)."""
        with self._lock:
            self.synced_at[kind] = self.clock.monotonic_s()
            self._forget_unconfirmed()  # the watch speaks for the pods it has not shown

    def apply(
        self, kind: str, event: str, obj: Mapping[str, Any], *, fresh: bool = True, listing: int | None = None
    ) -> bool:
        """A watch event: ADDED, MODIFIED or DELETED. `fresh=False` for an object learnt elsewhere
        (a pod in a filter request): it says nothing of the API server, so the view's age stands.

        `listing` is the count of `listing()` when the watch began. A list since (a new leader's
        relist, from another thread) may be newer than the watch's events: applied after it,
        they would undo it (a deleted object back for a while). Such an event is dropped and
        False returned: the watch must start again from that list's resourceVersion."""
        with self._lock:
            if listing is not None and listing != self._listings.get(kind, (0, ""))[0]:
                return False
            store = self._store(kind)
            key = self._key(kind, obj)
            if kind == "pod":
                if fresh:
                    self._unconfirmed.pop(key, None)
                elif key not in store:
                    self._unconfirmed[key] = self.clock.monotonic_s()
            before = store.get(key)
            if kind == "pod" and _node_name(before) and (event == "DELETED" or _phase(obj) in DONE):
                self._freed = self._freed or _phase(before) not in DONE  # its GPUs are free from now
            if event == "DELETED":
                store.pop(key, None)
            elif not (kind == "pod" and _node_name(store.get(key)) and not _node_name(obj)):
                # A pod is never unbound: an older copy (the ADDED event of a pod this process
                # bound before its watch caught up) must not undo the binding.
                store[key] = obj
            if fresh:
                self.synced_at[kind] = self.clock.monotonic_s()
                self._forget_unconfirmed()
            self.version += 1
        return True

    def bound(self, uid: str, node: str, annotations: Mapping[str, str]) -> None:
        """Records a binding this process made, ahead of the watch event that will confirm it."""
        with self._lock:
            pod = self._pods.get(uid)
            if pod is None:
                return
            metadata = dict(pod.get("metadata") or {})
            metadata["annotations"] = {**(metadata.get("annotations") or {}), **annotations}
            spec = {**(pod.get("spec") or {}), "nodeName": node}
            self._pods[uid] = {**pod, "metadata": metadata, "spec": spec}
            self.version += 1

    def take_freed(self) -> bool:
        """Whether a bound pod ended or went since the last call (the pods kube-scheduler turned
        away for want of room may fit now)."""
        with self._lock:
            freed, self._freed = self._freed, False
        return freed

    def unbound(self) -> list[tuple[str, str]]:
        """(namespace, name) of every pod of this scheduler that waits for a node, in name order."""
        with self._lock:
            pods = list(self._pods.values())
        waiting = []
        for raw in pods:
            metadata, spec = raw.get("metadata") or {}, raw.get("spec") or {}
            phase = (raw.get("status") or {}).get("phase", "Pending")
            if not spec.get("nodeName") and phase not in DONE and spec.get("schedulerName") == self.scheduler_name:
                waiting.append((str(metadata.get("namespace", "")), str(metadata.get("name", ""))))
        return sorted(waiting)

    def pod(self, uid: str) -> PodJob | None:
        """The pod as last seen, read; None when unknown, not a GPU pod, or unreadable."""
        with self._lock:
            raw = self._pods.get(uid)
        read = self._read(raw, "pod", {}) if raw is not None else None
        return read if isinstance(read, PodJob) else None

    def ended_s(self, uid: str) -> float | None:
        """When the pod stopped holding its GPUs (Succeeded or Failed: its containers' last
        finishedAt, else now; gone from the API server: now); None while it is not done."""
        with self._lock:
            raw = self._pods.get(uid)
        if raw is None:
            return self.clock.now_s()
        status = raw.get("status") or {}
        if status.get("phase") not in DONE:
            return None
        finished = [str(((c.get("state") or {}).get("terminated") or {}).get("finishedAt") or "")
                    for c in status.get("containerStatuses") or [] if isinstance(c, Mapping)]  # fmt: skip
        times = [_unix_s(text) for text in finished if text]
        known = [t for t in times if t is not None]
        return max(known) if known else self.clock.now_s()

    def node_info(self, name: str) -> NodeInfo | None:
        """The node as last seen, read; None when unknown, without GPUs, or unreadable."""
        with self._lock:
            raw = self._nodes.get(name)
        read = self._read(raw, "node", {}) if raw is not None else None
        return read if isinstance(read, NodeInfo) else None

    def knows(self, kind: str, key: str) -> bool:
        with self._lock:
            return key in self._store(kind)

    def age_s(self) -> float:
        """Seconds since the API server last spoke for the kind it spoke for least recently."""
        with self._lock:
            if len(self.synced_at) < 2:  # nodes and pods: either never listed
                return float("inf")
            return self.clock.monotonic_s() - min(self.synced_at.values())

    def _store(self, kind: str) -> dict[str, Mapping[str, Any]]:
        return self._nodes if kind == "node" else self._pods

    @staticmethod
    def _key(kind: str, obj: Mapping[str, Any]) -> str:
        metadata = obj.get("metadata") or {}
        return str(metadata.get("name") if kind == "node" else metadata.get("uid"))

    def view(self) -> View:
        with self._lock:
            self._forget_unconfirmed()
            nodes, pods = list(self._nodes.values()), list(self._pods.values())
        problems: dict[str, str] = {}
        snapshot = self._empty_snapshot(nodes, problems)
        pending: list[PodJob] = []
        placed: dict[tuple[str, str], int] = {}  # gang -> its pods bound already
        guessed: list[tuple[Mapping[str, Any], PodJob]] = []
        for raw in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("uid"))):
            phase = (raw.get("status") or {}).get("phase", "Pending")
            if phase in DONE:
                continue
            pod = self._read(raw, "pod", problems)
            if not isinstance(pod, PodJob):
                continue
            if pod.node_name:
                if GPUS in ((raw.get("metadata") or {}).get("annotations") or {}):
                    snapshot = self._bound(snapshot, raw, pod, problems)
                else:
                    guessed.append((raw, pod))
                if pod.gang is not None:
                    placed[(pod.namespace, pod.gang)] = placed.get((pod.namespace, pod.gang), 0) + 1
            elif (raw.get("spec") or {}).get("schedulerName", "default-scheduler") == self.scheduler_name:
                pending.append(pod)
        # The GPUs a pod bound without the annotation holds are a guess: made after every
        # written grant is in, a guess never takes a GPU another pod was given (that pod would
        # then be dropped, and its GPU look free here while kube-scheduler counts it used).
        for raw, pod in guessed:
            snapshot = self._bound(snapshot, raw, pod, problems)
        view = _with_gangs(snapshot, pending, placed, problems)
        return replace(view, guessed=frozenset(str(HeldBy(pod.job.id, pod.uid)) for _, pod in guessed))

    def _forget_unconfirmed(self) -> None:
        """Drops the pods learnt from filter requests that the API server has not confirmed
        within UNCONFIRMED_S (under the lock)."""
        now = self.clock.monotonic_s()
        for uid in [uid for uid, since in self._unconfirmed.items() if now - since > UNCONFIRMED_S]:
            del self._unconfirmed[uid]
            if self._pods.pop(uid, None) is not None:
                log.info("forgot pod %s: known only from a filter request, and the API server never showed it", uid)
                self.version += 1

    def _empty_snapshot(self, nodes: Sequence[Mapping[str, Any]], problems: dict[str, str]) -> ClusterSnapshot:
        """The GPU nodes read from `nodes`, all GPUs free, in pools of one shape each."""
        infos: dict[str, NodeInfo] = {}
        for raw in nodes:
            info = self._read(raw, "node", problems)
            if isinstance(info, NodeInfo):
                infos[info.name] = info
        pools: dict[str, Pool] = {}
        made: dict[str, Node] = {}
        for info in sorted(infos.values(), key=lambda i: i.name):
            pool = pools.setdefault(info.pool.name, info.pool)
            if pool != info.pool:  # a rule matched nodes of different shapes: keep pools homogeneous
                own = f"{info.pool.name}#{info.name}"
                pool = pools.setdefault(own, replace(info.pool, name=own))
            made[info.name] = _with_ready(empty_node(pool, info.name), info.ready)
        return ClusterSnapshot(MappingProxyType(pools), MappingProxyType(made))

    def _read(self, raw: Mapping[str, Any], kind: str, problems: dict[str, str]) -> NodeInfo | PodJob | None:
        """The object read, remembered while it is the same object (the store replaces, never edits)."""
        key = f"{kind} {self._key(kind, raw)}"
        known = self._read_cache.get(key)
        if known is not None and known[0] is raw:
            result = known[1]
        else:
            if kind == "pod" and self.on_pod_read is not None:
                self.on_pod_read(raw)
            try:
                result = (read_node(raw, self.rules, self.catalog) if kind == "node"
                          else read_pod(raw, self.catalog, teams=self.teams))
            except WireError as error:
                result = str(error)
            if len(self._read_cache) > READ_CACHE:
                self._read_cache.clear()
            self._read_cache[key] = (raw, result)
        if isinstance(result, str):
            problems[key] = result
            return None
        return result

    def _bound(
        self, snapshot: ClusterSnapshot, raw: Mapping[str, Any], pod: PodJob, problems: dict[str, str]
    ) -> ClusterSnapshot:
        node = snapshot.nodes.get(pod.node_name)
        if node is None:
            return snapshot  # bound to a node without GPUs, or one we no longer see
        pool = snapshot.pools[node.pool]
        written = ((raw.get("metadata") or {}).get("annotations") or {}).get(GPUS)
        try:
            grants = parse_grants(written) if written else capacity.find_grants(pool, node, pod.job.request)
            if grants is None:
                raise AllocationError(f"no free capacity for {pod.job.request.describe()}")
            job = replace(pod.job, id=str(HeldBy(pod.job.id, pod.uid)))
            return snapshot.assume(Placement(job, (ReplicaPlacement(node.name, grants),)), pod.start_s)
        except (ValueError, AllocationError) as error:
            problems[f"pod {pod.namespace}/{pod.name}"] = f"bound to {node.name} but {error}"
            return snapshot


def _with_gangs(
    snapshot: ClusterSnapshot, pods: Sequence[PodJob], placed: Mapping[tuple[str, str], int], problems: dict[str, str]
) -> View:
    """Pending pods as jobs: a gang's waiting pods are one job once, with those bound already,
    the gang is whole (a gang whose first pods were bound before the rest came finishes)."""
    jobs: list[Job] = []
    pods_of: dict[str, tuple[PodJob, ...]] = {}
    waiting: dict[str, Status] = {}
    gangs: dict[tuple[str, str], list[PodJob]] = {}
    for pod in pods:
        if pod.gang is None:
            jobs.append(pod.job)
            pods_of[pod.job.id] = (pod,)
        else:
            gangs.setdefault((pod.namespace, pod.gang), []).append(pod)
    for (namespace, gang), members in sorted(gangs.items()):
        members.sort(key=lambda p: p.name)
        size = members[0].gang_size
        alike = all(p.job.request == members[0].job.request and p.gang_size == size for p in members)
        if not alike:
            for pod in members:
                waiting[pod.uid] = Status.wait(f"gang {gang}: its pods ask for different GPUs or sizes")
            continue
        have = len(members) + placed.get((namespace, gang), 0)
        if have != size:  # too few: the rest may come; too many: a pod labelled into it by mistake, bound to none
            told = f"{have} of {size} pods exist" if have < size else f"{have} pods for a gang of {size} (gang-size)"
            for pod in members:
                waiting[pod.uid] = Status.wait(f"gang {gang}: {told}")
            continue
        first = members[0].job
        job = replace(first, id=f"{namespace}/gang:{gang}", replicas=len(members),
                      submit_s=max(p.job.submit_s for p in members))
        jobs.append(job)
        pods_of[job.id] = tuple(members)
    job_of = {pod.uid: job_id for job_id, members in pods_of.items() for pod in members}
    return View(snapshot, tuple(jobs), pods_of, job_of, waiting, problems)


def _unix_s(text: str) -> float | None:
    """An RFC 3339 time of the API server in Unix seconds; None when it is not one."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _phase(pod: Mapping[str, Any] | None) -> str:
    return str(((pod or {}).get("status") or {}).get("phase", "Pending"))


def _node_name(pod: Mapping[str, Any] | None) -> str:
    return str(((pod or {}).get("spec") or {}).get("nodeName") or "")


def _with_ready(node: Node, ready: bool) -> Node:
    return node if ready else Node(name=node.name, pool=node.pool, gpus=node.gpus, ready=False)
