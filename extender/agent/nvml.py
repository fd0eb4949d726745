"""Reading every GPU and MIG instance of the node through NVML (pynvml), field by field, never crashing.

`Nvml` (extender.agent.nvml_api) is the part of pynvml the agent calls: the real module satisfies it,
and the tests pass a fake with the same functions and pynvml's own exceptions (tests/fake_nvml.py).
`NvmlCollector.scrape` answers one `NvmlScrape`: whether NVML is up, one `Reading` per device
(a whole GPU, or one MIG instance of a GPU in MIG mode) and the errors met. Per field:

- NotSupported (a MIG instance's utilisation, ECC on a consumer card) is `unsupported`, not an
  error: the exporter says so as `fleetsched_gpu_field_supported 0`;
- GpuIsLost (Xid 79, off the bus) marks the GPU `lost`; the other GPUs are still read;
- any other NVML error is counted by its class name and the field is left out this scrape.

A library that cannot be loaded (a CPU node: LibraryNotFound, DriverNotLoaded) leaves NVML down;
each scrape tries `nvmlInit` again, so a driver that comes later is picked up. Xid errors come
from an NVML event set polled with a zero timeout: a scrape never blocks on them.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pynvml
from pynvml import (
    NVML_CLOCK_SM,
    NVML_DEVICE_MIG_ENABLE,
    NVML_GPU_INSTANCE_PROFILE_COUNT,
    NVML_MEMORY_ERROR_TYPE_CORRECTED,
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
    NVML_VOLATILE_ECC,
    NVMLError,
    NVMLError_GpuIsLost,
    NVMLError_NotFound,
    NVMLError_NotSupported,
    NVMLError_Timeout,
    nvmlEventTypeXidCriticalError,
)

from extender.agent.nvml_api import Nvml

log = logging.getLogger(__name__)

MIB = 1 << 20

# The fields, named as DCGM exporter names the same measurements (docs/agent.md).
GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
MEM_COPY_UTIL = "DCGM_FI_DEV_MEM_COPY_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
POWER_USAGE = "DCGM_FI_DEV_POWER_USAGE"
SM_CLOCK = "DCGM_FI_DEV_SM_CLOCK"
THROTTLE_REASONS = "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"
XID_ERRORS = "DCGM_FI_DEV_XID_ERRORS"
ECC_DBE = "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"
ECC_SBE = "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"
FIELDS: Mapping[str, str] = {
    GPU_UTIL: "GPU utilisation (percent of time a kernel ran).",
    MEM_COPY_UTIL: "Memory utilisation (percent of time memory was read or written).",
    FB_USED: "Frame buffer memory used (MiB).",
    FB_FREE: "Frame buffer memory free (MiB).",
    POWER_USAGE: "Power draw (W).",
    SM_CLOCK: "SM clock (MHz).",
    THROTTLE_REASONS: "NVML's clocks throttle reasons bitmask.",
    XID_ERRORS: "The last Xid error seen (0 when none).",
    ECC_DBE: "Volatile double-bit (uncorrected) ECC errors.",
    ECC_SBE: "Volatile single-bit (corrected) ECC errors.",
}


@dataclass(frozen=True, slots=True)
class Device:
    """One device NVML shows: a whole GPU, or a MIG instance of one (`gpu_instance_id` set).

    `uuid` is the GPU's (as DCGM exporter labels a MIG instance); `mig_uuid` is the instance's
    own, the id the kubelet's device plugin hands to pods."""

    gpu: int
    uuid: str
    minor: int
    model: str
    gpu_instance_id: str = ""
    gpu_instance_profile: str = ""
    mig_uuid: str = ""

    @property
    def device_id(self) -> str:
        """The id the NVIDIA device plugin names this device by (its UUID, or the MIG instance's)."""
        return self.mig_uuid or self.uuid


@dataclass(frozen=True, slots=True)
class Reading:
    """What one scrape read of one device: field values, fields NVML does not support, lost."""

    device: Device
    values: Mapping[str, float]
    unsupported: frozenset[str] = frozenset()
    lost: bool = False


@dataclass(frozen=True, slots=True)
class NvmlScrape:
    """One scrape of NVML: up (the library answered), the readings, and errors by class name."""

    up: bool
    readings: tuple[Reading, ...] = ()
    errors: Mapping[str, int] = field(default_factory=dict)
    down_reason: str = ""


def real_nvml() -> Nvml:
    """The real pynvml module (loading it needs no library: `nvmlInit` loads libnvidia-ml)."""
    return cast(Nvml, pynvml)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error_name(error: Exception) -> str:
    return type(error).__name__


@dataclass
class _Fields:
    """The values read of one device so far; NotSupported and other errors sorted as they come."""

    values: dict[str, float] = field(default_factory=dict)
    unsupported: set[str] = field(default_factory=set)
    errors: Counter[str] = field(default_factory=Counter)

    def read(self, names: tuple[str, ...], call: Callable[[], tuple[float, ...]]) -> None:
        """Reads `names` with one call; GpuIsLost goes up to the caller."""
        try:
            found = call()
        except NVMLError_NotSupported:
            self.unsupported.update(names)
            return
        except NVMLError_GpuIsLost:
            raise
        except NVMLError as error:
            self.errors[_error_name(error)] += 1
            return
        self.values.update(zip(names, found, strict=True))


