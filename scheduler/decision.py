"""What a scheduling cycle decides, the Status codes that explain it, and `validate`.

`Status` follows the Kubernetes scheduling framework: UNSCHEDULABLE means the job might fit
after preemption (so postfilter runs), UNRESOLVABLE means no eviction will ever make it fit
that node (wrong GPU model, no MIG), WAIT keeps a job queued (quota, incomplete gang).
Expected misfits are data; bugs raise.

`validate(snapshot, decision)` is the one checker of decisions, used after every enacted
decision in the simulator and by every placer test: no over-allocation, legal MIG geometry,
gangs whole, no job placed twice, victims actually running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType

from scheduler import mig
from scheduler.model import (
    AllocationError,
    ClusterSnapshot,
    Grant,
    Placement,
    ReplicaPlacement,
    RequestKind,
)

__all__ = [
    "OK",
    "ClassVerdict",
    "Code",
    "Decision",
    "Grant",
    "InvalidDecisionError",
    "Pending",
    "Placement",
    "Preemption",
    "ReplicaPlacement",
    "Reservation",
    "SolverReport",
    "Status",
    "apply",
    "problems",
    "validate",
]


class Code(IntEnum):
    """The outcome of one hook for one job (and node)."""

    SUCCESS = 0
    UNSCHEDULABLE = 1
    UNRESOLVABLE = 2
    WAIT = 3


@dataclass(frozen=True, slots=True)
class Status:
    """A hook's answer: a code, the reasons, and which plugin gave it (set by the Framework)."""

    code: Code = Code.SUCCESS
    reasons: tuple[str, ...] = ()
    plugin: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS

    @classmethod
    def unschedulable(cls, *reasons: str) -> Status:
        return cls(Code.UNSCHEDULABLE, reasons)

    @classmethod
    def unresolvable(cls, *reasons: str) -> Status:
        return cls(Code.UNRESOLVABLE, reasons)

    @classmethod
    def wait(cls, *reasons: str) -> Status:
        return cls(Code.WAIT, reasons)

    def by(self, plugin: str) -> Status:
        """This status attributed to `plugin`."""
        return Status(self.code, self.reasons, plugin)

    def __str__(self) -> str:
        text = "; ".join(self.reasons) or self.code.name.lower()
        return f"{self.plugin}: {text}" if self.plugin else text


OK = Status()


@dataclass(frozen=True, slots=True)
class Preemption:
    """A running job to evict, why, and for which job."""

    job: str
    reason: str
    for_job: str = ""


@dataclass(frozen=True, slots=True)
class ClassVerdict:
    """Why a job does not fit one node equivalence class (nodes alike in pool and free GPUs)."""

    pool: str
    nodes: int
    free: str
    status: Status


@dataclass(frozen=True, slots=True)
class Pending:
    """A job left waiting: the deciding status and, when it reached filtering, one verdict per class.

    `fits_nowhere` says the job reached the filters and no node took it (what provisioning
    acts on); `verdicts` are filled when the scheduler explains (the default).
    """

    job: str
    status: Status
    verdicts: tuple[ClassVerdict, ...] = ()
    fits_nowhere: bool = False


@dataclass(frozen=True, slots=True)
class Reservation:
    """Capacity held for `job`, the first job in queue order that could not start: it will start
    by `start_s` (the shadow time) on `gpus` (node name, GPU index), which no job that may
    still be running then can take meanwhile (`scheduler.backfill`)."""

    job: str
    start_s: float
    gpus: frozenset[tuple[str, int]]

    @property
    def nodes(self) -> frozenset[str]:
        """The nodes the reserved GPUs are on."""
        return frozenset(node for node, _ in self.gpus)


