"""Sweeps: every cell of a grid file replayed once, cached by its inputs' hash, gathered into one Parquet table.

`run_sweep(grid, out)` reads and checks the grid (`fleetsched.sweep_grid`), plans its cells
(`fleetsched.sweep_cells`), skips those already in `out/cells/<key>/`, runs the rest in worker
processes (`backend="local"`) or as Ray tasks (`backend="ray"`), and writes
`out/results.parquet`: one row per cell in grid order, the axes' values and the summary
metrics. Each cell's folder is written into a temporary folder and renamed into place when
complete, so a sweep that is killed keeps every finished cell and a rerun runs only the rest.
A cell folder whose files are damaged or missing is not done: the rerun warns and runs it again.
The workers compute; only this process writes, so local and Ray sweeps write the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetsched.api import check_workers
from fleetsched.sweep_cells import CellSpec, plan_cells, run_cell
from fleetsched.sweep_grid import Grid, load_grid
from scheduler.errors import InputError
from simulator.compare import COLUMNS, row

if TYPE_CHECKING:
    import pandas
    import pyarrow

log = logging.getLogger(__name__)
MARKER = ".fleetsched-sweep"
RESULTS = "results.parquet"
BACKENDS = ("local", "ray")
METRICS = tuple(name for name in COLUMNS if name not in ("profile", "seed"))
PARENT_CHECK_S = 0.5
_COUNTS = {"jobs", "completed", "unfinished", "preemptions", "job_interruptions"}
Runner = Callable[[CellSpec], dict[str, Any]]
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What a sweep did: its cells, how many it ran now and how many it found done."""

    out: Path
    cells: int
    ran: int
    reused: int


def run_sweep(
    grid: str | Path,
    out: str | Path,
    *,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    runner: Runner = run_cell,
) -> SweepReport:
    """Runs the cells of `grid` not yet in `out` (a new or empty directory, or an earlier sweep's)
    and writes `out/results.parquet`. Every mistake in the arguments or the grid raises
    InputError before anything is written. `runner` replays one cell (tests count runs with it;
    the Ray backend always uses `run_cell`)."""
    checked, planned = plan_sweep(grid, out, backend=backend, address=address, workers=workers)
    pending = _pending(Path(out), planned)
    log.info("sweep %s: %d cells, %d to run", grid, len(planned), len(pending))
    if backend == "ray" and pending:
        from fleetsched import sweep_ray  # imported on use: Ray takes seconds to import

        with sweep_ray.session(address, workers):  # an unreachable cluster stops here, before --out is made
            folder = prepare(out)
            _run_ray(pending, folder, checked, progress)
    else:
        folder = prepare(out)
        _run_local(pending, folder, workers, progress, runner)
    write_results(folder, planned, checked)
    return SweepReport(folder, len(planned), len(pending), len(planned) - len(pending))


def plan_sweep(
    grid: str | Path, out: str | Path, *, backend: str = "local", address: str | None = None,
    workers: int | None = None,
) -> tuple[Grid, list[tuple[int, CellSpec]]]:
    """Every check `run_sweep` makes before it runs a cell (the options, the grid, its trace
    and cells, `out`; `sweep --dry-run` makes them all); the grid and its cells. Writes nothing."""
    check_options(backend, address, workers, option=False)  # the command checks its options first
    checked = load_grid(grid)
    planned = plan_cells(checked)
    check_out(out)
    return checked, planned


def sweep(
    grid: str | Path,
    out: str | Path,
    *,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> pandas.DataFrame:
    """Runs the sweep `grid` into `out` (`run_sweep`) and returns its results table."""
    report = run_sweep(grid, out, backend=backend, address=address, workers=workers, progress=progress)
    return load_sweep(report.out)


def load_sweep(out: str | Path) -> pandas.DataFrame:
    """The results table of the sweep in `out`: one row per cell (index, cell, profile, seed,
    the axes, the metrics); InputError when `out` holds none."""
    import pandas  # imported on use: pandas takes a second to import, and the command rarely needs it

    if not Path(out).is_dir():
        raise InputError("not a directory" if Path(out).exists() else "no such directory", source=str(out))
    path = Path(out) / RESULTS
    if not path.is_file():
        raise InputError(f"no {RESULTS}: not a finished fleetsched sweep", source=str(out))
    return pandas.read_parquet(path)


def check_options(backend: str, address: str | None, workers: int | None, *, option: bool = True) -> None:
    def field(name: str) -> str:
        return f"--{name}" if option else name

    if backend not in BACKENDS:
        raise InputError(f"must be one of {', '.join(BACKENDS)}, got {backend!r}", field=field("backend"))
    if address is not None and backend != "ray":
        raise InputError("names a Ray cluster: use it with --backend ray", field=field("address"))
    check_workers(workers, field("workers"))


def check_out(out: str | Path) -> None:
    """InputError (`--out`) unless `out` is new, empty or an earlier sweep's (it carries MARKER); creates nothing."""
    path = Path(out)
    if not str(out).strip():
        raise InputError("name a directory to write", field="--out")
    if path.exists() and not path.is_dir():
        raise InputError("is a file; name a new directory or an earlier sweep's", source=str(out), field="--out")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).is_file():
        raise InputError("holds other files; name a new or empty directory, or an earlier sweep's",
                         source=str(out), field="--out")  # fmt: skip


