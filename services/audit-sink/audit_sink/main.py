"""Wiring only: `faststream run audit_sink.main:app`."""

from __future__ import annotations

from atb_runtime.app import Channel, service_app
from audit_sink.adapters.db import AuditStore, make_engine, migrate
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.service import AuditIngest
from audit_sink.settings import AuditSinkSettings
from contracts import EVENT_TYPES

settings = AuditSinkSettings()


async def build() -> AuditIngest:
    url = settings.db_url()
    migrate(url, settings.audit_migrations_dir)
    group = f"{settings.group_id}.{settings.topic_namespace.rstrip('.') or 'default'}"
    signer = load_or_create_signer(settings.key_path(), settings.checkpoint_origin)
    return AuditIngest(settings, AuditStore(make_engine(url), group), signer)


app = service_app(
    title="ATB audit sink",
    description=(
        "Stores every record of every atb.* topic exactly once in the append-only audit store, and publishes "
        "signed Merkle checkpoints (AuditEvent audit_checkpoint_signed) on atb.audit."
    ),
    group=settings.group_id,
    # It also publishes AuditEvent `audit_checkpoint_signed` on atb.audit, a channel it already
    # consumes: FastStream's AsyncAPI keeps one entry per channel name, so it is described above.
    channels=tuple(Channel("consumes", model) for model in EVENT_TYPES.values()),
    build=build,
    bootstrap=settings.kafka_bootstrap_servers,
)
