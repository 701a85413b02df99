"""A small supervisor for detached, pidfile-tracked processes (Kafka, OPA, the ATB services).

A `ManagedProcess` is started in its own session (so Ctrl-C in the launching
terminal and the launcher's exit do not take it down), writes stdout and stderr
to one log file, and is remembered by a pidfile. The pidfile holds the pid, the
kernel's start time of that pid and its command line, so a pid that was reused by
an unrelated process after a crash is never signalled: the process is "ours" only
while `/proc/<pid>/stat` and `/proc/<pid>/cmdline` still match what was recorded.
A pidfile whose process is gone is removed without a word.

Readiness: `start` returns once the ready check answers True. While waiting, the
process is watched: if it exits, `start` raises at once (within a poll interval,
even while a check is still in flight) with its exit status and the tail of its
log. The check itself decides what "ready" means; `ServiceStack` requires that the
pid it started answers `/healthz` (atb/dev/stack.py), so another process answering on
the port is never taken for this one. `pass_fds` hands listening sockets down
(atb/dev/ports.py).

What it does not do: restart crashed processes, rotate logs while running, or
work on systems without `/proc` (Linux only, like the rest of the dev stack).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from atb.dev.errors import ProcessStartError

__all__ = ["ManagedProcess", "ReadyCheck"]

ReadyCheck = Callable[[], Awaitable[bool]]
"""Answers True once the process serves; may raise while it does not (treated as not ready, and the
message is reported if the wait times out)."""

# Handles of the children this interpreter started: polling them reaps zombies,
# and holding them keeps Popen.__del__ from warning about a still-running child.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_EXIT_CODES: dict[int, int] = {}
"""Exit statuses of reaped children, by pid (the last one per pid)."""

_POLL_S = 0.05


@dataclass(frozen=True)
class _Record:
    """What the pidfile says about the process we started."""

    pid: int
    start_ticks: int
    cmdline: tuple[str, ...]
    argv: tuple[str, ...]


def _start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) pid in clock ticks since boot, None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 of proc(5); fields[0] is field 3


def _cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0")[:-1])


def _reap(pid: int, wait_s: float = 0.0) -> None:
    """Record our child's exit status once it has exited; wait up to `wait_s` for it.

    /proc shows a thread-group leader as a zombie as soon as its own thread exits, while waitpid answers
    only once every thread is gone: a caller that saw "Z" waits a moment for the status.
    """
    child = _CHILDREN.get(pid)
    if child is None:
        return
    try:
        code = child.wait(wait_s) if wait_s > 0 else child.poll()
    except subprocess.TimeoutExpired:
        return
    if code is not None:
        del _CHILDREN[pid]
        _EXIT_CODES[pid] = code


def _last_lines(path: Path, count: int = 1, limit: int = 300) -> list[str]:
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return []
    return [line[:limit] for line in lines[-count:]]


class ManagedProcess:
    """One detached process known by its pidfile. See the module docstring for the identity rule."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        log_path: Path,
        pid_path: Path,
        ready: ReadyCheck | None = None,
        *,
        cwd: Path | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        if not argv:
            raise ValueError("argv must name a program")
        self.name = name
        self.argv: tuple[str, ...] = tuple(argv)
        self.env = None if env is None else dict(env)
        self.log_path = log_path
        self.pid_path = pid_path
        self.cwd = cwd
        self.pass_fds: tuple[int, ...] = tuple(pass_fds)
        """Descriptors the process inherits (listening sockets); they keep their numbers in the child."""
        self._ready = ready
        self._spawned: int | None = None

    # -- identity ---------------------------------------------------------------------------

    def _read_record(self) -> _Record | None:
        try:
            data = json.loads(self.pid_path.read_text())
            return _Record(
                pid=int(data["pid"]),
                start_ticks=int(data["start_ticks"]),
                cmdline=tuple(data["cmdline"]),
                argv=tuple(data["argv"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _live_record(self) -> _Record | None:
        """The pidfile's record while that very process still runs; a stale pidfile is removed."""
        record = self._read_record()
        if record is None:
            if self.pid_path.exists():
                self.pid_path.unlink(missing_ok=True)  # unreadable: left by a crash mid-write
            return None
        _reap(record.pid)
        # An empty recorded command line means /proc had not shown the new program's argv within the
        # wait at spawn (a loaded machine): the start time alone then names the process.
        if _start_ticks(record.pid) == record.start_ticks and (
            not record.cmdline or _cmdline(record.pid) == record.cmdline
        ):
            return record
        self.pid_path.unlink(missing_ok=True)
        return None

    @property
    def pid(self) -> int | None:
        """The pid of our running process, or None."""
        record = self._live_record()
        return None if record is None else record.pid

    def is_running(self) -> bool:
        return self._live_record() is not None

    @property
    def returncode(self) -> int | None:
        """Exit status of the last process this object started, once it has exited (None otherwise)."""
        if self._spawned is None:
            return None
        _reap(self._spawned)
        return _EXIT_CODES.get(self._spawned)

    @property
    def running_argv(self) -> tuple[str, ...] | None:
        """The argv our running process was started with (None when not running): differs after a config change."""
        record = self._live_record()
        return None if record is None else record.argv

    # -- start ------------------------------------------------------------------------------

    async def start(self, ready_timeout: float = 60.0) -> bool:
        """Start unless ours already runs with the same argv, then wait until ready.

        Returns True when a new process was started, False when it was already running.
        A running process with a different argv is stopped and started anew.
        Raises ProcessStartError (and kills the new process) when it exits or is not ready in time.
        """
        record = self._live_record()
        if record is not None and record.argv == self.argv:
            await self.wait_ready(ready_timeout)
            return False
        if record is not None:
            await self.stop()
        self._spawn()
        try:
            await self.wait_ready(ready_timeout)
        except BaseException:
            self.kill()
            raise
        return True

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pid_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():  # keep the previous run's log for a post-mortem
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        with self.log_path.open("ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(self.argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=self.pass_fds,
            )
        _CHILDREN[child.pid] = child
        _EXIT_CODES.pop(child.pid, None)
        self._spawned = child.pid
        record = _Record(child.pid, _start_ticks(child.pid) or -1, self._settled_cmdline(child.pid), self.argv)
        tmp = self.pid_path.with_name(self.pid_path.name + ".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.pid_path)

    @staticmethod
    def _settled_cmdline(pid: int) -> tuple[str, ...]:
        """The new program's command line. Popen returns once exec has closed the CLOEXEC pipe, which is
        before the kernel has set up the new argv: for a moment /proc shows an empty one."""
        deadline = time.monotonic() + 10.0
        while not (cmdline := _cmdline(pid)) and time.monotonic() < deadline and _start_ticks(pid) is not None:
            time.sleep(0.001)
        return cmdline or ()

    async def wait_ready(self, ready_timeout: float) -> None:
        """Poll the ready check until it answers True; raise ProcessStartError on exit or timeout.

        The process is watched while a check is in flight: an exit is reported at once, not at the timeout.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ready_timeout
        why = ""
        while True:
            pid = self._alive()
            if self._ready is None:
                return
            probe = asyncio.ensure_future(self._ready())
            try:
                while not (await asyncio.wait({probe}, timeout=_POLL_S))[0]:
                    self._alive()
                    if loop.time() >= deadline:
                        break
            finally:
                if not probe.done():
                    probe.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await probe
            if probe.done() and not probe.cancelled():
                if (error := probe.exception()) is None:
                    if probe.result():
                        return
                else:  # not ready yet: connection refused, timeout, another process answering, ...
                    why = f"{type(error).__name__}: {error}"
            if loop.time() >= deadline:
                raise ProcessStartError(
                    f"{self.name} (pid {pid}) not ready after {ready_timeout:.0f}s{f' ({why})' if why else ''};"
                    f" see {self.log_path}"
                )
            pause = loop.time() + 0.2
            while loop.time() < pause:
                await asyncio.sleep(_POLL_S)
                self._alive()

    def _alive(self) -> int:
        """Our running process's pid; ProcessStartError (exit status, log tail) when it is gone."""
        pid = self.pid
        if pid is not None:
            return pid
        if self._spawned is not None:
            _reap(self._spawned, wait_s=5.0)  # gone from /proc's view: its status follows within moments
        code = self.returncode
        status = "" if code is None else (f" (status {code})" if code >= 0 else f" (signal {-code})")
        tail = " | ".join(_last_lines(self.log_path, 5))
        raise ProcessStartError(
            f"{self.name} exited while starting{status}; see {self.log_path}" + (f"; log tail: {tail}" if tail else "")
        )

    # -- stop -------------------------------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> bool:
        """Send `sig` to our process (and its process group); False when it was not running."""
        record = self._live_record()
        if record is None:
            return False
        _signal(record.pid, sig)
        return True

    # `timeout` is the grace period before SIGKILL, not a cancellation scope.
    async def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout` seconds; waits for the exit. False when nothing ran."""
        record = self._live_record()
        if record is None:
            return False
        _signal(record.pid, signal.SIGTERM)
        if not await _wait_exit(record, timeout):
            _signal(record.pid, signal.SIGKILL)
            await _wait_exit(record, 10.0)
        self.pid_path.unlink(missing_ok=True)
        return True


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:  # started with start_new_session: it leads its own group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


async def _wait_exit(record: _Record, within: float) -> bool:
    """Wait until that very process has exited. Only pid and start time are compared here: while a
    process exits its command line already reads empty, so the full identity check would stop early."""
    deadline = time.monotonic() + within
    while True:
        _reap(record.pid)
        if _start_ticks(record.pid) != record.start_ticks:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_POLL_S)