def prepare(out: str | Path) -> Path:
    """The sweep directory (`check_out`), made when new and marked; the temporary cell folders
    a killed sweep left are removed."""
    check_out(out)
    path = Path(out)
    try:
        (path / "cells").mkdir(parents=True, exist_ok=True)
        (path / MARKER).write_text("fleetsched sweep directory: cells/<key>/ are reused by later sweeps\n")
    except OSError as error:
        raise InputError(error.strerror or str(error), source=str(out), field="--out") from None
    for partial in (path / "cells").glob(".partial-*"):
        shutil.rmtree(partial, ignore_errors=True)  # a killed sweep's unfinished cell
    return path


def _cell_text(spec: CellSpec, document: Mapping[str, Any]) -> str:
    """cell.json's text for the cell `spec` whose summary.json document is `document`."""
    metrics = {name: value for name, value in row(dict(document)).items() if name in METRICS}
    cell = {"key": spec.key, "inputs": spec.inputs, "metrics": metrics}
    return json.dumps(cell, indent=2, sort_keys=True) + "\n"


def _read_cell(cell: Path) -> dict[str, str] | str:
    """The texts of a cell folder's cell.json and summary.json, or why they cannot be read."""
    if cell.is_symlink() or not cell.is_dir():
        return "not a folder"
    texts = {}
    for name in ("summary.json", "cell.json"):
        try:
            texts[name] = (cell / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return f"no {name}"
        except (OSError, UnicodeDecodeError) as error:
            return f"{name}: {getattr(error, 'strerror', None) or error}"
    return texts


def damage(cell: Path, spec: CellSpec) -> str | None:
    """Why `cell` is not the finished folder of the cell `spec`, or None when it is: a folder
    (not a link) holding a summary.json document of this cell and the cell.json it gives."""
    texts = _read_cell(cell)
    if isinstance(texts, str):
        return texts
    try:
        document = json.loads(texts["summary.json"])
    except ValueError:
        return "summary.json: not JSON (cut short?)"
    try:
        if document["run"]["cell"] != spec.key:
            return "summary.json: another cell's"
        expected = _cell_text(spec, document)
    except (KeyError, TypeError):  # a field missing, or a document where an object belongs
        return "summary.json: fields missing"
    return None if texts["cell.json"] == expected else "cell.json: does not match summary.json"


def _pending(out: Path, planned: Sequence[tuple[int, CellSpec]]) -> list[CellSpec]:
    """The planned cells not done in `out`: absent, or damaged (a warning names each such folder)."""
    pending = []
    for _, spec in planned:
        cell = out / "cells" / spec.key
        if not (cell.exists() or cell.is_symlink()):
            pending.append(spec)
        elif (problem := damage(cell, spec)) is not None:
            log.warning("%s: damaged or incomplete cell (%s): running it again", cell, problem)
            pending.append(spec)
    return pending


def write_cell(folder: Path, spec: CellSpec, document: Mapping[str, Any]) -> None:
    """Writes `cells/<key>/` (cell.json: the key, its inputs and the metrics; summary.json)
    into a temporary folder renamed into place, so a cell folder is complete or absent.
    A damaged entry in its place is moved into a temporary folder first and removed there:
    a link is removed, never what it points to."""
    cells = folder / "cells"
    target = cells / spec.key
    if damage(target, spec) is None:  # another sweep into the same directory finished it
        return
    temporary = Path(tempfile.mkdtemp(prefix=".partial-", dir=cells))
    (temporary / "cell.json").write_text(_cell_text(spec, document), encoding="utf-8")
    (temporary / "summary.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if target.exists() or target.is_symlink():
        aside = Path(tempfile.mkdtemp(prefix=".partial-", dir=cells))
        with contextlib.suppress(OSError):  # another sweep moved it first
            target.rename(aside / spec.key)
        shutil.rmtree(aside, ignore_errors=True)  # removes a link inside it, not the link's target
    try:
        temporary.rename(target)
    except OSError:  # another sweep into the same directory finished it first
        shutil.rmtree(temporary, ignore_errors=True)


def _run_local(pending: Sequence[CellSpec], folder: Path, workers: int | None, progress: Progress | None,
               runner: Runner) -> None:  # fmt: skip
    """Runs the cells in worker processes (in this one when one worker is asked for or enough)."""
    count = max(1, min(len(pending), workers or os.cpu_count() or 1))
    if count == 1:
        for done, spec in enumerate(pending, start=1):
            write_cell(folder, spec, runner(spec))
            if progress is not None:
                progress(done, len(pending))
        return
    pool = ProcessPoolExecutor(max_workers=count, initializer=_end_with_parent, initargs=(os.getpid(),))
    try:
        futures: dict[Future[dict[str, Any]], CellSpec] = {pool.submit(runner, spec): spec for spec in pending}
        done = 0
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for future in finished:
                spec = futures.pop(future)
                write_cell(folder, spec, future.result())
                done += 1
                if progress is not None:
                    progress(done, len(pending))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _end_with_parent(parent: int) -> None:
    """A worker process' initializer: the worker ends once the sweep that started it is gone.
    A sweep killed with SIGKILL cannot tell its workers, which would otherwise wait forever.
    Ctrl-C is left to the sweep, which stops handing out cells and lets the running ones end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="sweep-parent-watch", daemon=True).start()


def _run_ray(pending: Sequence[CellSpec], folder: Path, grid: Grid, progress: Progress | None) -> None:
    """Runs the cells as Ray tasks on the connected cluster (`sweep_ray.session`). The inputs
    travel as bytes in Ray's object store, so the cluster's nodes need fleetsched (the same
    version: each task checks) but not the files."""
    import ray

    from fleetsched import sweep_ray

    files = sweep_ray.shipped(grid, pending)
    remote = ray.remote(num_cpus=1)(sweep_ray.run_shipped)
    running = {remote.remote(spec, *files.refs(spec)): spec for spec in pending}
    done = 0
    while running:
        finished, _ = ray.wait(list(running), num_returns=1)
        for reference in finished:
            spec = running.pop(reference)
            write_cell(folder, spec, ray.get(reference))
            done += 1
            if progress is not None:
                progress(done, len(pending))


def _axis_type(values: Sequence[object]) -> pyarrow.DataType:
    import pyarrow

    return pyarrow.int64() if all(isinstance(value, int) for value in values) else pyarrow.float64()


def write_results(folder: Path, planned: Sequence[tuple[int, CellSpec]], grid: Grid) -> Path:
    """Writes results.parquet (temporary file, then renamed): a row per planned cell in grid
    order, from the cells' cell.json files; same cells, same bytes."""
    import pyarrow as pa  # imported on use, as pandas is
    import pyarrow.parquet as pq

    ordered = sorted(planned, key=lambda item: item[0])
    metrics = [json.loads((folder / "cells" / spec.key / "cell.json").read_text(encoding="utf-8"))["metrics"]
               for _, spec in ordered]  # fmt: skip
    columns: dict[str, list[Any]] = {
        "index": [index for index, _ in ordered],
        "cell": [spec.key for _, spec in ordered],
        "profile": [spec.profile_name for _, spec in ordered],
        "seed": [spec.seed for _, spec in ordered],
    }
    for position, axis in enumerate(grid.axes):
        columns[axis.name] = [spec.axes[position][1] for _, spec in ordered]
    for name in METRICS:
        columns[name] = [found[name] for found in metrics]
    types = {"index": pa.int64(), "cell": pa.string(), "profile": pa.string(), "seed": pa.int64(),
             **{axis.name: _axis_type(axis.values) for axis in grid.axes},
             **{name: pa.int64() if name in _COUNTS else pa.float64() for name in METRICS}}  # fmt: skip
    schema = pa.schema([(name, types[name]) for name in columns])
    table = pa.Table.from_pydict(columns, schema=schema)
    temporary = folder / f".{RESULTS}.partial"
    pq.write_table(table, temporary)
    temporary.replace(folder / RESULTS)
    return folder / RESULTS


