"""The built-in HTTP connector: on allow, POST the action to the connector's endpoint.

Only hosts on the connector's egress allowlist are ever called (checked again
here, not only at configuration time); redirects are not followed, so an
endpoint cannot bounce the call elsewhere. The PoA's `jti` travels as the
`Idempotency-Key`, so a target that honours it runs the action at most once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp
from pydantic import JsonValue

from broker.domain import Connector, ConnectorRegistry, RegistryError

__all__ = ["ConnectorCall", "ConnectorError", "HttpConnector", "Invoker", "load_registry"]


class ConnectorError(RuntimeError):
    """The connector could not run the action (unreachable, refused egress, bad answer)."""


@dataclass(frozen=True)
class ConnectorCall:
    action: str
    resource: str
    params: dict[str, JsonValue]
    request_id: str
    jti: str | None
    agent_id: str


class Invoker(Protocol):
    async def invoke(self, connector: Connector, call: ConnectorCall) -> tuple[int, dict[str, JsonValue]]: ...


def load_registry(path: Path) -> ConnectorRegistry:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the connector registry {path}: {exc}") from exc
    return ConnectorRegistry.from_json(doc)


class HttpConnector:
    MAX_RESPONSE_BYTES = 1 << 20

    def __init__(self, *, timeout_s: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def invoke(self, connector: Connector, call: ConnectorCall) -> tuple[int, dict[str, JsonValue]]:
        endpoint = connector.endpoint
        if endpoint is None:
            raise ConnectorError(f"connector {connector.name} has no endpoint")
        if not connector.may_reach(endpoint):
            raise ConnectorError(f"egress to {endpoint} is not on {connector.name}'s allowlist")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = {
            "action": call.action,
            "resource": call.resource,
            "params": call.params,
            "request_id": call.request_id,
            "agent_id": call.agent_id,
        }
        headers = {"Idempotency-Key": call.jti} if call.jti else {}
        url = f"{endpoint.rstrip('/')}/{call.action}"
        try:
            async with self._session.post(url, json=body, headers=headers, allow_redirects=False) as response:
                raw = await response.content.read(self.MAX_RESPONSE_BYTES)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectorError(f"{connector.name} unreachable: {exc}") from exc
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"text": raw[:2000].decode("utf-8", "replace")}
        return status, parsed if isinstance(parsed, dict) else {"value": parsed}
