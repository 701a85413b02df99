"""Pure broker rules: does a verified PoA fit this presentation, and which connector serves it."""

from broker.domain.connectors import Connector, ConnectorRegistry, RegistryError, Route, RouteRefused
from broker.domain.decision import (
    ALLOWED,
    Outcome,
    PolicyDecision,
    Presentation,
    Verdict,
    check_bindings,
    policy_verdict,
)

__all__ = [
    "ALLOWED",
    "Connector",
    "ConnectorRegistry",
    "Outcome",
    "PolicyDecision",
    "Presentation",
    "RegistryError",
    "Route",
    "RouteRefused",
    "Verdict",
    "check_bindings",
    "policy_verdict",
]
