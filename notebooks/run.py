"""Executes the notebooks with nbclient and saves them with their outputs; exports marked figures.

    .venv/bin/python notebooks/run.py                 # every notebook, in place
    .venv/bin/python notebooks/run.py 01-cost-vs-queue.ipynb

A code cell whose metadata holds `{"fleetsched": {"export": "docs/images/NAME.png"}}` has its
first PNG output written to that path (relative to the repository's root): that is how the
README's Pareto plot comes from notebook 1. The test suite runs the same `execute` on copies
(tests/test_notebooks.py), so a cell that fails fails the suite.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: A notebook replays traces; ten minutes is far past the slowest (about two on 2 cores).
TIMEOUT_S = 600


def execute(path: Path, out: Path | None = None) -> Any:
    """Runs every cell of the notebook `path` in a fresh kernel started in notebooks/ (as
    Jupyter would start it there), raising nbclient's CellExecutionError at the first cell that
    fails; writes the executed notebook to `out` when given; returns it."""
    notebook = nbformat.read(str(path), as_version=4)
    client = NotebookClient(notebook, timeout=TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}})  # fmt: skip
    client.execute()
    if out is not None:
        nbformat.write(notebook, str(out))
    return notebook


def export_figures(notebook: Any) -> list[Path]:
    """Writes each marked cell's first PNG output to its export path; the paths written."""
    written = []
    for cell in notebook.cells:
        target = cell.get("metadata", {}).get("fleetsched", {}).get("export")
        if not target:
            continue
        pictures = [output["data"]["image/png"] for output in cell.get("outputs", [])
                    if "image/png" in output.get("data", {})]  # fmt: skip
        if not pictures:
            raise ValueError(f"cell marked to export {target} has no PNG output")
        destination = ROOT / target
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(base64.b64decode(pictures[0]))
        written.append(destination)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Execute fleetsched's notebooks in place, with their outputs.")
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: every notebooks/*.ipynb)")
    names = parser.parse_args(argv).notebooks
    paths = [Path(name) if Path(name).exists() else HERE / name for name in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        notebook = execute(path, out=path)
        for written in export_figures(notebook):
            sys.stderr.write(f"{path.name}: wrote {written.relative_to(ROOT)}\n")
        sys.stderr.write(f"{path.name}: executed\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
