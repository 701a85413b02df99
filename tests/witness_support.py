"""A real `atb witness serve` process for tests, and a by-hand tlog-witness client (stdlib HTTP)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from audit_sink.domain.cosignature import AddCheckpoint, CosignerKey

_LISTENING = re.compile(r"listening on (http://\S+) .*; vkey (\S+)")


@dataclass(frozen=True)
class Witness:
    url: str
    key: CosignerKey
    state_dir: Path
    process: subprocess.Popen[str]


@contextmanager
def witness_process(state_dir: Path, *log_keys: tuple[str, str], name: str = "") -> Iterator[Witness]:
    """`python -m atb.witness serve` on a free port, cosigning the logs (origin, vkey or file); stopped after."""
    args = [sys.executable, "-m", "atb.witness", "serve", "--state-dir", str(state_dir), "--port", "0"]
    args += [a for origin, key in log_keys for a in ("--log-key", f"{origin}={key}")]
    if name:
        args += ["--name", name]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = []
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line and process.poll() is not None:
                break
            seen.append(line)
            if match := _LISTENING.search(line):
                yield Witness(match[1], CosignerKey.parse(match[2]), state_dir, process)
                return
        raise AssertionError(f"the witness did not start: {''.join(seen)[-2000:]}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def post(url: str, request: AddCheckpoint) -> tuple[int, str, str]:
    """POST /add-checkpoint: (status, content type, body)."""
    req = urllib.request.Request(  # noqa: S310 - our own loopback witness
        url + "/add-checkpoint", data=request.render().encode(), method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 - our own loopback witness
            return response.status, response.headers.get_content_type(), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read().decode()
