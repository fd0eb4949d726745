"""A faithful fake of pynvml for the agent's tests: same function names and arguments, pynvml's own
exception classes and structures, scripted GPUs, MIG instances, utilisation series and lost GPUs.

The script is driven by time: the test sets `FakeNvml.now_s` before each scrape, and every value
read is the one in effect then. What real NVML does and the fake copies:

- every call before `nvmlInit` raises NVMLError_Uninitialized; `nvmlInit` on a node without the
  library raises NVMLError_LibraryNotFound;
- a GPU in MIG mode answers NotSupported for utilisation, and so does each MIG instance (NVML
  gives instances their memory, not their utilisation); empty MIG slots raise NotFound;
- a GPU lost at `lost_at_s` raises NVMLError_GpuIsLost from every call on it (its handle by
  index included), and posts Xid 79 to event sets it is registered with;
- `nvmlEventSetWait(set, 0)` raises NVMLError_Timeout when no event waits.
"""

# ruff: noqa: N802 - the fake's functions are pynvml's, by their names

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pynvml
from pynvml import NVMLError


def error(code: int) -> NVMLError:
    """pynvml's exception for `code` (NVMLError maps it to its subclass, e.g. NVMLError_NotSupported)."""
    return NVMLError(code)


@dataclass
class FakeMig:
    """A MIG instance in slot `slot` of its GPU."""

    slot: int
    uuid: str
    gpu_instance_id: int
    profile: str  # e.g. "1g.10gb"
    profile_id: int
    memory_total_mib: int
    memory_used_mib: int = 0


