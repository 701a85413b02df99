"""Broker settings (`ATB_` environment variables)."""

from __future__ import annotations

from atb_runtime.settings import CommonSettings

__all__ = ["BrokerSettings"]


class BrokerSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/broker"
    group_id: str = "atb-broker"
    poa_issuer: str = "spiffe://atb.local/svc/issuer"
    leeway_seconds: int = 10
