"""The dependency rules of the architecture (docs/architecture.md), enforced on the source.

Each package may import exactly what its row of ALLOWED names, and every module of it is
held to that row; there is no list of modules let off. The scheduling core imports the
standard library's pure modules, numpy and scipy; its batch placer package alone also OR-Tools
and the clock (its solver works to a wall-clock budget). Policies import only the core. Each
world imports the core, the policies and the trace library (the simulator numpy too, for its
exact quantiles over spilled values; the trace library numpy and hashlib, to find repeated
ids in constant memory), never the other world; only the
entry package imports both.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scheduler", "policies", "traces", "simulator", "extender", "fleetsched")
PURE = {
    "__future__", "abc", "bisect", "collections", "contextlib", "dataclasses", "enum", "fractions", "functools",
    "heapq", "itertools", "logging", "math", "numbers", "operator", "random", "re", "types", "typing",
}  # fmt: skip
#: What the core reads: its packaged data, and the cluster and profile files it is handed.
FILES = {"importlib", "json", "pathlib", "tomllib"}
WORLD_LIBRARIES = {
    "simpy", "kubernetes", "http", "httpx", "aiohttp", "requests", "urllib", "urllib3", "socket", "ssl", "threading",
    "subprocess", "signal", "matplotlib", "pandas", "pyarrow", "pynvml", "os", "sys", "time", "datetime", "csv",
}  # fmt: skip
STANDARD = {
    *PURE, *FILES, "argparse", "array", "concurrent", "contextlib", "csv", "datetime", "gc", "http", "os", "resource",
    "shutil", "signal", "ssl", "statistics", "sys", "tempfile", "threading", "time", "urllib",
}  # fmt: skip
ALLOWED: dict[str, set[str]] = {
    "scheduler": {*PURE, *FILES, "numpy", "scipy", "scheduler"},
    "scheduler/batch": {*PURE, *FILES, "numpy", "scipy", "scheduler", "ortools", "time"},
    "policies": {*PURE, "pathlib", "scheduler", "policies"},  # pathlib: the registry finds its bundled profiles
    "traces": {*STANDARD, "pyarrow", "numpy", "hashlib", "tarfile", "scheduler", "traces"},
    "simulator": {*STANDARD, "simpy", "matplotlib", "numpy", "scheduler", "policies", "traces", "simulator"},
    # The extender's server: one asyncio loop over its own sockets; hmac for constant-time token checks.
    "extender": {*STANDARD, "asyncio", "socket", "hmac", "kubernetes", "urllib3", "scheduler", "policies", "extender"},
    # The GPU node agent beside the extender: NVML, the kubelet's gRPC socket (generated stubs warn), Prometheus.
    "extender/agent": {*STANDARD, "asyncio", "socket", "warnings", "pynvml", "prometheus_client", "grpc", "google",
                       "urllib3", "scheduler", "extender"},
    "fleetsched": {*STANDARD, "scheduler", "policies", "traces", "simulator", "extender", "fleetsched",
                   "pandas", "scipy", "html"},  # frames and the HTML report: DataFrames, t quantiles, escaping
}
# Sweeps (fleetsched/sweep*.py): cells keyed by sha256, results as Parquet and DataFrames, Ray tasks (socket:
# whether a Ray address answers before Ray retries for minutes).
ALLOWED["fleetsched"] |= {"pandas", "pyarrow", "ray", "hashlib", "socket"}
# The agent's listen failures (errno: which option to name when the address or the port will not do).
ALLOWED["extender/agent"] |= {"errno"}


def imports(path: Path) -> set[str]:
    """The top-level names of every module `path` imports (relative imports are its own package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".", 1)[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".", 1)[0])
    return found


def rule(path: Path) -> str:
    """The row of ALLOWED that holds `path`: the deepest folder that has one."""
    relative = path.relative_to(ROOT).parent.as_posix()
    return max((row for row in ALLOWED if relative == row or relative.startswith(row + "/")), key=len)


MODULES = sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_each_module_imports_only_what_its_package_may(path: Path) -> None:
    found = imports(path)
    assert found <= ALLOWED[rule(path)], f"{path.relative_to(ROOT)} imports {sorted(found - ALLOWED[rule(path)])}"


def test_the_rules_keep_the_core_free_of_worlds_and_io() -> None:
    for row in ("scheduler", "scheduler/batch", "policies"):
        clock = {"time"} if row == "scheduler/batch" else set()
        assert not ALLOWED[row] & (WORLD_LIBRARIES - clock), row
        assert not ALLOWED[row] & {"traces", "simulator", "extender", "fleetsched"}, row
    assert "ortools" not in ALLOWED["scheduler"] and "time" not in ALLOWED["scheduler"]
    assert not ALLOWED["simulator"] & {"extender", "fleetsched"} and not ALLOWED["extender"] & {"simulator", "fleetsched"}
    assert [row for row, allowed in ALLOWED.items() if {"simulator", "extender"} <= allowed] == ["fleetsched"]


def test_every_package_has_a_rule_and_every_rule_a_package() -> None:
    assert {rule(path).split("/", 1)[0] for path in MODULES} == set(PACKAGES)
    assert all((ROOT / row).is_dir() for row in ALLOWED)


def test_plugins_touch_no_file_clock_or_randomness_of_their_own() -> None:
    """A plugin reads only the job, the node and the cycle (whose `rng` is its only randomness)."""
    plugin_modules = [path for path in (ROOT / "policies").rglob("*.py") if "(Plugin)" in path.read_text(encoding="utf-8")]
    assert len(plugin_modules) >= 6
    for path in plugin_modules:
        assert imports(path) <= (PURE - {"random"}) | {"scheduler", "policies"}, path


def test_no_policy_knows_which_world_it_runs_in() -> None:
    for path in [*(ROOT / "policies").rglob("*.py"), *(ROOT / "scheduler").rglob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for word in ("is_simulation", "in_simulation", "simulate="):
            assert word not in text, f"{path}: {word}"


def test_only_the_command_line_prints() -> None:
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "fleetsched/cli.py":
                continue
            calls = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                     if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
            assert not calls, f"{path} prints; use logging"
