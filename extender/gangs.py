"""Gangs bind whole: a member's bind records its granted place, and the last binds them all.

kube-scheduler binds one pod at a time, each in a binding cycle of its own. Had each member's
bind created its Binding at once, a gang whose last member then found no place (kube-scheduler
chose another node, the node went, the API server refused) would be left partly bound: GPUs
held by pods that cannot start. So `GangBinder.bind` only records a member's place (its GPUs
stay reserved in the planner) and answers when the whole gang has places: the call that
completes the gang creates every member's Binding, and the calls waiting on it answer with
their member's outcome. A call that waits longer than `wait_s` answers an error (kube-scheduler
retries the pod later) while its member's place stays recorded for `hold_s`; places recorded
longer ago than that are given back (`sweep`), and the gang is bound by none. `hold_s` (120 s)
outlasts kube-scheduler's wait before it retries an unschedulable pod (60 s, checked every
30 s): a member turned away while its gang was incomplete comes back within it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from extender.wire import BindingArgs
from extender.world import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Member:
    args: BindingArgs
    annotations: Mapping[str, str]
    recorded_at: float  # the clock's monotonic seconds


class GangBinder:
    """Binds a gang's members only once every one has a place (see the module docstring)."""

    def __init__(self, bind_one: Callable[[BindingArgs, Mapping[str, str]], str], release: Callable[[str], None],
                 clock: Clock, *, wait_s: float = 3.0, hold_s: float = 120.0) -> None:
        self.bind_one = bind_one  # creates one Binding; "" or why not
        self.release = release  # gives a member's reserved GPUs back
        self.clock = clock
        self.wait_s = wait_s
        self.hold_s = hold_s
        self._changed = threading.Condition()
        self._gangs: dict[str, dict[str, Member]] = {}  # gang -> pod UID -> its recorded place
        self._waiting: set[str] = set()  # UIDs whose bind call waits for the rest of its gang
        self._answers: dict[str, str] = {}  # UID -> the outcome of its Binding, for the call waiting on it
        self._binding: set[str] = set()  # UIDs whose Binding a call is creating now

    def bind(self, gang: str, members: Collection[str], args: BindingArgs, annotations: Mapping[str, str]) -> str:
        """Records `args.pod_uid`'s place in `gang`, whose unbound pods are `members`; binds
        every member when all have places, else waits up to `wait_s` for the call that does."""
        uid = args.pod_uid
        with self._changed:
            if uid not in self._binding:  # else another call is creating its Binding now: wait for that
                recorded = self._gangs.setdefault(gang, {})
                recorded[uid] = Member(args, annotations, self.clock.monotonic_s())
                if set(members) <= set(recorded):
                    ready = self._gangs.pop(gang)
                    self._binding.update(ready)
                    return self._bind_all(gang, uid, ready)
            if self._wait(uid):
                return self._answers.pop(uid)
            have = len(set(members) & set(self._gangs.get(gang, {})))
            return f"gang {gang}: {have} of {len(members)} pods have a place; none is bound until all do"

    def _wait(self, uid: str) -> bool:
        """Waits (holding the condition) up to `wait_s` for another call to answer for `uid`."""
        self._waiting.add(uid)
        try:
            return self._changed.wait_for(lambda: uid in self._answers, timeout=self.wait_s)
        finally:
            self._waiting.discard(uid)

    def _bind_all(self, gang: str, uid: str, ready: Mapping[str, Member]) -> str:
        """Creates every member's Binding, outside the lock; answers the calls waiting on them."""
        self._changed.release()
        try:
            log.info("gang %s: all %d pods have a place; binding them", gang, len(ready))
            answers = {member: self.bind_one(place.args, place.annotations)
                       for member, place in sorted(ready.items(), key=lambda item: item[1].args.pod_name)}
        finally:
            self._changed.acquire()
        for member, answer in answers.items():
            self._binding.discard(member)
            if member != uid and member in self._waiting:
                self._answers[member] = answer
        self._changed.notify_all()
        return answers[uid]

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