@dataclass(frozen=True, slots=True, kw_only=True)
class SolverReport:
    """How a batch placer's solve went: what a scheduler records per cycle.

    `objective` and `bound` are in the model's integer units (costs and priority rewards);
    `gap` is their difference relative to the cost part of the objective (0 when proven
    optimal); `used` says whose answer the decision carries ("cpsat", or "greedy" when the
    solver found nothing better in time); `wall_s` is measured, so it takes no part in
    comparisons and worlds that must be reproducible leave it out of their records.
    """

    status: str
    objective: float
    bound: float
    gap: float
    used: str
    cost_usd_per_hour: float
    jobs: int
    wall_s: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What one cycle wants changed, as a delta against the snapshot it was computed from, and
    the reservation it kept (None unless the profile reserves: `scheduler.backfill`)."""

    placements: tuple[Placement, ...] = ()
    preemptions: tuple[Preemption, ...] = ()
    pending: Mapping[str, Pending] = field(default_factory=lambda: MappingProxyType({}))
    provision: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    solver: SolverReport | None = None
    reservation: Reservation | None = None


class InvalidDecisionError(ValueError):
    """A decision that breaks the cluster's rules; `problems` lists every broken rule.

    Its one argument is the list itself: SimPy re-raises an error from a process as
    `type(error)(*error.args)`, and pickling rebuilds it the same way.
    """

    def __init__(self, found: Sequence[str]) -> None:
        self.problems = list(found)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "invalid decision: " + "; ".join(self.problems)


def _replica_problems(placement: Placement, replica: ReplicaPlacement) -> list[str]:
    request = placement.job.request
    grants = replica.grants
    wanted = 1 if request.kind is RequestKind.SHARE else request.gpus
    found: list[str] = []
    if len(grants) != wanted:
        found.append(f"{len(grants)} grants for a request of {request.describe()}")
    if request.kind is RequestKind.WHOLE and len(grants) > 1 and len({g.gpu for g in grants}) != len(grants):
        found.append("the same GPU granted twice")
    if request.kind is RequestKind.MIG and any(grant.mig_start is None for grant in grants):
        found.append("a MIG grant without a start")
    if found:
        return [f"job {placement.job.id} on {replica.node}: {problem}" for problem in found]
    return found


def problems(snapshot: ClusterSnapshot, decision: Decision) -> list[str]:
    """Every rule `decision` breaks against `snapshot` (empty when it is valid)."""
    return _checked(snapshot, decision)[0]


def apply(snapshot: ClusterSnapshot, decision: Decision, now_s: float = 0.0) -> ClusterSnapshot:
    """The snapshot once `decision` is carried out at `now_s`; InvalidDecisionError when it breaks a rule."""
    found, after = _checked(snapshot, decision, now_s)
    if found:
        raise InvalidDecisionError(found)
    return after


def _checked(snapshot: ClusterSnapshot, decision: Decision, now_s: float = 0.0) -> tuple[list[str], ClusterSnapshot]:
    found: list[str] = []
    working = snapshot
    for preemption in decision.preemptions:
        if preemption.job not in working.running:
            found.append(f"preempts {preemption.job}, which is not running")
            continue
        working = working.release(preemption.job)
    placed: set[str] = set()
    touched = {r.node for placement in decision.placements for r in placement.replicas}
    for placement in decision.placements:
        job = placement.job
        if job.id in placed:
            found.append(f"job {job.id} placed twice")
            continue
        placed.add(job.id)
        if len(placement.replicas) != job.replicas:
            found.append(f"job {job.id}: gang of {job.replicas} placed with {len(placement.replicas)} replicas")
        replica_problems = [p for replica in placement.replicas for p in _replica_problems(placement, replica)]
        found.extend(replica_problems)
        if replica_problems:
            continue
        try:
            working = working.assume(placement, now_s)
        except AllocationError as error:
            found.append(f"job {job.id}: {error}")
    for name in sorted(touched):
        found.extend(_layout_problems(working, name))
    return found, working


def _layout_problems(snapshot: ClusterSnapshot, name: str) -> list[str]:
    """What is wrong with the MIG layouts of node `name` (none when it has none, or is gone)."""
    node = snapshot.nodes.get(name)
    geometry = snapshot.pools[node.pool].gpu.mig if node is not None else None
    if node is None or geometry is None:
        return []
    return [f"{name} GPU {index}: {p}" for index, gpu in enumerate(node.gpus) if gpu.mig
            for p in mig.problems(geometry, gpu.layout)]  # fmt: skip


def validate(snapshot: ClusterSnapshot, decision: Decision) -> None:
    """Raises InvalidDecisionError when `decision` breaks a rule against `snapshot`."""
    found = problems(snapshot, decision)
    if found:
        raise InvalidDecisionError(found)
