"""The audit sink as a real process submits its checkpoints to a real `atb witness` process.

Events go through Kafka into the sink (SQLite and PostgreSQL writer role); the
sink signs checkpoints, submits each to the witness with a consistency proof
(ATB_AUDIT_WITNESSES), stores the cosignatures and announces them on
`atb.audit`. Afterwards the store verifies against the witness key with the
checkpoints read back from the topic, and a rollback of the store is named from
the topic alone.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import text

from atb.cli.audit_tail import checkpoint_notes
from atb.dev.stack import ServiceStack, StackConfig
from audit_sink.adapters.db import AuditStore, make_engine
from audit_sink.adapters.signing import load_or_create_signer, verify_cosignature
from audit_sink.domain.checkpoint import SignedNote
from audit_sink.domain.cosignature import CosignerKey
from audit_sink.evidence import OutsideCheckpoints, verify_store
from tests.audit_db import AuditDb
from tests.audit_support import ORIGIN, bypassing_triggers
from tests.e2e.test_audit_sink import _publish
from tests.waits import until
from tests.witness_support import witness_process


async def test_the_sink_submits_and_stores_cosignatures(
    kafka_bootstrap: str, namespace: str, audit_db: AuditDb, tmp_path: Path
) -> None:
    key_path = tmp_path / "checkpoint.key"
    log_key = load_or_create_signer(key_path, ORIGIN).verifier
    with witness_process(tmp_path / "witness", (ORIGIN, str(log_key))) as witness:
        env = {
            "ATB_CHECKPOINT_EVERY": "100",
            "ATB_CHECKPOINT_INTERVAL_S": "1",
            "ATB_CHECKPOINT_KEY_PATH": str(key_path),
            "ATB_AUDIT_WITNESSES": json.dumps([{"url": witness.url, "vkey": str(witness.key)}]),
        }
        config = StackConfig(
            kafka_bootstrap,
            "http://127.0.0.1:1",
            tmp_path,
            namespace=namespace,
            audit_db_url=audit_db.writer,
            extra_env=env,
        )
        stack = ServiceStack(config, services=("audit-sink",))
        await stack.start(ready_timeout=90)
        store = AuditStore(make_engine(audit_db.owner), "")
        try:
            await _publish(kafka_bootstrap, namespace, 0, 250)
            # The sink stores the witness's cosignatures (fetched over HTTP, never on Kafka) in its database.
            await until(
                lambda: asyncio.to_thread(store.cosigned_sizes),
                lambda sizes: sizes.get(witness.key.key_id.hex(), 0) >= 250,
                timeout=60,
                what="a cosignature covering 250 events",
                interval=0.3,
            )
        finally:
            await stack.stop()  # a graceful stop signs and submits the last checkpoint
        notes = await asyncio.to_thread(store.cosigned_notes)
        assert len(notes) >= 2
        for note in notes:
            assert verify_cosignature(SignedNote.parse(note), witness.key).witness == witness.key.name

        # The cosigned checkpoints are on atb.audit; the store agrees with every one of them.
        announced, complete = await checkpoint_notes(kafka_bootstrap, namespace)
        assert complete
        cosigned_on_topic = [n for n in announced if len(SignedNote.parse(n).signatures) == 2]
        assert cosigned_on_topic, "no cosigned checkpoint announced on atb.audit"
        owner = make_engine(audit_db.owner)
        outside = OutsideCheckpoints([witness.key], announced=announced)
        report = await asyncio.to_thread(verify_store, owner, log_key, outside=outside)
        assert report.ok, report.problems
        newest = max(a.checkpoint.size for a in report.anchors)
        assert newest >= 250

        # Roll the store back to its first checkpoint: the topic (and the witness key) name it.
        first = min(a.checkpoint.size for a in report.anchors)
        with (
            bypassing_triggers(owner, "audit_events", "audit_checkpoints", "audit_cosignatures"),
            owner.begin() as conn,
        ):
            conn.execute(text("DELETE FROM audit_events WHERE leaf_idx >= :n"), {"n": first})
            conn.execute(text("DELETE FROM audit_checkpoints WHERE tree_size > :n"), {"n": first})
            conn.execute(text("DELETE FROM audit_cosignatures WHERE tree_size > :n"), {"n": first})
        assert (await asyncio.to_thread(verify_store, owner, log_key)).ok  # the store alone: no sign of it
        report = await asyncio.to_thread(verify_store, owner, log_key, outside=outside)
        assert any(
            p.startswith(f"rollback: store has {first} leaves; checkpoint cosigned by {witness.key.name} at ")
            and p.endswith(f"commits to {newest} > {first}")
            for p in report.problems
        ), report.problems


async def test_a_stack_with_a_witness_runs_it_and_the_sink_is_witnessed(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    """`StackConfig(witness=True)` (what `atb demo` runs): the stack's own witness cosigns its sink's checkpoints."""
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    env = {"ATB_CHECKPOINT_EVERY": "20", "ATB_CHECKPOINT_INTERVAL_S": "1"}
    config = StackConfig(
        kafka_bootstrap, "http://127.0.0.1:1", tmp_path, namespace=namespace, audit_db_url=db_url, extra_env=env
    )
    stack = ServiceStack(config, services=("audit-sink",))
    assert "witness" not in stack.processes  # opt-in
    await stack.stop()
    stack = ServiceStack(StackConfig(**{**config.__dict__, "witness": True}), services=("audit-sink",))
    key = CosignerKey.parse(stack.witness_vkey)
    await stack.start(ready_timeout=90)
    store = AuditStore(make_engine(db_url), "")
    try:
        await _publish(kafka_bootstrap, namespace, 0, 60)
        # The sink stores the witness's cosignatures (fetched over HTTP, never on Kafka) in its database.
        await until(
            lambda: asyncio.to_thread(store.cosigned_sizes),
            lambda sizes: sizes.get(key.key_id.hex(), 0) >= 60,
            timeout=60,
            what="the stack's witness cosigning a checkpoint covering 60 events",
            interval=0.3,
        )
    finally:
        await stack.stop()
    log_key = load_or_create_signer(tmp_path / "audit" / "checkpoint.key", ORIGIN).verifier
    report = await asyncio.to_thread(
        verify_store, make_engine(db_url), log_key, outside=OutsideCheckpoints([key], threshold=1)
    )
    assert report.ok, report.problems
    assert max(a.checkpoint.size for a in report.anchors) >= 60
