"""One scrape of the node: NVML's readings joined with the kubelet's pods, idle detection, the metric families.

`Agent.tick(now_s)` reads NVML and the kubelet once, feeds each held device's utilisation to its
`scheduler.idleness.IdleDetector` (one per device and pod: a device that changes pod starts
afresh) and leaves the metrics in `families`, which the HTTP thread reads (a new tuple each tick:
no lock needed, and devices gone since vanish). The clock is the caller's, so tests drive it.

A change of state (NVML up or down, the kubelet up or down, a GPU lost or back) is one log line
when it happens, not one per scrape.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from extender.agent.kubelet import Holder, PodDevices, PodResourcesClient, TeamMap
from extender.agent.labels import PodLabels
from extender.agent.nvml import FIELDS, GPU_UTIL, NvmlCollector, NvmlScrape, Reading
from scheduler.idleness import IdleDetector, IdleRule

log = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
MIG_FIELDS = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_MEM_COPY_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")
IDLE = "fleetsched_gpu_allocated_idle"
IDLE_SECONDS = "fleetsched_gpu_allocated_idle_seconds_total"
SOURCE_UP = "fleetsched_agent_source_up"
ERRORS = "fleetsched_agent_errors_total"
LOST = "fleetsched_gpu_lost"
FIELD_SUPPORTED = "fleetsched_gpu_field_supported"


@dataclass(frozen=True, slots=True)
class Family:
    """One metric family as exposed: its name (a counter's ends `_total`), kind, help, samples."""

    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: tuple[tuple[Labels, float], ...]


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What the agent is told: its node, the idle rule, how pods map to teams."""

    node: str
    rule: IdleRule = field(default_factory=IdleRule)
    teams: TeamMap = field(default_factory=TeamMap)


@dataclass
class _Tracked:
    """The idle detector of one device held by one pod."""

    detector: IdleDetector
    idle_now: bool = False


@dataclass
class _States:
    """The last state of each thing watched, to log once per change."""

    last: dict[str, str] = field(default_factory=dict)

    def note(self, key: str, state: str, message: str, level: int = logging.WARNING) -> None:
        if self.last.get(key) != state:
            self.last[key] = state
            log.log(level, "%s", message)


class Agent:
    """The node's state between scrapes: the collectors, detectors, error counts, last families."""

    def __init__(
        self, nvml: NvmlCollector, pods: PodResourcesClient | None, options: AgentOptions,
        labels: PodLabels | None = None,
    ) -> None:  # fmt: skip
        self.nvml = nvml
        self.pods = pods
        self.options = options
        self.labels = labels  # the pods' labels from the API server, when teams come from a label
        self.families: tuple[Family, ...] = ()
        self.errors: Counter[tuple[str, str]] = Counter()
        self._tracked: dict[tuple[str, str], _Tracked] = {}
        self._states = _States()
        self._last_s: float | None = None

    def tick(self, now_s: float) -> tuple[Family, ...]:
        """Reads NVML and the kubelet once at `now_s`; the families (also left in `families`)."""
        scrape = self.nvml.scrape()
        pods = self.pods.list() if self.pods is not None else PodDevices(False, reason="not asked")
        self._note_sources(scrape, pods)
        if self.labels is not None and pods.up:
            self._read_labels(self.labels, pods)
        for name, count in scrape.errors.items():
            self.errors[("nvml", name)] += count
        if pods.error:
            self.errors[("podresources", pods.error)] += 1
        in_order = self._last_s is None or now_s > self._last_s
        if not in_order:
            self._states.note("clock", "back", f"the clock went back to {now_s}: idle detection skips this scrape")
        else:
            self._states.note("clock", "ok", "the clock runs forward", logging.DEBUG)
            self._last_s = now_s
        series = [(reading, holder) for reading in scrape.readings if not reading.lost
                  for holder in self._holders(reading, pods)]  # fmt: skip
        if in_order:
            self._detect(now_s, series, pods.up)
        self.families = self._families(scrape, pods, series)
        return self.families

    def _note_sources(self, scrape: NvmlScrape, pods: PodDevices) -> None:
        states = self._states
        if scrape.up:
            states.note("nvml", "up", "NVML is up", logging.INFO)
        else:
            self.errors[("nvml", scrape.down_reason.split(":", 1)[0])] += 1
            states.note("nvml", "down", f"NVML is down ({scrape.down_reason}): serving without GPU metrics")
        if pods.up:
            states.note("podresources", "up", "the kubelet's PodResources API answers", logging.INFO)
        else:
            states.note("podresources", "down",
                        f"the kubelet's PodResources API is away ({pods.reason}): devices exported without pods")
        for reading in scrape.readings:
            if reading.device.gpu_instance_id:
                continue
            device = reading.device
            name = f"GPU {device.gpu} ({device.uuid or 'identity unknown'})"
            if reading.lost:
                states.note(f"lost {device.gpu}", "lost", f"{name} is lost (NVML: GPU is lost); other GPUs still read")
            elif f"lost {device.gpu}" in states.last:
                states.note(f"lost {device.gpu}", "back", f"{name} answers again", logging.INFO)

    def _read_labels(self, labels: PodLabels, pods: PodDevices) -> None:
        labels.refresh({(h.namespace, h.pod) for held in pods.holders.values() for h in held})
        if labels.up:
            self._states.note("apiserver", "up", "the API server answers for the pods' labels", logging.INFO)
            return
        self.errors[("apiserver", labels.error)] += 1
        self._states.note("apiserver", "down", f"the API server does not answer for the pods' labels "
                          f"({labels.reason}): their teams are unknown until it does")  # fmt: skip

    def _team(self, holder: Holder) -> str:
        labels = self.labels.labels(holder.namespace, holder.pod) if self.labels is not None else {}
        return self.options.teams.team(holder.namespace, labels)

    def _holders(self, reading: Reading, pods: PodDevices) -> Sequence[Holder | None]:
        """Who holds the device: by its id, or (the device plugin's `index` strategy) its index."""
        device = reading.device
        held = pods.holders.get(device.device_id)
        if held is None and not device.gpu_instance_id:
            held = pods.holders.get(str(device.gpu))
        return held or (None,)

    def _detect(self, now_s: float, series: Sequence[tuple[Reading, Holder | None]], pods_up: bool) -> None:
        """Feeds each held device's utilisation to its detector; a pair no longer seen is dropped
        (the device changed pod) unless the kubelet is away and nobody can say."""
        seen = set()
        for reading, holder in series:
            if holder is None:
                continue
            key = (reading.device.device_id, holder.job_id)
            seen.add(key)
            tracked = self._tracked.setdefault(key, _Tracked(IdleDetector(self.options.rule)))
            utilisation = reading.values.get(GPU_UTIL)
            tracked.idle_now = utilisation is not None and tracked.detector.observe(now_s, utilisation)
        if pods_up:
            for key in set(self._tracked) - seen:
                del self._tracked[key]

    def _labels(self, reading: Reading, holder: Holder | None) -> Labels:
        device = reading.device
        namespace = holder.namespace if holder else ""
        return (("gpu", str(device.gpu)), ("UUID", device.uuid), ("device", f"nvidia{device.minor}"),
                ("modelName", device.model), ("Hostname", self.options.node),
                ("GPU_I_ID", device.gpu_instance_id), ("GPU_I_PROFILE", device.gpu_instance_profile),
                ("namespace", namespace), ("pod", holder.pod if holder else ""),
                ("container", holder.container if holder else ""),
                ("team", self._team(holder) if holder else ""),
                ("fleetsched_job", holder.job_id if holder else ""))  # fmt: skip

    def _families(
        self, scrape: NvmlScrape, pods: PodDevices, series: Sequence[tuple[Reading, Holder | None]]
    ) -> tuple[Family, ...]:
        families = []
        for name, text in FIELDS.items():
            samples = tuple((self._labels(r, h), r.values[name]) for r, h in series if name in r.values)
            families.append(Family(name, "gauge", text, samples))
        idle, seconds = [], []
        for reading, holder in series:
            key = (reading.device.device_id, holder.job_id) if holder else None
            tracked = self._tracked.get(key) if key else None
            labels = self._labels(reading, holder)
            idle.append((labels, 1.0 if tracked is not None and tracked.idle_now else 0.0))
            seconds.append((labels, float(tracked.detector.idle_s) if tracked is not None else 0.0))
        families.append(Family(IDLE, "gauge", "1 when a pod holds the device and it has been idle for the "
                               "idle window (scheduler.idleness).", tuple(idle)))  # fmt: skip
        families.append(Family(IDLE_SECONDS, "counter", "Seconds of closed allocated-and-idle spans of the "
                               "device and pod.", tuple(seconds)))  # fmt: skip
        families.extend(self._health(scrape, pods))
        return tuple(families)

    def _health(self, scrape: NvmlScrape, pods: PodDevices) -> list[Family]:
        node = self.options.node
        up: tuple[tuple[Labels, float], ...] = (
            ((("source", "nvml"),), float(scrape.up)), ((("source", "podresources"),), float(pods.up)))
        if self.labels is not None:
            up += (((("source", "apiserver"),), float(self.labels.up)),)
        errors = tuple(((("source", source), ("error", error)), float(count))
                       for (source, error), count in sorted(self.errors.items()))  # fmt: skip
        lost, supported = [], []
        for reading in scrape.readings:
            device = reading.device
            if not device.gpu_instance_id:
                labels = (("gpu", str(device.gpu)), ("UUID", device.uuid), ("device", f"nvidia{device.minor}"),
                          ("modelName", device.model), ("Hostname", node))  # fmt: skip
                lost.append((labels, float(reading.lost)))
            if reading.lost:
                continue
            for name in MIG_FIELDS if device.gpu_instance_id else FIELDS:
                labels = (("gpu", str(device.gpu)), ("UUID", device.uuid), ("GPU_I_ID", device.gpu_instance_id),
                          ("Hostname", node), ("field", name))  # fmt: skip
                supported.append((labels, 0.0 if name in reading.unsupported else 1.0))
        return [
            Family(SOURCE_UP, "gauge", "1 when the source answered at the last scrape (nvml, podresources).", up),
            Family(ERRORS, "counter", "Errors met reading a source, by NVML error class or gRPC status.", errors),
            Family(LOST, "gauge", "1 when NVML says the GPU is lost (Xid 79, fallen off the bus).", tuple(lost)),
            Family(FIELD_SUPPORTED, "gauge", "0 when NVML answers NotSupported for the field on the device.",
                   tuple(supported)),
        ]


def sample_map(families: Sequence[Family]) -> Mapping[str, Mapping[Labels, float]]:
    """The families as name -> labels -> value (for tests and the device check)."""
    return {family.name: dict(family.samples) for family in families}


__all__ = ["Agent", "AgentOptions", "Family", "sample_map"]
