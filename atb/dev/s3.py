"""A local S3-compatible server with Object Lock: versitygw over a folder.

`build_versitygw` (atb/dev/toolchain.py) puts the pinned versitygw into
`<cache>/bin`; `LocalS3` runs it as a local process on a free loopback port, its
posix backend on a data folder of the caller's (a temporary one in tests), with
one root access key. Without `--versioning-dir` the posix backend refuses, with
AccessDenied, any overwrite or delete of an object whose Object Lock retention
has not passed, instead of stacking a new version on it. With `versioned=True`
it keeps versions (in `<data_dir>-versions`), as a versioned AWS bucket does: a
write to a locked key adds a newer version, a delete adds a delete marker, and
the locked version stays.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from atb.dev.config import HOST
from atb.dev.errors import ProcessStartError

__all__ = ["LocalS3"]

_READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class LocalS3:
    """`with LocalS3(binary, data_dir) as s3:` a running server at `s3.endpoint`."""

    binary: Path
    data_dir: Path
    access_key: str = "atb-archive"
    secret_key: str = field(default_factory=lambda: secrets.token_hex(16))
    region: str = "us-east-1"
    port: int = 0
    log_path: Path | None = None
    versioned: bool = False
    """Run the posix backend with a versioning folder (buckets with Object Lock then keep versions)."""
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, attempts: int = 3) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        backend = ["posix"]
        if self.versioned:
            versions = self.data_dir.with_name(self.data_dir.name + "-versions")
            versions.mkdir(parents=True, exist_ok=True)
            backend += ["--versioning-dir", str(versions)]
        log = self.log_path or self.data_dir.with_name(self.data_dir.name + ".log")
        for _ in range(attempts):  # a free port can be taken between the probe and the bind
            self.port = _free_port()
            env = {**os.environ, "ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}
            argv = [str(self.binary), "--port", f"{HOST}:{self.port}", "--region", self.region, "--quiet"]
            with log.open("ab") as out:
                self._proc = subprocess.Popen(
                    [*argv, *backend, str(self.data_dir)], stdout=out, stderr=subprocess.STDOUT, env=env
                )
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _answers(self.port):
                    return
                time.sleep(0.05)  # polling the port until the server listens
            self.stop()
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise ProcessStartError(f"versitygw did not start on {HOST}:{self.port}: {' | '.join(tail)}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> LocalS3:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
