"""Files that several processes may create at once: dev keys and secrets made on first use.

Two replicas started together (two audit sinks, two issuers) both find no key and
both make one. `create_once` lets exactly one file win, whole: each writer
fills a private temporary file, flushes it to disk, and publishes it with
`link()`, which fails if the name exists. The loser drops its own and reads the
winner's. Nobody ever reads a half-written key, and nobody fails because another
process was first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["create_once", "exclusively", "sync_folder", "write_atomically"]


def create_once(path: Path, make: Callable[[], bytes], *, mode: int = 0o600, dir_mode: int = 0o700) -> bytes:
    """The bytes at `path`; if it is missing, `make()` is written there unless another process is first.

    `make` runs only when the file is missing; whichever writer links first wins,
    and every caller returns the winner's bytes.
    """
    with contextlib.suppress(FileNotFoundError):
        return _whole(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    temp = _written(path, make(), mode)
    try:
        with contextlib.suppress(FileExistsError):  # another process was first: theirs stands
            os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    sync_folder(path.parent)  # the name survives a power loss too
    return _whole(path)


def _whole(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:  # only a writer that did not publish whole files (or a disk that lost it) leaves one empty
        raise ValueError(f"{path} is empty: remove it, and a new one is made on the next start")
    return data


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace `path` with `data`: a reader sees the old file or the new one, never half of either, and the
    new one is on disk when this returns."""
    temp = _written(path, data, mode)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    sync_folder(path.parent)


def _written(path: Path, data: bytes, mode: int) -> str:
    """A private temporary file next to `path` holding `data`, on disk, with `mode`: ready to link or rename."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return temp


def sync_folder(folder: Path) -> None:
    """Make the names just linked, renamed or replaced in `folder` durable (fsync of the directory)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusively(folder: Path) -> Iterator[None]:
    """Hold `<folder>/.lock` (an advisory `flock`) for a change that takes several files.

    Processes sharing the folder (replicas, an operator's command) take turns; the
    lock goes with the process, so one killed while holding it blocks nobody.
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder / ".lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
