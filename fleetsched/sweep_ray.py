"""Sweep cells as Ray tasks: connecting to a cluster, shipping the input files as bytes, a task's body.

A Ray cluster's nodes need not see the sweep's files: the trace, the cluster file and any
profile file travel once each through Ray's object store, and a task writes them under the
node's temporary folder, named by their sha256, before it replays its cell. The nodes need
the same fleetsched (`run_cell` refuses to run under another code version).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray

from fleetsched.sweep_cells import ROOT, CellSpec, run_cell
from fleetsched.sweep_grid import Grid
from scheduler.errors import InputError

INPUTS = "fleetsched-sweep-inputs"


#: How long to wait for a Ray cluster's address to accept a connection (Ray itself retries for minutes).
REACH_TIMEOUT_S = 10.0


@contextmanager
def session(address: str | None, workers: int | None) -> Iterator[None]:
    """Connected to Ray for the block: to the cluster at `address`, or to a local instance of
    `workers` CPUs (all when None) whose workers import this fleetsched; disconnected (the local
    instance stopped) after it. A connection the caller made already is used and kept."""
    if ray.is_initialized():
        yield
        return
    if address is None:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})  # fmt: skip
    else:
        _reach(address)
        try:
            ray.init(address=address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise InputError(f"cannot connect to a Ray cluster there: {error}", field="--address") from None
    try:
        yield
    finally:
        ray.shutdown()


def _reach(address: str) -> None:
    """InputError unless `address` (HOST:PORT; `auto` and ray:// addresses are left to Ray) accepts a connection."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"must be HOST:PORT of a Ray head (or auto, or ray://HOST:PORT), got {address!r}",
                         field="--address")  # fmt: skip
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as error:
        raise InputError(f"cannot reach a Ray cluster at {address}: {error.strerror or error}",
                         field="--address") from None  # fmt: skip


@dataclass(frozen=True, slots=True)
class Shipped:
    """The object references of the input files' bytes, by path."""

    by_path: dict[str, Any]

    def refs(self, spec: CellSpec) -> tuple[Any, Any, Any]:
        """The trace's, the cluster file's and the profile file's bytes (None for a bundled profile)."""
        return self.by_path[spec.trace], self.by_path[spec.cluster], self.by_path.get(spec.profile)


def shipped(grid: Grid, pending: Sequence[CellSpec]) -> Shipped:
    """Puts every input file the pending cells read into the object store, once each."""
    paths = {str(grid.trace), str(grid.cluster_path), *(spec.profile for spec in pending
                                                         if Path(spec.profile).suffix == ".toml")}  # fmt: skip
    return Shipped({path: ray.put(Path(path).read_bytes()) for path in sorted(paths)})


def run_shipped(spec: CellSpec, trace: bytes, cluster: bytes, profile: bytes | None) -> dict[str, Any]:
    """A Ray task's body: the cell's files written on this node (once per content), then `run_cell`."""
    inputs = spec.inputs
    local = replace(spec, trace=_placed(inputs["trace_sha256"], spec.trace, trace),
                    cluster=_placed(inputs["cluster_sha256"], spec.cluster, cluster))  # fmt: skip
    if profile is not None:
        local = replace(local, profile=_placed(inputs["profile"]["sha256"], spec.profile, profile))
    return run_cell(local)


def _placed(sha256: str, original: str, data: bytes) -> str:
    """The path of `data` under the temporary folder, by content, keeping the file's name (the
    trace format is told by it, a profile is named by it)."""
    path = Path(tempfile.gettempdir()) / INPUTS / sha256 / Path(original).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
        temporary.write_bytes(data)
        temporary.replace(path)
    return str(path)
