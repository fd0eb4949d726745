"""The machine a benchmark ran on, as the benchmarks print it."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Python version, processor model and core count."""
    return {"python": platform.python_version(), "processor": cpu_model(), "cores": os.cpu_count()}


def describe() -> str:
    info = machine()
    return f"machine: {info['processor']} ({info['cores']} cores), Python {info['python']}"