@dataclass(frozen=True, slots=True)
class _InstanceReading:
    """A MIG instance's reading and the errors met reading it (counted once all are read)."""

    device: Device
    values: Mapping[str, float]
    unsupported: frozenset[str]
    errors: Counter[str]


class NvmlCollector:
    """Reads every GPU and MIG instance of the node at each `scrape`; keeps what does not change
    (identities, MIG profiles) and the last Xid per GPU between scrapes."""

    def __init__(self, nvml: Nvml) -> None:
        self.nvml = nvml
        self.up = False
        self._identities: dict[int, Device] = {}
        self._profiles: dict[tuple[str, int], str] = {}
        self._events: Any = None
        self._registered: set[str] = set()
        self._no_xid: set[str] = set()
        self.last_xid: dict[str, int] = {}

    def scrape(self) -> NvmlScrape:
        """Reads everything once; never raises an NVML error."""
        if not self.up:
            try:
                self.nvml.nvmlInit()
            except NVMLError as error:
                return NvmlScrape(up=False, down_reason=f"{_error_name(error)}: {error}")
            self.up = True
        errors: Counter[str] = Counter()
        try:
            count = self.nvml.nvmlDeviceGetCount()
        except NVMLError as error:
            errors[_error_name(error)] += 1
            return NvmlScrape(up=True, errors=dict(errors))
        readings: list[Reading] = []
        for index in range(count):
            readings.extend(self._gpu(index, errors))
        self._poll_xid(errors)
        xid = {uuid: float(value) for uuid, value in self.last_xid.items()}
        readings = [_with_xid(reading, xid, self._no_xid) for reading in readings]
        return NvmlScrape(up=True, readings=tuple(readings), errors=dict(errors))

    def close(self) -> None:
        """Frees the event set and shuts NVML down (errors ignored: the agent is stopping)."""
        if self._events is not None:
            with contextlib.suppress(NVMLError):
                self.nvml.nvmlEventSetFree(self._events)
            self._events = None
        if self.up:
            with contextlib.suppress(NVMLError):
                self.nvml.nvmlShutdown()
            self.up = False

    def _gpu(self, index: int, errors: Counter[str]) -> list[Reading]:
        """The GPU at `index` and its MIG instances; a lost GPU is one reading marked lost."""
        try:
            handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
            device = self._identity(index, handle)
            fields = _Fields()
            self._read_gpu(handle, fields)
            instances = self._instances(handle, device, errors)
        except NVMLError_GpuIsLost:
            known = self._identities.get(index, Device(gpu=index, uuid="", minor=index, model=""))
            return [Reading(known, {}, lost=True)]
        except NVMLError as error:  # the GPU cannot even be named: counted, left out this scrape
            errors[_error_name(error)] += 1
            return []
        errors.update(fields.errors)
        self._register_xid(handle, device, errors)
        gpu = Reading(device, fields.values, frozenset(fields.unsupported))
        return [gpu, *instances]

    def _identity(self, index: int, handle: Any) -> Device:
        if index not in self._identities:
            nvml = self.nvml
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            self._identities[index] = Device(index, uuid, nvml.nvmlDeviceGetMinorNumber(handle),
                                             _text(nvml.nvmlDeviceGetName(handle)))  # fmt: skip
        return self._identities[index]

    def _read_gpu(self, handle: Any, fields: _Fields) -> None:
        nvml = self.nvml
        self._read_shared(handle, fields)
        fields.read((POWER_USAGE,), lambda: (nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,))
        fields.read((SM_CLOCK,), lambda: (float(nvml.nvmlDeviceGetClockInfo(handle, NVML_CLOCK_SM)),))
        fields.read((THROTTLE_REASONS,), lambda: (float(nvml.nvmlDeviceGetCurrentClocksThrottleReasons(handle)),))
        fields.read((ECC_DBE,), lambda: (float(nvml.nvmlDeviceGetTotalEccErrors(
            handle, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC)),))  # fmt: skip
        fields.read((ECC_SBE,), lambda: (float(nvml.nvmlDeviceGetTotalEccErrors(
            handle, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC)),))  # fmt: skip

    def _read_shared(self, handle: Any, fields: _Fields) -> None:
        """What NVML offers for a GPU and a MIG instance alike: utilisation (NotSupported on MIG)
        and memory."""
        nvml = self.nvml

        def utilisation() -> tuple[float, float]:
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            return float(rates.gpu), float(rates.memory)

        def memory() -> tuple[float, float]:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            return info.used / MIB, info.free / MIB

        fields.read((GPU_UTIL, MEM_COPY_UTIL), utilisation)
        fields.read((FB_USED, FB_FREE), memory)

    def _instances(self, handle: Any, gpu: Device, errors: Counter[str]) -> list[Reading]:
        """The MIG instances of a GPU in MIG mode (none when MIG is off or not supported). An
        instance NVML will not name is counted and left out; its GPU and the others are still read."""
        nvml = self.nvml
        try:
            if nvml.nvmlDeviceGetMigMode(handle)[0] != NVML_DEVICE_MIG_ENABLE:
                return []
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(handle)
        except NVMLError_NotSupported:
            return []
        except NVMLError_GpuIsLost:
            raise
        except NVMLError as error:
            errors[_error_name(error)] += 1
            return []
        readings = []
        for slot in range(slots):
            try:
                readings.append(self._instance(handle, slot, gpu))
            except NVMLError_NotFound:  # an empty slot
                continue
            except NVMLError_GpuIsLost:
                raise
            except NVMLError as error:
                errors[_error_name(error)] += 1
        for reading in readings:
            errors.update(reading.errors)
        return [Reading(r.device, r.values, r.unsupported) for r in readings]

    def _instance(self, handle: Any, slot: int, gpu: Device) -> _InstanceReading:
        nvml = self.nvml
        instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        mig_uuid = _text(nvml.nvmlDeviceGetUUID(instance))
        gpu_instance_id = nvml.nvmlDeviceGetGpuInstanceId(instance)
        profile = self._profile(handle, instance, gpu.uuid, gpu_instance_id)
        device = Device(gpu.gpu, gpu.uuid, gpu.minor, gpu.model, str(gpu_instance_id), profile, mig_uuid)
        fields = _Fields()
        self._read_shared(instance, fields)
        return _InstanceReading(device, fields.values, frozenset(fields.unsupported), fields.errors)

    def _profile(self, handle: Any, instance: Any, uuid: str, gpu_instance_id: int) -> str:
        """The instance's profile name ("1g.10gb"): from its GPU instance's profile, else (when
        NVML refuses, e.g. without the privilege to query GPU instances) from the instance's name."""
        key = (uuid, gpu_instance_id)
        if key not in self._profiles:
            try:
                profile_id = self.nvml.nvmlGpuInstanceGetInfo(
                    self.nvml.nvmlDeviceGetGpuInstanceById(handle, gpu_instance_id)).profileId
                self._profiles[key] = self._profile_name(handle, profile_id)
            except NVMLError_GpuIsLost:
                raise
            except NVMLError:
                self._profiles[key] = _text(self.nvml.nvmlDeviceGetName(instance)).rpartition("MIG ")[2]
        return self._profiles[key]

    def _profile_name(self, handle: Any, profile_id: int) -> str:
        for profile in range(NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self.nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
            except NVMLError_NotSupported:
                continue
            if info.id == profile_id:
                return _text(info.name).removeprefix("MIG ")
        return ""

    def _register_xid(self, handle: Any, device: Device, errors: Counter[str]) -> None:
        """Registers the GPU for Xid events once (NotSupported: its Xid field is unsupported)."""
        if device.uuid in self._registered or device.uuid in self._no_xid:
            return
        try:
            if self._events is None:
                self._events = self.nvml.nvmlEventSetCreate()
            self.nvml.nvmlDeviceRegisterEvents(handle, nvmlEventTypeXidCriticalError, self._events)
        except NVMLError_NotSupported:
            self._no_xid.add(device.uuid)
            return
        except NVMLError as error:
            errors[_error_name(error)] += 1
            return
        self._registered.add(device.uuid)
        self.last_xid.setdefault(device.uuid, 0)

    def _poll_xid(self, errors: Counter[str]) -> None:
        """Takes every Xid event waiting, without blocking (timeout 0 answers Timeout when none)."""
        if self._events is None:
            return
        for _ in range(10_000):  # a bound: an event storm cannot hold the scrape forever
            try:
                event = self.nvml.nvmlEventSetWait(self._events, 0)
            except NVMLError_Timeout:
                return
            except NVMLError as error:
                errors[_error_name(error)] += 1
                return
            if event.eventType & nvmlEventTypeXidCriticalError:
                try:
                    uuid = _text(self.nvml.nvmlDeviceGetUUID(event.device))
                except NVMLError as error:
                    errors[_error_name(error)] += 1
                    continue
                self.last_xid[uuid] = int(event.eventData)
                log.warning("GPU %s: Xid %d", uuid, int(event.eventData))


def _with_xid(reading: Reading, xid: Mapping[str, float], unsupported: set[str]) -> Reading:
    """The reading with its GPU's last Xid (whole GPUs only: NVML reports Xids per GPU)."""
    device = reading.device
    if reading.lost or device.gpu_instance_id:
        return reading
    if device.uuid in unsupported:
        return Reading(device, reading.values, reading.unsupported | {XID_ERRORS})
    if device.uuid in xid:
        return Reading(device, {**reading.values, XID_ERRORS: xid[device.uuid]}, reading.unsupported)
    return reading


__all__ = ["FIELDS", "GPU_UTIL", "Device", "Nvml", "NvmlCollector", "NvmlScrape", "Reading", "real_nvml"]
