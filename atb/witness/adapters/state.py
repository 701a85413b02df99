"""The witness's state: per log origin, the latest checkpoint it cosigned (one JSON file, atomic writes).

A write goes to a temporary file in the same folder, is fsynced, renamed over
`state.json`, and the folder is fsynced: after a crash the file is the old
state or the new one, never a mix. The caller serialises check-and-record
(C2SP tlog-witness: both must be atomic, or two requests can roll the record
back). An exclusive lock on `state.lock` keeps a second witness process off the
same folder.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from atb.witness.domain import Recorded

__all__ = ["Entry", "StateBusyError", "WitnessState"]


class StateBusyError(RuntimeError):
    """Another witness process holds this state folder."""


@dataclass(frozen=True)
class Entry:
    size: int
    root: bytes
    note: str
    """The checkpoint with the log's signature and this witness's cosignature."""
    cosigned_at: int


class WitnessState:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._folder = folder
        self._path = folder / "state.json"
        self._lock = os.open(folder / "state.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock)
            raise StateBusyError(f"another witness uses {folder}") from None
        self._entries = self._load()

    def _load(self) -> dict[str, Entry]:
        if not self._path.exists():
            return {}
        data = json.loads(self._path.read_text())
        return {
            origin: Entry(int(e["size"]), base64.b64decode(e["root"]), str(e["note"]), int(e["cosigned_at"]))
            for origin, e in data["logs"].items()
        }

    def recorded(self, origin: str) -> Recorded | None:
        entry = self._entries.get(origin)
        return Recorded(entry.size, entry.root) if entry is not None else None

    def entry(self, origin: str) -> Entry | None:
        return self._entries.get(origin)

    def record(self, origin: str, entry: Entry) -> None:
        """Persist `entry` as the latest for `origin` (durable when this returns)."""
        entries = {**self._entries, origin: entry}
        document = {
            "logs": {
                o: {
                    "size": e.size,
                    "root": base64.b64encode(e.root).decode(),
                    "note": e.note,
                    "cosigned_at": e.cosigned_at,
                }
                for o, e in sorted(entries.items())
            }
        }
        tmp = self._folder / f".state.json.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self._path)
        folder_fd = os.open(self._folder, os.O_RDONLY)
        try:
            os.fsync(folder_fd)
        finally:
            os.close(folder_fd)
        self._entries = entries

    def close(self) -> None:
        os.close(self._lock)
