"""Broker settings (`ATB_` environment variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import model_validator

from atb_runtime.settings import CommonSettings

__all__ = ["DEFAULT_CONNECTORS", "BrokerSettings"]

DEFAULT_CONNECTORS = Path(__file__).resolve().parents[3] / "config" / "connectors.json"


class BrokerSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/broker"
    group_id: str = "atb-broker"
    poa_issuer: str = "spiffe://atb.local/svc/issuer"
    leeway_seconds: int = 10
    broker_host: str = "127.0.0.1"
    broker_port: int = 18445
    """HTTPS (mTLS) port of `POST /v1/authorize`; 0 disables the HTTP way in."""
    svid_cert_path: Path | None = None
    svid_key_path: Path | None = None
    trust_bundle_path: Path | None = None
    spent_db_url: str = ""
    """Where spent PoA ids live: shared by every replica. Default a SQLite file in the state folder."""
    spent_migrations_dir: Path | None = None
    """The spent store's alembic migrations, run on start; default the checkout's `migrations/spent/`."""
    spent_sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    """SQLite spent store: FULL fsyncs every spend before the agent hears "allow"; NORMAL is faster but
    a power loss can forget the last spends, and a spent PoA would then be accepted again."""
    approver_directory_path: Path | None = None
    """The approver directory the issuer uses (default config/approvers.json): the policy compares principals."""
    connectors_path: Path | None = None
    """The connector registry (JSON); default config/connectors.json."""
    agent_registry_path: Path | None = None
    """JSON agent registry (agent SPIFFE ID → tenants it acts for; docs/tenants.md); default config/agents.json."""
    jwks_url: str = ""
    """The issuer's JWKS, fetched (rate-limited) when a token names a `kid` not yet seen on `atb.keys`."""
    jwks_refresh_seconds: float = 5.0
    allow_unmandated_low_risk: bool = False
    """docs/architecture.md §2.5: allowlisted low-risk actions pass without a PoA. Off: every action needs one.
    Also read from the operating model's own name, `ALLOW_UNMANDATED_LOW_RISK` (which wins when set)."""
    max_batch: int = 256
    policy_cache_seconds: float = 1.0
    """How long an OPA answer for an identical policy input is reused (0: ask every time)."""
    consume_actions: bool = True
    """Decide ActionRequested from `atb.broker.actions`; False runs an HTTP-only replica."""

    @model_validator(mode="after")
    def _seed_flag(self) -> BrokerSettings:
        raw = os.environ.get("ALLOW_UNMANDATED_LOW_RISK")
        if raw is not None:
            value = raw.strip().lower()
            if value not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"ALLOW_UNMANDATED_LOW_RISK must be true or false, not {raw!r}")
            object.__setattr__(self, "allow_unmandated_low_risk", value in ("true", "1", "yes"))
        return self

    def spent_url(self) -> str:
        return self.spent_db_url or f"sqlite:///{self.state_dir / 'broker' / 'spent.db'}"

    def registry_path(self) -> Path:
        return self.connectors_path or DEFAULT_CONNECTORS
