"""The end of `atb demo`: the audit store verifies, and a tampered copy does not.

Stops the audit sink gracefully (it signs a last checkpoint of everything it
stored), runs what `atb audit verify --strict` runs over the demo's store, proves
one event the way an outsider would check it (public key only), then copies the
store, flips one byte of one row in the copy behind the triggers' back (as a DBA
could) and shows verification failing. The real store is never touched.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from rich.console import Console

from atb.dev.stack import ServiceStack
from atb.errors import AtbError
from audit_sink.adapters.db import make_engine
from audit_sink.adapters.ledger import iter_rows
from audit_sink.adapters.signing import load_verifier
from audit_sink.domain.checkpoint import VerifierKey
from audit_sink.domain.cosignature import CosignerKey
from audit_sink.evidence import OutsideCheckpoints, check_proof, prove, verify_store

__all__ = ["AuditDemoError", "audit_ending"]


class AuditDemoError(AtbError, RuntimeError):
    """The audit store did not verify, or a tampered copy did."""


async def audit_ending(console: Console, stack: ServiceStack, db_url: str, state_dir: Path) -> None:
    console.rule("[bold]Audit store: append-only, tamper-evident")
    await stack.processes["audit-sink"].stop(15)  # SIGTERM: the sink signs a last checkpoint
    key = load_verifier(str(state_dir / "audit" / "checkpoint.key.pub"))
    engine = make_engine(db_url)
    report = await asyncio.to_thread(verify_store, engine, key, strict=True)
    if not report.ok:
        raise AuditDemoError(f"atb audit verify failed on the demo's store: {report.problems[:3]}")
    latest = report.latest.size if report.latest else 0
    console.print(
        f"atb audit verify --strict: [green]OK[/green] — {report.rows} rows, {report.leaves} Merkle leaves, "
        f"{report.checkpoints} signed checkpoints (latest size {latest}), key {key}"
    )
    if stack.witness_vkey:
        witness = CosignerKey.parse(stack.witness_vkey)
        witnessed = await asyncio.to_thread(verify_store, engine, key, outside=OutsideCheckpoints([witness]))
        if not witnessed.ok:
            raise AuditDemoError(f"the store does not verify against its witness: {witnessed.problems[:3]}")
        size = max((a.checkpoint.size for a in witnessed.anchors), default=0)
        console.print(
            f"atb audit verify --witness-key {witness.name}: [green]OK[/green] — the witness cosigned the log "
            f"up to size {size}; a rollback below it would be named even if the DBA rewrote the checkpoints"
        )
    event_id = next(row.event_id for _, row in iter_rows(engine) if row.event_type != "undecodable")
    proof = await asyncio.to_thread(prove, engine, key, event_id)
    checkpoint = check_proof(proof, key)
    path = proof["inclusion_path"]
    console.print(
        f"atb audit prove {event_id}: leaf {proof['leaf_index']} of {checkpoint.size}, "
        f"{len(path) if isinstance(path, list) else 0} hashes to the signed root — checks with the public key alone"
    )
    await asyncio.to_thread(_tampered_copy_fails, console, db_url, key)


def _tampered_copy_fails(console: Console, db_url: str, key: VerifierKey) -> None:
    source = Path(db_url.removeprefix("sqlite:///"))
    with tempfile.TemporaryDirectory(prefix="atb-demo-tamper-") as tmp:
        copy = Path(tmp) / "tampered.db"
        with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        conn = sqlite3.connect(copy)
        try:
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                conn.execute(f"DROP TRIGGER {name}")  # what a DBA could do to the copy
            seq, raw = conn.execute("SELECT seq, raw FROM audit_events ORDER BY seq LIMIT 1 OFFSET 3").fetchone()
            flipped = bytes(raw[:10]) + bytes([raw[10] ^ 0x01]) + bytes(raw[11:])
            conn.execute("UPDATE audit_events SET raw = ? WHERE seq = ?", (flipped, seq))
            conn.commit()
        finally:
            conn.close()
        report = verify_store(make_engine(f"sqlite:///{copy}"), key, strict=True)
    if report.ok:
        raise AuditDemoError("a copy with one flipped bit verified: tamper evidence is broken")
    console.print(f"Tampered copy (one bit of row {seq} flipped, triggers dropped): [red]FAILED[/red] as it must:")
    for problem in report.problems[:3]:
        console.print(f"  [red]✗[/red] {problem}")
