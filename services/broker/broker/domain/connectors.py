"""The connector registry (docs/architecture.md §2.4): which connector serves an action, and where it may go.

A connector has a name, the actions it serves (exact names or `prefix.*`
patterns), an egress allowlist of hosts, and optionally an HTTP endpoint the
broker calls on allow. An action no connector serves is denied; so is a
resource URL, or an endpoint, outside the connector's egress allowlist.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from contracts.reasons import Reason, ReasonCode

__all__ = ["Connector", "ConnectorRegistry", "RegistryError", "Route", "RouteRefused"]


class RegistryError(ValueError):
    """The registry configuration itself is wrong (refused at start-up)."""


def _host(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower()


@dataclass(frozen=True)
class Connector:
    name: str
    actions: tuple[str, ...]
    egress: frozenset[str]
    endpoint: str | None = None

    def serves(self, action: str) -> bool:
        return any(
            action == pattern or (pattern.endswith(".*") and action.startswith(pattern[:-1]))
            for pattern in self.actions
        )

    def may_reach(self, url: str) -> bool:
        host = _host(url)
        return host is not None and host in self.egress


@dataclass(frozen=True)
class Route:
    connector: Connector


@dataclass(frozen=True)
class RouteRefused:
    reason: Reason


@dataclass(frozen=True)
class ConnectorRegistry:
    connectors: tuple[Connector, ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.connectors]
        if len(names) != len(set(names)):
            raise RegistryError("connector names must be unique")
        for c in self.connectors:
            if not c.actions:
                raise RegistryError(f"connector {c.name!r} serves no action")
            if any("*" in p and not p.endswith(".*") for p in c.actions):
                raise RegistryError(f"connector {c.name!r}: only trailing '.*' patterns are allowed")
            if c.endpoint is not None and not c.may_reach(c.endpoint):
                raise RegistryError(f"connector {c.name!r}: endpoint {c.endpoint} is outside its egress allowlist")

    @staticmethod
    def from_json(doc: object) -> ConnectorRegistry:
        """Parse `{"connectors": [{"name", "actions", "egress", "endpoint"?}, ...]}`."""
        if not isinstance(doc, dict) or not isinstance(doc.get("connectors"), list):
            raise RegistryError('expected {"connectors": [...]}')
        out: list[Connector] = []
        for i, entry in enumerate(doc["connectors"]):
            if not isinstance(entry, dict):
                raise RegistryError(f"connectors[{i}] must be an object")
            unknown = set(entry) - {"name", "actions", "egress", "endpoint", "description"}
            if unknown:
                raise RegistryError(f"connectors[{i}]: unknown fields {sorted(unknown)}")
            name, actions, egress, endpoint = (entry.get(k) for k in ("name", "actions", "egress", "endpoint"))
            if not isinstance(name, str) or not name:
                raise RegistryError(f"connectors[{i}].name must be a non-empty string")
            if not isinstance(actions, list) or not all(isinstance(a, str) and a for a in actions):
                raise RegistryError(f"connectors[{i}].actions must be a list of action names")
            if not isinstance(egress, list) or not all(isinstance(h, str) and h for h in egress):
                raise RegistryError(f"connectors[{i}].egress must be a list of host names")
            if endpoint is not None and not isinstance(endpoint, str):
                raise RegistryError(f"connectors[{i}].endpoint must be a URL")
            out.append(Connector(name, tuple(actions), frozenset(h.lower() for h in egress), endpoint))
        return ConnectorRegistry(tuple(out))

    def route(self, action: str, resource: str, requested: str | None = None) -> Route | RouteRefused:
        serving = [c for c in self.connectors if c.serves(action)]
        if not serving:
            return RouteRefused(Reason(ReasonCode.CONNECTOR_UNKNOWN, f"no connector serves {action}"))
        connector = serving[0]
        if requested is not None and requested != connector.name:
            return RouteRefused(
                Reason(ReasonCode.CONNECTOR_MISMATCH, f"{action} is served by {connector.name}, not {requested}")
            )
        if "://" in resource and not connector.may_reach(resource):
            return RouteRefused(
                Reason(ReasonCode.EGRESS_DENIED, f"{connector.name} may not reach the host of {resource[:200]}")
            )
        return Route(connector)
