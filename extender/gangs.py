"""Gangs bind whole: a member's bind records its granted place, and the last binds them all.

kube-scheduler binds one pod at a time, each in a binding cycle of its own. Had each member's
bind created its Binding at once, a gang whose last member then found no place (kube-scheduler
chose another node, the node went) would be left partly bound: GPUs held by pods that cannot
start. So `GangBinder.bind` only records a member's place (its GPUs stay reserved in the
planner) and answers when the whole gang has places: the call that completes the gang creates
every member's Binding (`bind_gang`, `extender.verbs`), and the calls waiting on it answer with
their member's outcome, waiting on past `wait_s` (up to `call_s`, within kube-scheduler's 5 s)
while their member's Binding is being created. A call that waits longer answers an error
(kube-scheduler retries the pod) while its member's place stays recorded for `hold_s`; places
recorded longer ago than that are given back (`sweep`), and the gang is bound by none. `hold_s`
(120 s) outlasts kube-scheduler's wait before it retries an unschedulable pod (60 s, checked
every 30 s): a member turned away while its gang was incomplete comes back within it. A new
term as leader forgets every recorded place (`clear`): the planner forgot their GPUs.

What this guarantees, and what it does not: no member is bound until every member has a
granted place, and, on HAMi nodes, until HAMi's lock of every node the gang uses is taken (none
taken in time: no Binding, the places stay recorded and the gang is tried again whole). The
Bindings are then made one by one, this replica's lead checked before each. A Binding refused
after others were made (the API server or an admission webhook says no, the lead is lost, or a
second member on one HAMi node finds the device plugin has not yet allocated the first within
the call) leaves those others bound: they keep their places, and kube-scheduler retries the
refused member, which then binds alone (its gang's unbound pods are all it waits for).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from extender import hami
from extender.wire import BindingArgs
from extender.world import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Member:
    args: BindingArgs
    annotations: Mapping[str, str]
    recorded_at: float  # the clock's monotonic seconds


# What binding a whole gang answers: each member's outcome ("" or why not), and the members whose
# places stay recorded because none of the gang's Bindings was made (tried again as a whole).
GangOutcome = tuple[Mapping[str, str], Collection[str]]
# Creates one pod's Binding (`extender.verbs.GpuExtender._bind_one`): its HAMi lock already held
# (True: held before) or not (None), and how long it may wait for the lock; "" or why not.
BindOne = Callable[[BindingArgs, Mapping[str, str], hami.Budget, bool | None, float | None], str]


class GangBinder:
    """Binds a gang's members only once every one has a place (see the module docstring)."""

    def __init__(self, bind_gang: Callable[[Sequence[Member]], GangOutcome], release: Callable[[str], None],
                 clock: Clock, *, wait_s: float = 3.0, call_s: float = 4.5, hold_s: float = 120.0) -> None:
        self.bind_gang = bind_gang  # creates every member's Binding (`GangOutcome`)
        self.release = release  # gives a member's reserved GPUs back
        self.clock = clock
        self.wait_s = wait_s
        self.call_s = call_s  # how long kube-scheduler's bind call may take (its httpTimeout is 5 s)
        self.hold_s = hold_s
        self._changed = threading.Condition()
        self._gangs: dict[str, dict[str, Member]] = {}  # gang -> pod UID -> its recorded place
        self._waiting: set[str] = set()  # UIDs whose bind call waits for the rest of its gang
        self._answers: dict[str, str] = {}  # UID -> the outcome of its Binding, for the call waiting on it
        self._binding: set[str] = set()  # UIDs whose Binding a call is creating now
        self._term = 0  # counts `clear`s: places kept from before one are not recorded again

    def bind(self, gang: str, members: Collection[str], args: BindingArgs, annotations: Mapping[str, str]) -> str:
        """Records `args.pod_uid`'s place in `gang`, whose unbound pods are `members`; binds
        every member when all have places, else waits up to `wait_s` for the call that does (up
        to `call_s` while that call is creating this member's Binding)."""
        uid = args.pod_uid
        called_at = time.monotonic()
        with self._changed:
            if uid not in self._binding:  # else another call is creating its Binding now: wait for that
                recorded = self._gangs.setdefault(gang, {})
                recorded[uid] = Member(args, annotations, self.clock.monotonic_s())
                if set(members) <= set(recorded):
                    ready = self._gangs.pop(gang)
                    self._binding.update(ready)
                    return self._bind_all(gang, uid, ready)
            if self._wait(uid, called_at):
                return self._answers.pop(uid)
            if uid in self._binding:
                return f"gang {gang}: this pod's Binding is still being created; asked again, it is bound"
            have = len(set(members) & set(self._gangs.get(gang, {})))
            return f"gang {gang}: {have} of {len(members)} pods have a place; none is bound until all do"

    def _wait(self, uid: str, called_at: float) -> bool:
        """Waits (holding the condition) up to `wait_s`, and while `uid`'s Binding is being
        created up to `call_s` after the call came, for another call to answer for `uid`."""
        self._waiting.add(uid)
        try:
            if self._changed.wait_for(lambda: uid in self._answers, timeout=self.wait_s):
                return True
            left_s = self.call_s - (time.monotonic() - called_at)
            return uid in self._binding and self._changed.wait_for(
                lambda: uid in self._answers or uid not in self._binding, timeout=max(0.0, left_s)
            ) and uid in self._answers
        finally:
            self._waiting.discard(uid)

    def _bind_all(self, gang: str, uid: str, ready: Mapping[str, Member]) -> str:
        """Creates every member's Binding, outside the lock; answers the calls waiting on them."""
        term = self._term
        self._changed.release()
        try:
            log.info("gang %s: all %d pods have a place; binding them", gang, len(ready))
            answers, kept = self.bind_gang(sorted(ready.values(), key=lambda place: place.args.pod_name))
        finally:
            self._changed.acquire()
        if kept and term == self._term:  # no Binding was made: the places stay recorded, tried again whole
            self._gangs.setdefault(gang, {}).update({member: ready[member] for member in kept})
        for member in ready:
            self._binding.discard(member)
            if member != uid and member in self._waiting:
                self._answers[member] = answers[member]
        self._changed.notify_all()
        return answers[uid]

    def clear(self, why: str) -> None:
        """Forgets every recorded place (a new term: the planner forgot their GPUs) and answers
        the calls waiting with `why`; Bindings being created now are answered by their call."""
        with self._changed:
            self._term += 1
            self._gangs.clear()
            for uid in self._waiting - self._binding:
                self._answers[uid] = why
            self._changed.notify_all()

    def sweep(self) -> None:
        """Gives back the places recorded longer ago than `hold_s` for gangs that never became whole."""
        expired: list[str] = []
        now = self.clock.monotonic_s()
        with self._changed:
            for gang, recorded in list(self._gangs.items()):
                for uid, place in list(recorded.items()):
                    if now - place.recorded_at > self.hold_s and uid not in self._waiting:
                        del recorded[uid]
                        expired.append(uid)
                if not recorded:
                    del self._gangs[gang]
        for uid in expired:
            log.info("gang pod %s: its gang never had every place within %.0f s; its GPUs are given back",
                     uid, self.hold_s)
            self.release(uid)

    def recorded(self) -> Mapping[str, frozenset[str]]:
        """Gang -> the UIDs with a recorded place (for tests and metrics)."""
        with self._changed:
            return {gang: frozenset(members) for gang, members in self._gangs.items()}


