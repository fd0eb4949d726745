"""The dependency rule of the architecture page, enforced on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORLD_LIBRARIES = {"simpy", "kubernetes", "http", "httpx", "aiohttp", "requests", "urllib3", "matplotlib", "pynvml"}
STDLIB_OK_FOR_POLICIES = {"__future__", "collections", "dataclasses", "enum", "typing", "math", "functools", "itertools"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def top(name: str) -> str:
    return name.split(".", 1)[0]


@pytest.mark.parametrize("path", modules("scheduler"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_world_library(path: Path) -> None:
    relative = path.relative_to(ROOT / "scheduler")
    if relative.parts[0] == "k8s" or relative.name == "cli.py":
        return
    found = {top(name) for name in imports(path)}
    assert not found & WORLD_LIBRARIES, f"{relative} imports {found & WORLD_LIBRARIES}"
    if relative.parts[0] != "cpsat":
        assert "ortools" not in found, f"{relative}: only the scheduler/cpsat package may import ortools"
    assert not found & {"policies", "simulator", "traces"}, f"{relative}: the core imports no outer package"


@pytest.mark.parametrize("path", modules("policies"), ids=lambda p: str(p.relative_to(ROOT)))
def test_policies_import_only_the_core(path: Path) -> None:
    found = {top(name) for name in imports(path)}
    assert found <= {"scheduler", "policies", *STDLIB_OK_FOR_POLICIES, "pathlib"}, found
    if path.name != "__init__.py":  # the registry module reads bundled profiles; plugins touch no files
        assert "pathlib" not in found


def test_the_worlds_do_not_import_each_other() -> None:
    for path in modules("simulator"):
        assert not any(name.startswith("scheduler.k8s") for name in imports(path)), path
    for path in modules("scheduler/k8s") if (ROOT / "scheduler/k8s").exists() else []:
        assert "simulator" not in {top(name) for name in imports(path)}, path


def test_no_policy_knows_which_world_it_runs_in() -> None:
    for path in [*modules("policies"), *modules("scheduler")]:
        text = path.read_text(encoding="utf-8")
        for word in ("is_simulation", "in_simulation", "simulate="):
            assert word not in text, f"{path}: {word}"
    for path in modules("policies"):
        assert not {"time", "datetime", "random", "os"} & {top(n) for n in imports(path)}, f"{path}: clock, I/O or rng"


def test_only_the_command_line_prints() -> None:
    for path in [*modules("scheduler"), *modules("policies"), *modules("traces")]:
        if path.name == "cli.py":
            continue
        calls = [node for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"]
        assert not calls, f"{path} prints; use logging"
