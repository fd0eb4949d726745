"""A run directory written safely: every check before the run, the files in a temporary folder, one commit.

`RunDirectory.prepare(out)` refuses, before anything runs, any `--out` it must not write:
a file, the root, the home directory, the current directory or one above it, a directory
holding other files, a place it cannot write. It accepts a new path (its parents are made),
an empty directory, or, with `force`, a previous fleetsched run (a directory carrying the
marker file `.fleetsched-run`). The run writes into `path`, a temporary folder beside the
target; `commit` marks it and renames it into place, replacing a previous run; `abandon`
removes the temporary folder. Nothing but the temporary folder and a previous run (which
carries the marker) is ever removed.

    with RunDirectory.prepare("out/run", force=True) as run:
        ...  # write files into run.path
        run.commit()  # leaving the block without committing abandons the run
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import tomllib
from enum import Enum
from importlib import metadata
from pathlib import Path
from types import TracebackType

from scheduler.errors import InputError

MARKER = ".fleetsched-run"
TOOL = "fleetsched"
FIELD = "--out"
_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
_MARKER_BYTES_MAX = 4096  # the marker is a small JSON object; a larger file is not ours
log = logging.getLogger(__name__)


def fleetsched_version() -> str:
    """The installed fleetsched's version (package metadata), else the source tree's pyproject.toml."""
    try:
        return metadata.version(TOOL)
    except metadata.PackageNotFoundError:
        pass
    try:
        return str(tomllib.loads(_PYPROJECT.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


class _State(Enum):
    """What is at the target now."""

    ABSENT = "absent"
    EMPTY = "empty"
    PREVIOUS = "previous"


class RunDirectory:
    """A run directory being written: `path` (temporary, beside `target`) until `commit` renames it into place."""

    def __init__(self, target: Path, path: Path, shown: str, force: bool, created: tuple[Path, ...]) -> None:
        self.target = target
        self.path = path
        self._shown = shown
        self._force = force
        self._created = created  # parents prepare made, removed again by abandon when still empty
        self._finished = False

    @classmethod
    def prepare(cls, out: str | Path, *, force: bool = False) -> RunDirectory:
        """Checks `out` and creates the temporary folder; InputError (field `--out`) naming the problem.

        Nothing is created or removed when `out` is refused.
        """
        shown = str(out)
        if not shown.strip():
            raise InputError("name a directory to write", field=FIELD)
        try:
            target = Path(out).resolve()
        except (OSError, RuntimeError) as error:  # a symbolic link loop
            raise InputError(f"{shown}: {error}", field=FIELD) from None
        _refuse_special(target, shown)
        _state(target, shown, force)
        parent = target.parent
        created = missing_parents(parent)
        _check_writable(created[0].parent if created else parent, shown)
        _remove_stale(parent, target.name)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            path = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=parent))
        except OSError as error:
            remove_empty(created)
            raise InputError(f"cannot write {shown}: {error.strerror or error}", field=FIELD) from None
        return cls(target, path, shown, force, created)

    def commit(self) -> None:
        """Marks the run and renames it into place, replacing a previous run (only with force)."""
        if self._finished:
            raise RuntimeError(f"run directory {self.target} was already committed or abandoned")
        marker = {"tool": TOOL, "version": fleetsched_version()}
        (self.path / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        # Checked again: the target may have changed while the run ran.
        state = _state(self.target, self._shown, self._force)
        try:
            if state is _State.PREVIOUS:
                self._replace_previous()
            else:
                os.rename(self.path, self.target)  # onto nothing, or onto an empty directory (POSIX)
        except OSError as error:
            raise InputError(f"cannot move the run into {self._shown}: {error.strerror or error}",
                             field=FIELD) from None
        self._finished = True

    def _replace_previous(self) -> None:
        # The old run moves into a fresh folder first, so the target is missing only between
        # two renames; if the second fails, the old run goes back.
        trash = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-{os.getpid()}-", dir=self.target.parent))
        old = trash / "run"
        os.rename(self.target, old)
        try:
            os.rename(self.path, self.target)
        except OSError:
            os.rename(old, self.target)
            trash.rmdir()
            raise
        shutil.rmtree(trash, ignore_errors=True)
        if trash.exists():
            log.warning("could not remove all of the replaced run in %s", trash)

    def abandon(self) -> None:
        """Removes the temporary folder (and the parents prepare made, when empty); the target is untouched."""
        if self._finished:
            return
        self._finished = True
        shutil.rmtree(self.path, ignore_errors=True)
        remove_empty(self._created)

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.abandon()


def is_previous_run(folder: Path) -> bool:
    """Whether `folder` carries fleetsched's marker file (a small JSON object naming the tool)."""
    marker = folder / MARKER
    try:
        if marker.is_symlink() or not marker.is_file() or marker.stat().st_size > _MARKER_BYTES_MAX:
            return False
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("tool") == TOOL


