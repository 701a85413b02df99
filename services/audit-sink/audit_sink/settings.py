"""Audit sink settings (`ATB_` environment variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from atb_runtime.settings import CommonSettings

__all__ = ["AuditSinkSettings"]


class AuditSinkSettings(CommonSettings):
    service_id: str = "spiffe://atb.local/svc/audit-sink"
    group_id: str = "atb-audit-sink"
    audit_db_url: str = ""
    """SQLAlchemy URL of the audit store; default a SQLite file in the state folder."""
    audit_migrations_dir: Path | None = None
    """Alembic migrations; default the checkout's `migrations/`."""
    retention_years: int = 7
    retention_days_by_event_type: dict[str, int] = Field(default_factory=dict)
    max_batch: int = 1000
    metadata_max_age_ms: int = 5000
    """How soon a newly created `atb.*` topic is picked up by the pattern subscription."""

    def db_url(self) -> str:
        if self.audit_db_url:
            return self.audit_db_url
        path = self.state_dir / "audit" / "audit.db"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
