"""Wiring only: `faststream run audit_sink.main:app`."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from atb_runtime import Publisher
from atb_runtime.app import Channel, service_app
from atb_runtime.runner import ServiceRunner
from atb_runtime.tracking import TrackingConfig, TrackingConsumer
from audit_sink.adapters.db import AuditStore, make_engine, migrate
from audit_sink.adapters.signing import load_or_create_signer
from audit_sink.archive.schedule import ArchiveSchedule
from audit_sink.service import AuditIngest
from audit_sink.settings import AuditSinkSettings
from contracts import EVENT_TYPES, all_topics_pattern

settings = AuditSinkSettings()


async def build() -> ServiceRunner:
    url = settings.db_url()
    migrate(url, settings.audit_migrations_dir)
    ns = settings.topic_namespace.rstrip(".") or "default"
    group = f"{settings.group_id}.{ns}"
    publisher = Publisher(settings.kafka_bootstrap_servers, f"atb-audit-sink-{settings.instance}")
    signer = load_or_create_signer(settings.key_path(), settings.checkpoint_origin)
    engine = make_engine(url)
    ingest = AuditIngest(settings, AuditStore(engine, group), signer, publisher)
    # Sealing to the immutable archive every interval, when ATB_AUDIT_ARCHIVE_URL is set (docs/archive.md).
    archive = ArchiveSchedule.from_settings(engine, signer.verifier)
    loop = TrackingConsumer(
        TrackingConfig(
            bootstrap=settings.kafka_bootstrap_servers,
            group_id=group,
            member_id=f"atb-audit-sink-{ns}-{settings.instance}",
            client_id=f"atb-audit-sink-{settings.instance}",
            pattern=all_topics_pattern(settings.topic_namespace),
            max_batch=settings.max_batch,
            metadata_max_age_ms=settings.metadata_max_age_ms,
            fetch_min_bytes=settings.fetch_min_bytes,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        ),
        ingest,
        # A row of the batch is stored already (unique topic, partition, offset): go on from the stored positions.
        already_recorded=(IntegrityError,),
        progress=ingest.progress,
    )
    components = (publisher, ingest) if archive is None else (publisher, ingest, archive)
    return ServiceRunner(settings, name="audit-sink", loop=loop, components=components)


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
