"""Pure broker rules: does a verified PoA fit this presentation, and which connector serves it."""

from broker.domain.connectors import Connector, ConnectorRegistry, RegistryError, Route, RouteRefused
from broker.domain.decision import Outcome, Presentation, Verdict, check_bindings

__all__ = [
    "Connector",
    "ConnectorRegistry",
    "Outcome",
    "Presentation",
    "RegistryError",
    "Route",
    "RouteRefused",
    "Verdict",
    "check_bindings",
]
