"""An output file's missing folders: made before the work that writes it, removed again when that work fails.

`simulate --out` and `compare --out` make the folders above a new run directory; the verbs
that write one file (`trace convert|synth|cluster`, `report`) do the same through
`parent_folders`, so `--out results/new/trace.jsonl` works in a fresh checkout. A failed
write leaves no folder behind that it made (the file itself is written atomically by its writer).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from scheduler.errors import InputError
from simulator.rundir import missing_parents, remove_empty


@contextlib.contextmanager
def parent_folders(out: str | Path, *, field: str = "--out") -> Iterator[Path]:
    """Makes the folders above the file `out` that do not exist yet and yields its path; when
    the body raises, the folders made here are removed again (those still empty). InputError
    (`field`, before anything is made) when a folder cannot be made there: a file in the way,
    no permission to write."""
    shown = str(out)
    if not shown.strip():
        raise InputError("name a file to write", field=field)
    try:
        parent = Path(out).resolve().parent
    except (OSError, RuntimeError) as error:  # a symbolic link loop
        raise InputError(f"cannot write {shown}: {error}", field=field) from None
    created = missing_parents(parent)
    existing = created[0].parent if created else parent
    if not existing.is_dir():
        raise InputError(f"cannot write {shown}: {existing} is not a folder", field=field)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {shown}: no permission to write in {existing}", field=field)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        remove_empty(created)
        raise InputError(f"cannot write {shown}: {error.strerror or error}", field=field) from None
    try:
        yield Path(out)
    except BaseException:
        remove_empty(created)
        raise


__all__ = ["parent_folders"]