def bind_in_turn(places: Sequence[Member], api: hami.BindingApi, clock: Clock, budget: hami.Budget,
                 bind_one: BindOne, deadline: float) -> GangOutcome:  # fmt: skip
    """Binds a whole gang: HAMi's lock of every HAMi node it uses first, for the first member
    there; none taken in time (by `deadline`, monotonic), no Binding is made. Then the first
    member on each node, then the others, each once HAMi's device plugin has let go of the lock
    of the one before on its node (it names one pod), waiting until `deadline` at most."""
    first: dict[str, Member] = {}
    for place in places:
        first.setdefault(place.args.node, place)
    held: dict[str, bool] = {}  # HAMi node -> whether its first member held the lock before
    try:
        for node, place in first.items():
            if hami.NODE in place.annotations:
                owner = (place.args.pod_namespace, place.args.pod_name)
                held[node] = hami.take_lock(api, clock, node, owner, budget=budget,
                                            wait_s=min(hami.TIMING.wait_s, max(0.0, deadline - time.monotonic())))
    except Exception as error:
        for node in held:
            hami.release_lock(api, node, (first[node].args.pod_namespace, first[node].args.pod_name))
        log.warning("gang of %s: no member bound: %s", places[0].args.pod_name, error)
        why = f"binding failed before any of its gang was bound: {error}"
        return {place.args.pod_uid: why for place in places}, [place.args.pod_uid for place in places]
    answers: dict[str, str] = {}
    for place in [*first.values(), *(place for place in places if place not in first.values())]:
        leads = first[place.args.node] is place
        answers[place.args.pod_uid] = bind_one(place.args, place.annotations, budget,
                                               held.get(place.args.node) if leads else None,
                                               None if leads else max(0.0, deadline - time.monotonic()))
    return answers, ()
