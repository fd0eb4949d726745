"""Every notebook runs from top to bottom on a fresh kernel (a failing cell fails the suite), and is
committed with the outputs of such a run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def runner() -> Any:
    spec = importlib.util.spec_from_file_location("notebooks_run", ROOT / "notebooks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_three_notebooks_the_readme_promises_are_there() -> None:
    assert [path.name for path in NOTEBOOKS] == ["01-cost-vs-queue.ipynb", "02-spot.ipynb", "03-budget-what-if.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_notebook_is_committed_with_the_outputs_of_a_whole_run(path: Path) -> None:
    notebook = nbformat.read(str(path), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "save it after running every cell (notebooks/run.py)"
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1)), "run top to bottom, once"
    assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs), "no plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_the_notebook_runs_from_top_to_bottom(path: Path, tmp_path: Path) -> None:
    executed = runner().execute(path, out=tmp_path / path.name)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    pictures = [output for cell in code for output in cell.outputs if "image/png" in output.get("data", {})]
    assert pictures, "the notebook drew nothing"


def test_a_failing_cell_fails_the_run(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("raise ValueError('broken cell')")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(notebook, str(path))
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match="broken cell"):
        runner().execute(path)


def test_the_readme_figure_is_exported_from_notebook_one() -> None:
    notebook = nbformat.read(str(ROOT / "notebooks" / "01-cost-vs-queue.ipynb"), as_version=4)
    marked = [cell for cell in notebook.cells if cell.get("metadata", {}).get("fleetsched", {}).get("export")]
    assert [cell.metadata["fleetsched"]["export"] for cell in marked] == ["docs/images/pareto.png"]
    assert (ROOT / "docs" / "images" / "pareto.png").stat().st_size > 10_000
    assert "docs/images/pareto.png" in (ROOT / "README.md").read_text(encoding="utf-8")