@dataclass
class FakeGpu:
    """A scripted GPU. `utilisation` steps: (from_s, gpu percent, memory percent), in time order."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3"
    minor: int = 0
    memory_total_mib: int = 81559
    memory_used_mib: int = 1024
    utilisation: Sequence[tuple[float, int, int]] = ((0.0, 0, 0),)
    power_mw: int = 120_500
    sm_clock_mhz: int = 1980
    throttle_reasons: int = pynvml.nvmlClocksThrottleReasonGpuIdle
    ecc_uncorrected: int = 0
    ecc_corrected: int = 3
    not_supported: frozenset[str] = frozenset()  # pynvml function names that answer NotSupported
    failing: Mapping[str, int] = field(default_factory=dict)  # pynvml function name -> the NVML error it raises
    mig: Sequence[FakeMig] = ()  # non-empty: the GPU is in MIG mode
    lost_at_s: float | None = None
    xids: Sequence[tuple[float, int]] = ()  # (at_s, xid) events
    profile_query_denied: bool = False  # nvmlDeviceGetGpuInstanceById answers NoPermission


@dataclass(frozen=True)
class _Handle:
    gpu: int
    slot: int | None = None


@dataclass
class _Event:
    device: _Handle
    eventType: int  # noqa: N815 - pynvml's c_nvmlEventData_t field names
    eventData: int  # noqa: N815
    gpuInstanceId: int = 0xFFFFFFFF  # noqa: N815
    computeInstanceId: int = 0xFFFFFFFF  # noqa: N815


@dataclass
class _EventSet:
    gpus: set[int] = field(default_factory=set)
    delivered: set[tuple[int, float]] = field(default_factory=set)


MAX_MIG_DEVICES = 7


@dataclass
class FakeNvml:
    """The fake pynvml module: the functions the agent calls, over scripted GPUs."""

    gpus: list[FakeGpu]
    library: bool = True
    now_s: float = 0.0
    initialised: bool = False
    calls: list[str] = field(default_factory=list)
    event_sets: list[_EventSet] = field(default_factory=list)

    # -- library --------------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls.append("nvmlInit")
        if not self.library:
            raise error(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check()
        if not 0 <= index < len(self.gpus):
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._gpu(_Handle(index), "nvmlDeviceGetHandleByIndex")
        return _Handle(index)

    # -- identity -------------------------------------------------------------------------------
    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")
        return gpu.uuid if handle.slot is None else self._mig(gpu, handle).uuid

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        gpu = self._gpu(handle, "nvmlDeviceGetName")
        return gpu.name if handle.slot is None else f"{gpu.name} MIG {self._mig(gpu, handle).profile}"

    def nvmlDeviceGetMinorNumber(self, handle: _Handle) -> int:
        return self._gpu(handle, "nvmlDeviceGetMinorNumber").minor

    # -- MIG ------------------------------------------------------------------------------------
    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        gpu = self._whole(handle, "nvmlDeviceGetMigMode")
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        gpu = self._whole(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return MAX_MIG_DEVICES if gpu.mig else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        gpu = self._whole(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if not gpu.mig or index >= MAX_MIG_DEVICES:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if not any(instance.slot == index for instance in gpu.mig):
            raise error(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(handle.gpu, index)

    def nvmlDeviceGetGpuInstanceId(self, handle: _Handle) -> int:
        gpu = self._gpu(handle, "nvmlDeviceGetGpuInstanceId")
        if handle.slot is None:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._mig(gpu, handle).gpu_instance_id

    def nvmlDeviceGetGpuInstanceById(self, handle: _Handle, gpu_instance_id: int) -> FakeMig:
        gpu = self._whole(handle, "nvmlDeviceGetGpuInstanceById")
        if gpu.profile_query_denied:
            raise error(pynvml.NVML_ERROR_NO_PERMISSION)
        for instance in gpu.mig:
            if instance.gpu_instance_id == gpu_instance_id:
                return instance
        raise error(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, gpu_instance: FakeMig) -> pynvml.c_nvmlGpuInstanceInfo_t:
        self._check()
        info = pynvml.c_nvmlGpuInstanceInfo_t()
        info.id, info.profileId = gpu_instance.gpu_instance_id, gpu_instance.profile_id
        return info

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: _Handle, profile: int) -> Any:
        gpu = self._whole(handle, "nvmlDeviceGetGpuInstanceProfileInfo")
        for instance in gpu.mig:
            if instance.profile_id == profile:  # the fake numbers profiles as NVML's profile indices
                info = pynvml.c_nvmlGpuInstanceProfileInfo_v2_t()
                info.id, info.name = instance.profile_id, f"MIG {instance.profile}".encode()
                info.memorySizeMB = instance.memory_total_mib
                return info
        raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # -- measurements ---------------------------------------------------------------------------
    def nvmlDeviceGetUtilizationRates(self, handle: _Handle) -> pynvml.c_nvmlUtilization_t:
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        if gpu.mig:  # neither a GPU in MIG mode nor its instances report utilisation
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        current = [step for step in gpu.utilisation if step[0] <= self.now_s][-1]
        rates = pynvml.c_nvmlUtilization_t()
        rates.gpu, rates.memory = current[1], current[2]
        return rates

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle) -> pynvml.c_nvmlMemory_t:
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        total, used = gpu.memory_total_mib, gpu.memory_used_mib
        if handle.slot is not None:
            instance = self._mig(gpu, handle)
            total, used = instance.memory_total_mib, instance.memory_used_mib
        memory = pynvml.c_nvmlMemory_t()
        memory.total, memory.used, memory.free = total << 20, used << 20, (total - used) << 20
        return memory

    def nvmlDeviceGetPowerUsage(self, handle: _Handle) -> int:
        return self._whole(handle, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetClockInfo(self, handle: _Handle, clock_type: int) -> int:
        gpu = self._whole(handle, "nvmlDeviceGetClockInfo")
        if clock_type != pynvml.NVML_CLOCK_SM:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: _Handle) -> int:
        return self._whole(handle, "nvmlDeviceGetCurrentClocksThrottleReasons").throttle_reasons

    def nvmlDeviceGetTotalEccErrors(self, handle: _Handle, error_type: int, counter_type: int) -> int:
        gpu = self._whole(handle, "nvmlDeviceGetTotalEccErrors")
        if counter_type != pynvml.NVML_VOLATILE_ECC:
            raise error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        uncorrected = error_type == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
        return gpu.ecc_uncorrected if uncorrected else gpu.ecc_corrected

    # -- events ---------------------------------------------------------------------------------
    def nvmlEventSetCreate(self) -> _EventSet:
        self._check()
        self.event_sets.append(_EventSet())
        return self.event_sets[-1]

    def nvmlDeviceRegisterEvents(self, handle: _Handle, event_types: int, event_set: _EventSet) -> None:
        self._whole(handle, "nvmlDeviceRegisterEvents")
        if event_types & ~pynvml.nvmlEventTypeXidCriticalError:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        event_set.gpus.add(handle.gpu)

    def nvmlEventSetWait(self, event_set: _EventSet, timeout_ms: int) -> _Event:
        self._check()
        if timeout_ms != 0:
            raise AssertionError("the agent must poll events without blocking")
        for index in sorted(event_set.gpus):
            for at_s, xid in self._xids(self.gpus[index]):
                if at_s <= self.now_s and (index, at_s) not in event_set.delivered:
                    event_set.delivered.add((index, at_s))
                    return _Event(_Handle(index), pynvml.nvmlEventTypeXidCriticalError, xid)
        raise error(pynvml.NVML_ERROR_TIMEOUT)

    def nvmlEventSetFree(self, event_set: _EventSet) -> None:
        self._check()
        self.event_sets.remove(event_set)

    # -- the script -----------------------------------------------------------------------------
    def _xids(self, gpu: FakeGpu) -> list[tuple[float, int]]:
        lost = [(gpu.lost_at_s, 79)] if gpu.lost_at_s is not None else []
        return sorted([*gpu.xids, *lost])

    def _check(self) -> None:
        if not self.initialised:
            raise error(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: _Handle, call: str) -> FakeGpu:
        self._check()
        self.calls.append(call)
        gpu = self.gpus[handle.gpu]
        if gpu.lost_at_s is not None and self.now_s >= gpu.lost_at_s:
            raise error(pynvml.NVML_ERROR_GPU_IS_LOST)
        if call in gpu.not_supported:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if call in gpu.failing:
            raise error(gpu.failing[call])
        return gpu

    def _whole(self, handle: _Handle, call: str) -> FakeGpu:
        """A call NVML answers for whole GPUs only: on a MIG instance, NotSupported."""
        gpu = self._gpu(handle, call)
        if handle.slot is not None:
            raise error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _mig(self, gpu: FakeGpu, handle: _Handle) -> FakeMig:
        return next(instance for instance in gpu.mig if instance.slot == handle.slot)
