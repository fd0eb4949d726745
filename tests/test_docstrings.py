"""Every example in a docstring runs: the `>>>` sessions as doctests, the TOML files through the
loader of the module that shows them."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import policies
from extender.config import load_config
from scheduler.catalog import default_catalog
from scheduler.cluster import parse_cluster
from scheduler.profile import parse_profile
from scheduler.tomlfile import TomlDocument

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scheduler", "policies", "traces", "simulator", "extender", "fleetsched")
TOML = re.compile(r"```toml\n(.*?)```", re.DOTALL)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


WITH_SESSIONS = sorted(module_name(path) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                       if ">>>" in path.read_text(encoding="utf-8"))  # fmt: skip


def test_the_docstring_examples_are_found() -> None:
    assert {"scheduler.costing", "scheduler.catalog", "traces.philly", "fleetsched"} <= set(WITH_SESSIONS)


@pytest.mark.parametrize("name", WITH_SESSIONS)
def test_every_session_in_a_docstring_runs(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # examples name the bundled samples from the repository's root
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder().find(module)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in tests:
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted > 0 and results.failed == 0, f"{name}: {results.failed} of {results.attempted} failed"


def toml_examples(name: str) -> list[str]:
    return TOML.findall(importlib.import_module(name).__doc__ or "")


def test_the_cluster_file_example_loads() -> None:
    (example,) = toml_examples("scheduler.cluster")
    cluster = parse_cluster(TomlDocument.parse(example, "example.toml"), default_catalog())
    assert list(cluster.pools) == ["h100-spot"]


def test_the_profile_example_loads() -> None:
    (example,) = toml_examples("scheduler.profile")
    profile = parse_profile(TomlDocument.parse(example, "example.toml"), policies.REGISTRY)
    assert profile.filter and profile.score


def test_the_extender_configuration_example_loads(tmp_path: Path) -> None:
    (example,) = toml_examples("extender.config")
    path = tmp_path / "extender.toml"
    path.write_text(example, encoding="utf-8")
    config = load_config(path, default_catalog())
    assert config.pools and config.pools[0].name == "h100-spot"
