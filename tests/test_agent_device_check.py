"""benchmarks/device_check.py: says "no NVML" and exits 0 on a machine without GPUs (this one), and its
comparison with nvidia-smi finds a field that disagrees."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from extender.agent.nvml import Device, Reading

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks/device_check.py"
UUID = "GPU-11111111-2222-3333-4444-555555555555"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_nvml_it_says_so_in_one_line_and_exits_0() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "device check: no NVML on this machine (NVMLError_LibraryNotFound: NVML Shared Library Not Found): "
        "no GPU to check, nothing compared"]  # fmt: skip


def reading(**values: float) -> Reading:
    return Reading(Device(0, UUID, 0, "NVIDIA H100 80GB HBM3"), values)


SMI = f"0, {UUID}, NVIDIA H100 80GB HBM3, 20480, 61079, 120.40, 1980, 37, 12, Disabled\n"


def test_the_comparison_says_ok_for_agreeing_fields_and_mismatch_for_the_one_that_differs() -> None:
    check = script()
    rows = check.parse_smi(SMI)
    ours = reading(DCGM_FI_DEV_FB_USED=20480.0, DCGM_FI_DEV_FB_FREE=61079.0, DCGM_FI_DEV_POWER_USAGE=121.0,
                   DCGM_FI_DEV_SM_CLOCK=1980.0, DCGM_FI_DEV_GPU_UTIL=90.0, DCGM_FI_DEV_MEM_COPY_UTIL=10.0)
    lines = check.compare([ours], rows, {0: "Disabled"})
    assert [line for line in lines if line.startswith("MISMATCH")] == [
        "MISMATCH gpu 0 utilization.gpu: agent 90, nvidia-smi 37"]
    assert len(lines) == 9 and "OK gpu 0 power.draw: agent 121, nvidia-smi 120.4" in lines
    assert "OK gpu 0 mig.mode.current: agent 'Disabled', nvidia-smi 'Disabled'" in lines


def test_a_field_nvml_does_not_give_matches_only_an_unread_nvidia_smi_field() -> None:
    check = script()
    rows = check.parse_smi(SMI.replace("120.40", "[N/A]"))
    lines = check.compare([reading(DCGM_FI_DEV_FB_USED=20480.0)], rows, {0: "Disabled"})
    assert "OK gpu 0 power.draw: agent None, nvidia-smi '[N/A]' (not read)" in lines
    assert "MISMATCH gpu 0 clocks.sm: agent None, nvidia-smi '1980' (not read)" in lines
