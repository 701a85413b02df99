"""Loopback ports: is one free, and the allocator that hands a stack's ports to its services.

`port_free` / `require_free_ports` are checked before starting a component with
a fixed port (Kafka, OPA), so a foreign listener fails fast.

`PortAllocator` is how `ServiceStack` (atb/dev/stack.py) gives each service its ports
without a race. Picking a port by binding port 0 and releasing it leaves a window
in which any other process may take it; the service then dies with EADDRINUSE
while whoever took the port answers in its place. Here the allocator binds each
port itself and *keeps* the socket for the stack's life: the service inherits the
descriptor (`pass_fds`, listed in `ATB_LISTEN_FDS`) and serves on that very socket
(`atb_runtime.ops.start_site`). So:

- no one else can bind the port at any time: the socket is bound without
  SO_REUSEADDR, and after the first service's `listen()` it is a listening socket
  that the stack still holds;
- ports are known before `start()` (`stack.gateway_port`, `stack.ops_ports`, the
  broker's JWKS URL to the issuer's ops port) and stay the same across a
  `kill`/`restart` of a service: the new process inherits the same socket;
- while a service is down between a kill and its restart, connections to its
  port wait in the socket's backlog (the next process accepts them) instead of
  being refused.

Fixed ports (docker-compose, `StackConfig.gateway_port`) are not allocated: the
service binds them itself and exits at once if it cannot.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from atb.dev.config import HOST
from atb.dev.errors import PortInUseError

__all__ = ["PortAllocator", "port_free", "require_free_ports"]


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


class PortAllocator:
    """Ports bound here and held until `close()`; children inherit them (see the module docstring)."""

    def __init__(self, host: str = HOST) -> None:
        self.host = host
        self._sockets: dict[int, socket.socket] = {}
        self._closed = False

    def allocate(self) -> int:
        """A fresh port on `host`, bound by this allocator (no SO_REUSEADDR: nobody else can bind it)."""
        if self._closed:
            raise RuntimeError("this port allocator was closed")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        port: int = sock.getsockname()[1]
        self._sockets[port] = sock
        return port

    def fd(self, port: int) -> int | None:
        """The descriptor that holds `port`, None when the port is not one of ours (a fixed port)."""
        sock = self._sockets.get(port)
        return None if sock is None else sock.fileno()

    def held(self, ports: Iterable[int]) -> tuple[int, ...]:
        """The descriptors of those of `ports` this allocator holds, for `pass_fds`."""
        return tuple(fd for port in ports if (fd := self.fd(port)) is not None)

    def release(self, port: int) -> None:
        """Stop holding `port` so that a program that binds its own address (OPA, an `atb` command) can.

        Between this and the program's bind another process could take the port; the program then
        fails to start and says so.
        """
        sock = self._sockets.pop(port, None)
        if sock is not None:
            sock.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release every port (running children keep their inherited copies until they exit)."""
        self._closed = True
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
