"""CycleState: the cluster as one scheduling cycle changes it, the snapshot and the class index together.

A placer tries placements, keeps some and drops others. Two structures must follow every
try: the `ClusterSnapshot` that plugins read (`cycle.snapshot`) and the node-class index
the Framework searches (`classes`). `CycleState` owns both and changes them together:

- `take` gives one replica its GPUs (in the index: the next replica of a gang must see them
  gone); `settle` adds a placement whose replicas were taken to the snapshot; `assume` is both;
- `release` stops a running job (an eviction), in both;
- `trial()` is a context in which those changes are tried: they are undone when it closes
  unless `keep()` was called. Trials nest.

The snapshot is brought up to date only when someone reads it: most cycles place thousands
of replicas and never need the updated copy (the index answers every question the placer
asks), and folding a placement into a snapshot costs more than recording it.
"""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.classes import NodeClasses
from scheduler.model import ClusterSnapshot, Grant, Job, Node, Placement, Pool
from scheduler.plugin import Cycle


class Trial:
    """A change being tried (see `CycleState.trial`); a context manager."""

    __slots__ = ("_by_name", "_mark", "_saved", "_state", "kept")

    def __init__(self, state: CycleState, by_name: bool) -> None:
        self._state = state
        self._by_name = by_name
        self.kept = False

    def keep(self) -> None:
        """The tried changes stay when the trial closes."""
        self.kept = True

    def __enter__(self) -> Trial:
        state = self._state
        self._mark = state.classes.begin()
        self._saved = (state._snapshot, state._folded, len(state._assumed))
        return self

    def __exit__(self, *_: object) -> None:
        state = self._state
        if not self.kept:
            state.classes.undo(self._mark, by_name=self._by_name)
            snapshot, folded, assumed = self._saved
            del state._assumed[assumed:]
            if state._snapshot is not snapshot:  # folded or released since: back to the saved copy
                state._snapshot, state._folded = snapshot, folded
        state.classes.end()


class CycleState:
    """The working cluster of one cycle; `cycle` is what plugins see of it."""

    __slots__ = ("_assumed", "_folded", "_snapshot", "classes", "cycle")

    def __init__(self, snapshot: ClusterSnapshot, classes: NodeClasses, *, now_s: float = 0.0, seed: int = 0) -> None:
        self._snapshot = snapshot
        self._assumed: list[Placement] = []  # settled placements; those from `_folded` on are not in `_snapshot` yet
        self._folded = 0
        self.classes = classes
        self.cycle = Cycle.following(self, now_s, snapshot.pools, seed)

    @property
    def snapshot(self) -> ClusterSnapshot:
        """The cluster with every placement settled so far."""
        if self._folded < len(self._assumed):
            snapshot = self._snapshot
            for placement in self._assumed[self._folded :]:
                snapshot = snapshot.assume(placement, self.cycle.now_s)
            self._snapshot, self._folded = snapshot, len(self._assumed)
        return self._snapshot

    def pool_of(self, node: Node) -> Pool:
        return self.cycle.pools[node.pool]

    # Changes --------------------------------------------------------------------------------

    def take(self, job: Job, node: Node, grants: Sequence[Grant]) -> Node:
        """One replica of `job` holds `grants` on `node` (the index's current state of it)."""
        taken = node.grant(self.pool_of(node), job, grants)
        self.classes.update(taken)
        return taken

    def settle(self, placement: Placement) -> None:
        """`placement`, whose replicas were taken, is part of the cycle's cluster."""
        self._assumed.append(placement)

    def assume(self, placement: Placement) -> None:
        """Takes every replica of `placement` and settles it."""
        for replica in placement.replicas:
            self.take(placement.job, self.classes.nodes[replica.node], replica.grants)
        self.settle(placement)

    def release(self, job_id: str) -> None:
        """Stops a running job: its GPUs are free again, in the snapshot and the index."""
        before = self.snapshot
        self._snapshot = before.release(job_id)
        for name in sorted({r.node for r in before.running[job_id].placement.replicas}):
            self.classes.update(self._snapshot.nodes[name])

    def assume_all(self, placements: Sequence[Placement]) -> None:
        """Settles `placements`, made on the state as it stands, and brings each node they use
        to its final state in the index, in name order."""
        snapshot = self.snapshot
        for placement in placements:
            snapshot = snapshot.assume(placement, self.cycle.now_s)
        self._snapshot = snapshot
        self._assumed.extend(placements)
        self._folded = len(self._assumed)
        for name in sorted({r.node for placement in placements for r in placement.replicas}):
            self.classes.update(snapshot.nodes[name])

    def trial(self, *, by_name: bool = False) -> Trial:
        """Changes made inside `with state.trial() as trial:` are undone on leaving, unless
        `trial.keep()` was called (`by_name`: see `NodeClasses.undo`). Trials nest."""
        return Trial(self, by_name)
