"""The HTML report in headless Chromium (Debian's `chromium`), offline: it renders without console
errors, its screenshot is not blank, and the DOM holds the numbers of every run's summary.json.

Chromium runs with a proxy that refuses every connection and a resolver that finds no host,
so anything the page tried to fetch would fail and show up as an error. `make test` installs
Debian's chromium when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

import fleetsched
from fleetsched.cli import main
from fleetsched.report_html import money, number, percent

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")


def chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium, offline, its console logged to stderr (as root it needs --no-sandbox)."""
    binary = shutil.which("chromium") or "/usr/bin/chromium"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *OFFLINE,
               "--enable-logging=stderr", "--v=0", *arguments]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def demo_command(verb: str) -> list[str]:
    """The arguments `make demo` gives `fleetsched VERB`, less its --out and --force (read from the Makefile)."""
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ")
    line = next(line for line in recipe.splitlines() if f"fleetsched {verb} " in line)
    words = line.split(f"fleetsched {verb} ", 1)[1].split()
    kept = [word for index, word in enumerate(words) if word != "--force" and "--out" not in words[index - 1:index + 1]]
    return [verb, *(str(ROOT / word) if word.startswith("traces/") else word for word in kept)]


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "net::ERR_" in line]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of `make demo`'s comparison, made by the Makefile's own two commands."""
    folder = tmp_path_factory.mktemp("chromium")
    assert main([*demo_command("compare"), "--out", str(folder / "demo")]) == 0
    assert main(["report", str(folder / "demo"), "--out", str(folder / "report.html")]) == 0
    return folder / "report.html"


def test_the_console_check_sees_an_error_when_there_is_one(tmp_path: Path) -> None:
    """The control: the same command reports a page's console error (else the next test proves nothing)."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("control-error")</script></body></html>')
    result = chromium(tmp_path / "profile", "--dump-dom", page.as_uri())
    assert any("control-error" in line for line in console_lines(result.stderr))


def test_the_report_renders_offline_without_console_errors_and_holds_the_summaries(report: Path, tmp_path: Path) -> None:
    result = chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert "<h1>fleetsched report: comparison demo</h1>" in dom
    comparison = fleetsched.load_comparison(report.parent / "demo")
    assert len(comparison.runs) == 9  # 3 profiles x 3 seeds
    for run in comparison.runs.values():
        document = run.document
        for figure in (money(document["cost_usd"]["total"]), money(document["cost_usd"]["idle"]),
                       money(document["cost_usd"]["lost_work"]), number(document["queue_s"]["p95"]),
                       number(document["jct_s"]["mean"]), percent(document["utilisation"])):  # fmt: skip
            assert f">{figure}<" in dom, f"{run.name}: {figure} not in the page"
    assert dom.count("<svg") >= 3  # the charts drew


def test_the_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(tmp_path / "profile", "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri())
    pixels = np.asarray(matplotlib.image.imread(shot))[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    ink = (pixels.min(axis=2) < 0.9).mean()  # the share of pixels that are not (near) white
    colour = (pixels.max(axis=2) - pixels.min(axis=2) > 0.3).mean()  # chart lines and legends
    assert pixels.std() > 0.05 and ink > 0.02 and colour > 0.0003, (pixels.std(), ink, colour)
