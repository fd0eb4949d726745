"""The Kubernetes cluster as a World, and the one clock the extender reads.

Every decision the extender makes is `scheduler.world.run_cycle` over one of two worlds:

- `ExtenderWorld`, a planning pass: observe() reads the mirror (GPU nodes, bound pods holding
  their GPUs, pending pods of this scheduler as jobs, in a waiting queue the scheduler takes
  from); enact() makes the decision the planner's current plan.
- `PodWorld`, one pod the last plan has no place for: observe() shows it alone on what the plan
  leaves (only on the nodes kube-scheduler offered, when it named them); enact() adds its place,
  if it got one, to the plan.

`Clock` is the one source of time: epoch seconds for cycles and the age of running pods (their
start times come from the API server on that scale), monotonic seconds for the age of the
mirror and of the plan. Tests hand the extender a clock of their own. `Leadership` says whether
this replica may plan and bind (`extender.lease` elects one among replicas).
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from scheduler.decision import Decision
from scheduler.model import AllocationError, ClusterSnapshot
from scheduler.world import Observation

if TYPE_CHECKING:  # the planner makes these worlds; they only read and write its plan
    from extender.planner import Plan, Planner, Target
    from extender.state import View
    from extender.translate import PodJob


class Clock(Protocol):
    """Where the extender's time comes from."""

    def now_s(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes back, for ages and intervals."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now_s(self) -> float:
        return time.time()

    def monotonic_s(self) -> float:
        return time.monotonic()


class Leadership(Protocol):
    """Whether this replica may plan and bind now."""

    def is_leader(self) -> bool: ...

    def leader(self) -> str:
        """The holder of the lease as last seen ("" when unknown or none)."""
        ...

    def time_left_s(self) -> float:
        """Seconds until this replica stops counting as leader unless it renews; 0 when not leading.
        A write made in this replica's name (a Binding) must end within it."""
        ...

    @property
    def term(self) -> int:
        """Counts the times this replica took the lead: a new term starts from a fresh plan."""
        ...


class AlwaysLeader:
    """`leader_elect = false`: the one replica always leads."""

    term = 1

    def is_leader(self) -> bool:
        return True

    def leader(self) -> str:
        return ""

    def time_left_s(self) -> float:
        return math.inf


class ExtenderWorld:
    """One planning pass: the mirror as it stands, and the plan the decision becomes."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.view: View | None = None
        self.version = -1  # the mirror's version the view was read at (or after)
        self.plan: Plan | None = None

    def observe(self) -> Observation:
        planner = self.planner
        self.version = planner.cluster.version
        view = planner.cluster.view()
        if planner.govern is not None:
            view = replace(view, snapshot=planner.govern(view.snapshot, view.pending, ()))
        self.view = view
        return Observation(planner.clock.now_s(), view.snapshot, planner.scheduler.queue(view.pending))

    def enact(self, decision: Decision) -> None:
        assert self.view is not None, "enact before observe"
        self.plan = self.planner.adopt(self.view, decision, self.version)


class PodWorld:
    """One pod placed alone on what `plan` leaves, on `names` only when given."""

    def __init__(self, planner: Planner, plan: Plan, pod: PodJob, names: Collection[str] | None) -> None:
        self.planner = planner
        self.plan = plan
        self.pod = pod
        self.names = names
        self.target: Target | None = None

    def observe(self) -> Observation:
        offered = self.plan.after if self.names is None else restricted(self.plan.after, self.names)
        if self.planner.govern is not None:  # the guardrails as they stand now (binds since the pass reserved)
            plan = self.plan
            unbound = [plan.jobs[job_id] for job_id in sorted(set(plan.planned.values()) - plan.fixed)
                       if job_id in plan.jobs]  # fmt: skip
            offered = self.planner.govern(offered, plan.view.pending, unbound)
        return Observation(self.planner.clock.now_s(), offered, self.planner.scheduler.queue([self.pod.job]))

    def enact(self, decision: Decision) -> None:
        if not decision.placements:
            return
        try:
            self.target = self.plan.put(self.pod.uid, decision.placements[0])
        except AllocationError:  # its old place is held for a binding: the next pass decides
            self.target = None


def restricted(snapshot: ClusterSnapshot, names: Collection[str]) -> ClusterSnapshot:
    """The snapshot with every node but `names` out of use (kept, so running jobs stay whole)."""
    offered = set(names)
    if offered.issuperset(snapshot.nodes):
        return snapshot
    nodes = {name: node if name in offered or not node.ready else replace(node, ready=False)
             for name, node in snapshot.nodes.items()}  # fmt: skip
    return replace(snapshot, nodes=MappingProxyType(nodes))
