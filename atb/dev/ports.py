"""Is a loopback port free? Checked before starting a component, so a foreign listener fails fast."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from atb.dev.config import HOST
from atb.dev.errors import PortInUseError

__all__ = ["port_free", "require_free_ports"]


def port_free(port: int, host: str = HOST) -> bool:
    """True when `host:port` can be bound (SO_REUSEADDR, like the JVM: TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_ports(component: str, ports: Iterable[tuple[int, str]]) -> None:
    """Raise PortInUseError for the first `(port, env_var)` that is taken."""
    for port, env_var in ports:
        if not port_free(port):
            raise PortInUseError(
                f"port {port} on {HOST} (for {component}) is already in use by a process atb dev did not start:"
                f" stop it or set {env_var} to a free port"
            )
