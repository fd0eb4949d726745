"""The `fleetsched sweep` verb: a grid file's cells replayed (cached by their inputs' hash) into one Parquet table.

The grid and the options are checked before anything is written: a mistake prints one line
(`fleetsched: GRID:LINE: KEY: problem`) and exits 2. Rerunning the same command skips the
cells already done, so a killed sweep resumes where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time

from fleetsched.sweep import RESULTS, check_options, plan_sweep, run_sweep

Output = tuple[int, str]
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT


def add_sweep_verb(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = verbs.add_parser("sweep", help="replay every cell of a grid (profiles, seeds, weights, pools, "
                                            "trace) once, cached, into results.parquet")  # fmt: skip
    parser.add_argument("grid", metavar="GRID.toml", help="grid file (TOML; see docs/sweep.md)")
    parser.add_argument("--out", required=True, help="sweep directory (new, empty, or an earlier sweep's to resume)")
    parser.add_argument("--backend", default="local", help="local (worker processes, default) or ray (Ray tasks)")
    parser.add_argument("--address", help="Ray cluster address for --backend ray (default: start a local instance)")
    parser.add_argument("--workers", type=int, help="parallel processes, or a local Ray instance's CPUs "
                                                    "(default: one per core)")  # fmt: skip
    parser.add_argument("--dry-run", action="store_true", help="make the checks a run makes (grid, trace, cells, "
                                                               "--out), print the grid size; run nothing")  # fmt: skip
    parser.set_defaults(run=run_sweep_verb)


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\rran {done}/{total} cells" + ("\n" if done == total else ""))
    sys.stderr.flush()


def run_sweep_verb(args: argparse.Namespace) -> Output:
    check_options(args.backend, args.address, args.workers)
    if args.dry_run:
        grid, _ = plan_sweep(args.grid, args.out, backend=args.backend, address=args.address, workers=args.workers)
        sampled = f", a sample of {grid.sample:,}" if grid.sample else ""
        axes = len(grid.axes)
        return 0, f"{args.grid}: ok ({grid.size():,} grid points{sampled}; {axes} axes besides profiles and seeds)"
    started = time.monotonic()
    try:
        report = run_sweep(args.grid, args.out, backend=args.backend, address=args.address, workers=args.workers,
                           progress=_progress if sys.stderr.isatty() else None)  # fmt: skip
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED, f"interrupted; the cells done are kept in {args.out}/cells: rerun to resume"
    took = time.monotonic() - started
    return 0, (f"{report.cells} cells: ran {report.ran}, {report.reused} already done ({took:.1f} s)\n"
               f"wrote {args.out}/{RESULTS}")
