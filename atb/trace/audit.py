"""The audit store as a source for `atb trace`: a request's rows, each with the checkpoint that covers it."""

from __future__ import annotations

from sqlalchemy import and_, func, select

from atb.trace.timeline import TraceRecord
from audit_sink.adapters.db import audit_checkpoints, audit_events, audit_leaves, make_engine
from contracts import EventDecodeError, decode_envelope, payload_of

__all__ = ["audit_records"]


def audit_records(db_url: str, request_id: str) -> list[TraceRecord]:
    """Rows of `request_id`, read-only; `checkpoint` names the first signed checkpoint covering each."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    audit_events.c.topic,
                    audit_events.c.partition,
                    audit_events.c.offset,
                    audit_events.c.raw,
                    # A row carries its leaf index (revision 0004); older rows have it in audit_leaves.
                    func.coalesce(audit_events.c.leaf_idx, audit_leaves.c.idx),
                )
                .select_from(
                    audit_events.outerjoin(
                        audit_leaves,
                        and_(
                            audit_leaves.c.topic == audit_events.c.topic,
                            audit_leaves.c.partition == audit_events.c.partition,
                            audit_leaves.c.offset == audit_events.c.offset,
                        ),
                    )
                )
                .where(audit_events.c.request_id == request_id)
                .order_by(audit_events.c.seq)
            ).all()
            checkpoints = conn.execute(
                select(audit_checkpoints.c.id, audit_checkpoints.c.tree_size).order_by(audit_checkpoints.c.tree_size)
            ).all()
    finally:
        engine.dispose()
    out: list[TraceRecord] = []
    for topic, partition, offset, raw, idx in rows:
        covering = next(
            (f"#{cid} (tree size {size})" for cid, size in checkpoints if idx is not None and size > idx), None
        )
        where = (
            f"leaf {idx}, checkpoint {covering}"
            if covering
            else (f"leaf {idx}, not yet checkpointed" if idx is not None else None)
        )
        try:
            envelope = decode_envelope(bytes(raw))
            out.append(TraceRecord(topic, partition, offset, envelope, payload_of(envelope), "audit store", where))
        except EventDecodeError:
            out.append(TraceRecord(topic, partition, offset, None, None, "audit store", where))
    return out