def _refuse_special(target: Path, shown: str) -> None:
    """The root, the home directory, the current directory and those above it are never run directories."""
    if target.parent == target:
        raise InputError(f"{shown} is the root directory; name a new or empty directory", field=FIELD)
    try:
        home: Path | None = Path.home().resolve()
    except (RuntimeError, OSError):  # no home directory known
        home = None
    if target == home:
        raise InputError(f"{shown} is your home directory; name a new or empty directory", field=FIELD)
    try:
        here: Path | None = Path.cwd().resolve()
    except OSError:  # the current directory was removed
        here = None
    if here is not None and (target == here or target in here.parents):
        raise InputError(f"{shown} is the current directory or one above it; name a new or empty directory",
                         field=FIELD)


def _state(target: Path, shown: str, force: bool) -> _State:
    """What is at `target`, or InputError when it must not be written."""
    if not target.exists():
        return _State.ABSENT
    if not target.is_dir():
        raise InputError(f"{shown} is a file, not a directory; name a new or empty directory", field=FIELD)
    try:
        entries = sorted(os.listdir(target))
    except OSError as error:
        raise InputError(f"cannot read {shown}: {error.strerror or error}", field=FIELD) from None
    if not entries:
        return _State.EMPTY
    if not is_previous_run(target):
        raise InputError(
            f"{shown} holds files that are not a fleetsched run (such as {entries[0]}); name a new or empty "
            "directory (--force, or force=True in Python, replaces only a previous fleetsched run, never other files)",
            field=FIELD,
        )
    if not force:
        raise InputError(f"{shown} is a previous fleetsched run; pass --force (force=True in Python) to replace it",
                         field=FIELD)
    _check_writable(target, shown)
    return _State.PREVIOUS


def _remove_stale(parent: Path, name: str) -> None:
    """Removes the temporary folders of earlier runs into the same target whose process is gone
    (killed outright, with no chance to clean up): this tool made them, for this target, and
    nothing will ever finish them. A folder whose process still runs is left alone."""
    prefix = f".{name}.partial-"
    try:
        entries = sorted(parent.iterdir()) if parent.is_dir() else []
    except OSError:
        return
    for entry in entries:
        pid = entry.name.removeprefix(prefix).split("-", 1)[0]
        ours = entry.name.startswith(prefix) and pid.isdigit() and entry.is_dir() and not entry.is_symlink()
        if ours and not _running(int(pid)):
            log.info("removing %s, left by process %s, which is gone", entry, pid)
            shutil.rmtree(entry, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's
        return True
    return True


def missing_parents(parent: Path) -> tuple[Path, ...]:
    """The directories above the target that do not exist yet, outermost first."""
    missing = []
    while not parent.exists() and parent.parent != parent:
        missing.append(parent)
        parent = parent.parent
    return tuple(reversed(missing))


def _check_writable(folder: Path, shown: str) -> None:
    if not folder.is_dir():
        raise InputError(f"cannot write {shown}: {folder} is not a directory", field=FIELD)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {shown}: no permission to write in {folder}", field=FIELD)


def remove_empty(folders: tuple[Path, ...]) -> None:
    """Removes `folders` (outermost first) innermost first, stopping at one no longer empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # not empty any more, or gone: leave it
            return
