"""The agent's collector on real GPUs: inventory, a sample of metrics, and a field-by-field comparison with nvidia-smi.

Run it on a machine with NVIDIA GPUs (one short script, seconds):

    python benchmarks/device_check.py

It scrapes NVML through extender.agent.nvml exactly as the agent does, prints each GPU and MIG
instance (model, UUID, MIG mode, memory), one scrape of the agent's metrics (with the kubelet's
pods if a kubelet socket is there) and how long a scrape took, then asks `nvidia-smi
--query-gpu` for the same fields and prints OK or MISMATCH for each (utilisation, power and
clocks are sampled at two instants, so they get a tolerance). Exit 0 when everything matches,
1 on a mismatch. Without NVML (no GPU, no driver) it says so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# The checkout's own code, also on a GPU machine where fleetsched is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from extender.agent import DEFAULT_SOCKET
from extender.agent.kubelet import PodResourcesClient
from extender.agent.nvml import FB_FREE, FB_USED, NvmlCollector, Reading, real_nvml
from extender.agent.state import Agent, AgentOptions

QUERY = ("index", "uuid", "name", "memory.used", "memory.free", "power.draw", "clocks.sm", "utilization.gpu",
         "utilization.memory", "mig.mode.current")  # fmt: skip
# nvidia-smi field -> (agent field, tolerance: absolute, or a fraction of the value when < 1)
NUMERIC: Mapping[str, tuple[str, float]] = {
    "memory.used": (FB_USED, 64.0),  # MiB; nvidia-smi may leave out the driver's reserved memory
    "memory.free": (FB_FREE, 64.0),
    "power.draw": ("DCGM_FI_DEV_POWER_USAGE", 0.15),
    "clocks.sm": ("DCGM_FI_DEV_SM_CLOCK", 0.15),
    "utilization.gpu": ("DCGM_FI_DEV_GPU_UTIL", 15.0),
    "utilization.memory": ("DCGM_FI_DEV_MEM_COPY_UTIL", 15.0),
}


def parse_smi(text: str) -> dict[str, dict[str, str]]:
    """nvidia-smi's CSV (noheader, nounits) of QUERY, by GPU index."""
    rows = {}
    for row in csv.reader(io.StringIO(text)):
        if len(row) == len(QUERY):
            values = dict(zip(QUERY, (cell.strip() for cell in row), strict=True))
            rows[values["index"]] = values
    return rows


def _close(ours: float, theirs: float, tolerance: float) -> bool:
    allowed = tolerance * max(abs(ours), abs(theirs)) if tolerance < 1 else tolerance
    return abs(ours - theirs) <= allowed


def compare(
    readings: Sequence[Reading], smi: Mapping[str, Mapping[str, str]], mig_modes: Mapping[int, str]
) -> list[str]:
    """One line per GPU and field: OK or MISMATCH, the agent's value and nvidia-smi's."""
    lines = []
    for reading in readings:
        device = reading.device
        if device.gpu_instance_id or reading.lost:
            continue
        row = smi.get(str(device.gpu))
        if row is None:
            lines.append(f"MISMATCH gpu {device.gpu} {device.uuid}: nvidia-smi does not list it")
            continue
        exact = {"uuid": device.uuid, "name": device.model, "mig.mode.current": mig_modes.get(device.gpu, "[N/A]")}
        for name, ours in exact.items():
            verdict = "OK" if ours == row[name] else "MISMATCH"
            lines.append(f"{verdict} gpu {device.gpu} {name}: agent {ours!r}, nvidia-smi {row[name]!r}")
        for name, (metric, tolerance) in NUMERIC.items():
            value, theirs = reading.values.get(metric), row[name]
            if value is None or not _number(theirs):
                verdict = "OK" if value is None and not _number(theirs) else "MISMATCH"
                lines.append(f"{verdict} gpu {device.gpu} {name}: agent {value}, nvidia-smi {theirs!r} (not read)")
                continue
            verdict = "OK" if _close(value, float(theirs), tolerance) else "MISMATCH"
            lines.append(f"{verdict} gpu {device.gpu} {name}: agent {value:g}, nvidia-smi {float(theirs):g}")
    return lines


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def inventory(readings: Sequence[Reading], mig_modes: Mapping[int, str]) -> list[str]:
    lines = []
    for reading in readings:
        device = reading.device
        memory = reading.values.get(FB_USED, 0.0) + reading.values.get(FB_FREE, 0.0)
        if device.gpu_instance_id:
            lines.append(f"  MIG {device.gpu_instance_profile} (GPU instance {device.gpu_instance_id}) "
                         f"{device.mig_uuid}: {memory:.0f} MiB")  # fmt: skip
        elif reading.lost:
            lines.append(f"GPU {device.gpu}: LOST ({device.uuid})")
        else:
            lines.append(f"GPU {device.gpu}: {device.model} {device.uuid} nvidia{device.minor}, "
                         f"MIG {mig_modes.get(device.gpu, '[N/A]')}, {memory:.0f} MiB; unsupported: "
                         f"{', '.join(sorted(reading.unsupported)) or 'none'}")  # fmt: skip
    return lines


def mig_modes(count: int) -> dict[int, str]:
    """nvidia-smi's words for each GPU's current MIG mode, read through NVML."""
    import pynvml

    modes = {}
    for index in range(count):
        try:
            current = pynvml.nvmlDeviceGetMigMode(pynvml.nvmlDeviceGetHandleByIndex(index))[0]
        except pynvml.NVMLError:
            modes[index] = "[N/A]"
            continue
        modes[index] = "Enabled" if current == pynvml.NVML_DEVICE_MIG_ENABLE else "Disabled"
    return modes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubelet-socket", default=DEFAULT_SOCKET)
    args = parser.parse_args(argv)
    collector = NvmlCollector(real_nvml())
    first = collector.scrape()
    if not first.up:
        print(f"device check: no NVML on this machine ({first.down_reason}): no GPU to check, nothing compared")
        return 0
    agent = Agent(collector, PodResourcesClient(args.kubelet_socket), AgentOptions(node="device-check"))
    started = time.perf_counter()
    families = agent.tick(time.time())
    scrape_ms = (time.perf_counter() - started) * 1000
    modes = mig_modes(len([r for r in first.readings if not r.device.gpu_instance_id]))
    print("inventory:")
    print("\n".join(inventory(first.readings, modes)))
    print(f"\none scrape (NVML and the kubelet) took {scrape_ms:.1f} ms; a sample of the metrics:")
    for family in families:
        for labels, value in family.samples[:4]:
            shown = {k: v for k, v in labels if v and k in ("gpu", "GPU_I_ID", "pod", "field", "source", "error")}
            print(f"  {family.name}{shown} {value:g}")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        print("\nnvidia-smi not found: nothing compared")
        return 0
    done = subprocess.run([smi, f"--query-gpu={','.join(QUERY)}", "--format=csv,noheader,nounits"],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    readings = collector.scrape().readings  # right after nvidia-smi's: the two sample the same moment
    collector.close()
    if done.returncode != 0:
        print(f"\nnvidia-smi failed ({done.returncode}): {done.stderr.strip()[:300]}")
        return 1
    lines = compare(readings, parse_smi(done.stdout), modes)
    print("\nagent against nvidia-smi --query-gpu:")
    print("\n".join(lines))
    mismatches = sum(line.startswith("MISMATCH") for line in lines)
    print(f"\n{len(lines) - mismatches} OK, {mismatches} MISMATCH")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
