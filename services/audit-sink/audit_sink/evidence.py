"""Evidence from the audit store: verify it, prove one event, export a bundle, check a bundle offline.

An inclusion proof (`prove`) and an evidence bundle (`export`) carry everything
an outsider needs except the public key, which they must get from somewhere
they trust (the bundle carries a copy, which `check_bundle` uses only when no
key is given, and says so). Checking a proof or a bundle needs no database:
SHA-256 of the stored bytes, the leaf text, the RFC 6962 path to the root, and
the Ed25519 signature on the checkpoint.

Bundle layout (a folder): `events.jsonl` or `events.csv` (one stored row each,
with its leaf index), `checkpoint.txt` (signed note), `proofs.json` (inclusion
path per leaf index), `verifier.pub` (the key), `README.txt`.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine, select

from audit_sink.adapters.db import audit_tree
from audit_sink.adapters.ledger import iter_rows, redactions, snapshot, stored_leaf
from audit_sink.adapters.signing import verify_cosignature, verify_note
from audit_sink.domain.anchors import Anchor, anchor_problems, witnessed
from audit_sink.domain.checkpoint import Checkpoint, NoteError, VerifierKey
from audit_sink.domain.cosignature import CosignerKey
from audit_sink.domain.leaf import leaf_bytes
from audit_sink.domain.merkle import MerkleTree, ProofError, leaf_hash, verify_inclusion
from audit_sink.domain.redaction import (
    REDACTION_TOPIC,
    RedactionEntry,
    committed_leaf,
    entries_by_leaf,
    is_redaction_record,
    redaction_entries,
    redaction_problem,
)
from audit_sink.domain.rows import AuditRow
from audit_sink.domain.times import parse_time, render_time
from audit_sink.domain.tokens import audit_name
from audit_sink.domain.verify import AuditReport, audit_report

__all__ = [
    "BUNDLE_FORMATS",
    "EvidenceError",
    "OutsideCheckpoints",
    "check_bundle",
    "check_proof",
    "export_bundle",
    "outside_anchors",
    "prove",
    "verify_store",
]

BUNDLE_FORMATS = ("jsonl", "csv")
PROOF_FORMAT = "atb-audit-proof/1"
_FIELDS = (
    "leaf_index",
    "seq",
    "topic",
    "partition",
    "offset",
    "event_id",
    "event_type",
    "ce_type",
    "audit_type",
    "request_id",
    "producer",
    "occurred_at",
    "recorded_at",
    "retain_until",
    "key_b64",
    "raw_b64",
    "decode_error",
    "redacted",
    "received_sha256",
    "received_len",
    "redaction_leaf",
)


class EvidenceError(Exception):
    """A proof or bundle cannot be produced or does not check out; the message says why."""


def verify_store(
    engine: Engine, key: VerifierKey, *, strict: bool = False, outside: OutsideCheckpoints | None = None
) -> AuditReport:
    """Recompute every leaf, the tree, every checkpoint and the consistency between them.

    `strict` also fails when leaves were appended after the latest checkpoint
    (a store at rest, e.g. after the sink stopped, has none). `outside`: checkpoints
    from outside the store (witnessed, trusted, announced on atb.audit) the store must
    hold and agree with; a store rolled back below one of them fails, named.
    """
    from audit_sink.adapters.db import AuditStore

    snap, problems = snapshot(engine, key)
    anchors: list[Anchor] = []
    if outside is not None:
        from audit_sink.adapters.ledger import announced_notes
        from audit_sink.witnessing import COSIGNED_AUDIT_TYPE

        stored = [*AuditStore(engine, "").cosigned_notes(), *announced_notes(engine, COSIGNED_AUDIT_TYPE)]
        anchors, rejected = outside_anchors(outside, key, stored)
        problems += rejected
        problems += anchor_problems([leaf.hash for leaf in snap.leaves], snap.origin, anchors)
    report = audit_report(snap, problems)
    if strict and report.uncovered > 0:
        extra = f"{report.uncovered} leaves after the latest checkpoint are not covered by any signature"
        report = audit_report(snap, [*problems, extra])
    return dataclasses.replace(report, anchors=tuple(anchors))


def _latest_checkpoint(engine: Engine, key: VerifierKey) -> tuple[Checkpoint, str, list[bytes]]:
    snap, problems = snapshot(engine, key)
    report = audit_report(snap, problems)
    if not report.ok or report.latest is None:
        raise EvidenceError("the store does not verify; no proof is given from it: " + "; ".join(report.problems[:3]))
    hashes = [leaf.hash for leaf in snap.leaves]
    size = report.latest.size
    note = next((n for n, text in _notes_by_size(engine, key) if Checkpoint.parse(text).size == size), None)
    if note is None:
        raise EvidenceError(f"the latest checkpoint ({size}) is not in audit_checkpoints")
    return report.latest, note, hashes


def _notes_by_size(engine: Engine, key: VerifierKey) -> list[tuple[str, str]]:
    from audit_sink.adapters.db import audit_checkpoints

    with engine.connect() as conn:
        notes = [n for (n,) in conn.execute(select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.id))]
    out: list[tuple[str, str]] = []
    for note in notes:
        try:
            out.append((note, verify_note(note, key).text))
        except NoteError:
            continue
    return out


def _leaf_index(engine: Engine, row: AuditRow) -> int:
    query = select(audit_tree.c.idx).where(
        audit_tree.c.topic == row.topic,
        audit_tree.c.partition == row.partition,
        audit_tree.c.offset == row.offset,
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _redaction_record(engine: Engine, index: int) -> AuditRow:
    from audit_sink.adapters.db import audit_events

    query = select(audit_events.c.event_id).where(
        audit_events.c.topic == REDACTION_TOPIC, audit_events.c.leaf_idx == index
    )
    with engine.connect() as conn:
        event_id = conn.execute(query).scalar_one()
    return next(r for _, r in iter_rows(engine, event_id=event_id) if r.topic == REDACTION_TOPIC)


def prove(engine: Engine, key: VerifierKey, event_id: str) -> dict[str, object]:
    """An inclusion proof of the event against the latest signed checkpoint."""
    matches = [row for _, row in iter_rows(engine, event_id=event_id)]
    if not matches:
        raise EvidenceError(f"no stored event with id {event_id!r}")
    row = matches[0]
    checkpoint, note, hashes = _latest_checkpoint(engine, key)
    index = _leaf_index(engine, row)
    if index >= checkpoint.size:
        raise EvidenceError(
            f"event {event_id} (leaf {index}) is newer than the latest checkpoint ({checkpoint.size}); "
            "the sink signs one at least every 60 s: try again"
        )
    tree = MerkleTree(hashes[: checkpoint.size])
    with engine.connect() as conn:
        entry = redactions(conn).get(index)
    proof: dict[str, object] = {
        "format": PROOF_FORMAT,
        "verifier_key": str(key),
        "checkpoint": note,
        "leaf_index": index,
        "tree_size": checkpoint.size,
        "leaf": base64.b64encode(stored_leaf(row, entry)).decode(),
        "raw": base64.b64encode(row.raw).decode(),
        "inclusion_path": [base64.b64encode(h).decode() for h in tree.inclusion_proof(index)],
    }
    if entry is not None:
        # Redacted after its leaf was signed: the redaction record's leaf binds the stored bytes.
        if entry.record >= checkpoint.size:
            raise EvidenceError(
                f"event {event_id} was redacted by the record at leaf {entry.record}, newer than the latest "
                f"checkpoint ({checkpoint.size}); the sink signs one at least every 60 s: try again"
            )
        record = _redaction_record(engine, entry.record)
        proof["redaction"] = {
            "leaf_index": entry.record,
            "leaf": base64.b64encode(leaf_bytes(record)).decode(),
            "raw": base64.b64encode(record.raw).decode(),
            "inclusion_path": [base64.b64encode(h).decode() for h in tree.inclusion_proof(entry.record)],
        }
    return proof


def check_proof(proof: dict[str, object], key: VerifierKey) -> Checkpoint:
    """None of the database: the signature, the leaf's digest of the bytes, every path element. Raises EvidenceError."""
    try:
        if proof.get("format") != PROOF_FORMAT:
            raise EvidenceError(f"not an {PROOF_FORMAT} document")
        checkpoint = Checkpoint.parse(verify_note(str(proof["checkpoint"]), key).text)
        if checkpoint.origin != key.name:
            raise EvidenceError(f"checkpoint origin {checkpoint.origin!r} is not the key's log {key.name!r}")
        leaf = base64.b64decode(str(proof["leaf"]), validate=True)
        raw = base64.b64decode(str(proof["raw"]), validate=True)
        path_items = proof["inclusion_path"]
        if not isinstance(path_items, list):
            raise EvidenceError("inclusion_path must be a list")
        path = [base64.b64decode(str(p), validate=True) for p in path_items]
        index = proof["leaf_index"]
        if not isinstance(index, int) or proof.get("tree_size") != checkpoint.size:
            raise EvidenceError("leaf_index / tree_size do not match the checkpoint")
    except (KeyError, ValueError) as exc:
        raise EvidenceError(f"malformed proof: {exc}") from exc
    redaction = proof.get("redaction")
    if redaction is None:
        _check_leaf_digest(leaf, raw)
    else:
        _check_redaction(redaction, index, leaf, raw, checkpoint)
    try:
        verify_inclusion(index, checkpoint.size, leaf_hash(leaf), path, checkpoint.root)
    except ProofError as exc:
        raise EvidenceError(str(exc)) from exc
    return checkpoint


def _check_redaction(redaction: object, index: int, leaf: bytes, raw: bytes, checkpoint: Checkpoint) -> None:
    """The event's bytes were redacted after its leaf was signed: the redaction record, itself a leaf of
    the same checkpoint, must bind the leaf's digest of the original bytes to the digest of these."""
    try:
        if not isinstance(redaction, dict):
            raise EvidenceError("redaction must be an object")
        record_index = redaction["leaf_index"]
        record_leaf = base64.b64decode(str(redaction["leaf"]), validate=True)
        record_raw = base64.b64decode(str(redaction["raw"]), validate=True)
        record_path = [base64.b64decode(str(p), validate=True) for p in redaction["inclusion_path"]]
        if not isinstance(record_index, int):
            raise EvidenceError("redaction leaf_index must be an integer")
        fields, record_fields = json.loads(leaf), json.loads(record_leaf)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise EvidenceError(f"malformed redaction: {exc}") from exc
    _check_leaf_digest(record_leaf, record_raw)  # also refuses a record leaf that is not an object
    if not isinstance(fields, dict):
        raise EvidenceError("malformed redaction: the leaf is not a JSON object")
    if record_fields.get("topic") != REDACTION_TOPIC:
        raise EvidenceError("the redaction's leaf is not a redaction record")
    try:
        verify_inclusion(record_index, checkpoint.size, leaf_hash(record_leaf), record_path, checkpoint.root)
        entry = next((e for e in redaction_entries(record_index, record_raw) if e.leaf == index), None)
    except (ProofError, ValueError) as exc:
        raise EvidenceError(f"redaction record: {exc}") from exc
    if entry is None:
        raise EvidenceError(f"the redaction record does not name leaf {index}")
    original = (fields.get("raw_sha256"), fields.get("raw_len"))
    if original != (entry.received_sha256.removeprefix("sha256:"), entry.received_len):
        raise EvidenceError("the redaction record is of other bytes than the leaf commits to")
    if (hashlib.sha256(raw).hexdigest(), len(raw)) != (entry.raw_sha256.removeprefix("sha256:"), entry.raw_len):
        raise EvidenceError("the event's bytes are not those its redaction record commits to")


def _check_leaf_digest(leaf: bytes, raw: bytes) -> None:
    try:
        fields = json.loads(leaf)
    except (ValueError, RecursionError) as exc:
        raise EvidenceError("leaf is not JSON") from exc
    if not isinstance(fields, dict):
        raise EvidenceError("leaf is not a JSON object")
    if fields.get("raw_sha256") != hashlib.sha256(raw).hexdigest() or fields.get("raw_len") != len(raw):
        raise EvidenceError("the event's bytes do not match the digest its leaf commits to")


@dataclass(frozen=True)
class BundleSummary:
    folder: Path
    events: int
    tree_size: int


def _row_record(index: int, seq: int, row: AuditRow, entry: RedactionEntry | None = None) -> dict[str, object]:
    return {
        "leaf_index": index,
        "seq": seq,
        "topic": row.topic,
        "partition": row.partition,
        "offset": row.offset,
        "event_id": row.event_id,
        # What a SIEM queries: the audit name (`poa_issued`) for an AuditEvent, else the CloudEvents type.
        "event_type": row.audit_type or row.event_type,
        "ce_type": row.event_type,
        "audit_type": row.audit_type,
        "request_id": row.request_id,
        "producer": row.producer,
        "occurred_at": render_time(row.occurred_at),
        "recorded_at": render_time(row.recorded_at),
        "retain_until": render_time(row.retain_until),
        "key_b64": base64.b64encode(row.record_key).decode() if row.record_key is not None else None,
        "raw_b64": base64.b64encode(row.raw).decode(),
        "decode_error": row.decode_error,
        "redacted": row.redacted,
        "received_sha256": row.received_sha256,
        "received_len": row.received_len,
        "redaction_leaf": entry.record if entry is not None else None,
    }


def _row_from_record(record: dict[str, object]) -> tuple[int, AuditRow]:
    def text(name: str) -> str | None:
        value = record.get(name)
        return None if value in (None, "") else str(value)

    key = text("key_b64")
    # `ce_type` since `event_type` became the audit name; a bundle from before has the CloudEvents type there.
    ce_type = text("ce_type") or str(record["event_type"])
    raw = base64.b64decode(str(record["raw_b64"]), validate=True)
    row = AuditRow(
        topic=str(record["topic"]),
        partition=int(str(record["partition"])),
        offset=int(str(record["offset"])),
        event_id=str(record["event_id"]),
        event_type=ce_type,
        request_id=text("request_id"),
        producer=text("producer"),
        occurred_at=parse_time(str(record["occurred_at"])),
        recorded_at=parse_time(str(record["recorded_at"])),
        retain_until=parse_time(str(record["retain_until"])),
        record_key=base64.b64decode(key, validate=True) if key is not None else None,
        raw=raw,
        decode_error=text("decode_error"),
        redacted=str(record["redacted"]).lower() in ("true", "1"),
        received_sha256=text("received_sha256"),
        received_len=int(received_len) if (received_len := text("received_len")) is not None else None,
        audit_type=audit_name(ce_type, raw),
    )
    if "ce_type" in record:  # the derived names must be what the bytes say: they are not in the leaf
        shown = (text("event_type"), text("audit_type"))
        if shown != (row.audit_type or row.event_type, row.audit_type):
            raise ValueError(f"event_type/audit_type {shown} differ from what its bytes say")
    return int(str(record["leaf_index"])), row


def export_bundle(
    engine: Engine,
    key: VerifierKey,
    folder: Path,
    *,
    since: datetime | None,
    until: datetime | None,
    request_id: str | None = None,
    fmt: str = "jsonl",
) -> BundleSummary:
    """Write the selected events with the latest checkpoint, their inclusion proofs and the public key."""
    if fmt not in BUNDLE_FORMATS:
        raise EvidenceError(f"format must be one of {', '.join(BUNDLE_FORMATS)}")
    checkpoint, note, hashes = _latest_checkpoint(engine, key)
    tree = MerkleTree(hashes[: checkpoint.size])
    with engine.connect() as conn:
        index_of = {
            (t, int(p), int(o)): int(i)
            for i, t, p, o in conn.execute(
                select(audit_tree.c.idx, audit_tree.c.topic, audit_tree.c.partition, audit_tree.c.offset)
            )
        }
        entries = redactions(conn)
    records: list[dict[str, object]] = []
    proofs: dict[str, list[str]] = {}
    needed: set[int] = set()
    for seq, row in iter_rows(engine, since=since, until=until, request_id=request_id):
        index = index_of[(row.topic, row.partition, row.offset)]
        entry = entries.get(index)
        if index >= checkpoint.size or (entry is not None and entry.record >= checkpoint.size):
            continue  # newer than the checkpoint (or its redaction is): not provable yet
        records.append(_row_record(index, seq, row, entry))
        proofs[str(index)] = [base64.b64encode(h).decode() for h in tree.inclusion_proof(index)]
        if entry is not None:
            needed.add(entry.record)
    # The redaction records that bind the stored bytes of rows redacted after they were signed.
    for seq, row in iter_rows(engine):
        index = index_of[(row.topic, row.partition, row.offset)]
        if is_redaction_record(row) and index in needed and str(index) not in proofs:
            records.append(_row_record(index, seq, row))
            proofs[str(index)] = [base64.b64encode(h).decode() for h in tree.inclusion_proof(index)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"events.{fmt}").write_text(_render(records, fmt))
    (folder / "checkpoint.txt").write_text(note)
    (folder / "proofs.json").write_text(json.dumps({"tree_size": checkpoint.size, "proofs": proofs}, indent=1))
    (folder / "verifier.pub").write_text(str(key) + "\n")
    (folder / "README.txt").write_text(_README)
    return BundleSummary(folder, len(records), checkpoint.size)


def _render(records: Sequence[dict[str, object]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_FIELDS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    return out.getvalue()


def _read_events(folder: Path) -> Iterable[dict[str, object]]:
    if (folder / "events.jsonl").exists():
        for line in (folder / "events.jsonl").read_text().splitlines():
            if line.strip():
                yield json.loads(line)
    elif (folder / "events.csv").exists():
        with (folder / "events.csv").open(newline="") as handle:
            yield from csv.DictReader(handle)
    else:
        raise EvidenceError(f"{folder} has no events.jsonl or events.csv")


def check_bundle(folder: Path, key: VerifierKey | None = None) -> tuple[Checkpoint, int, list[str]]:
    """Check a bundle offline: (checkpoint, events checked, problems). The bundle's own key only if none is given."""
    problems: list[str] = []
    if key is None:
        key = VerifierKey.parse((folder / "verifier.pub").read_text())
    try:
        checkpoint = Checkpoint.parse(verify_note((folder / "checkpoint.txt").read_text(), key).text)
    except (NoteError, OSError) as exc:
        raise EvidenceError(f"checkpoint: {exc}") from exc
    if checkpoint.origin != key.name:
        raise EvidenceError(f"checkpoint origin {checkpoint.origin!r} is not the key's log {key.name!r}")
    proofs_doc = json.loads((folder / "proofs.json").read_text())
    proofs = proofs_doc.get("proofs", {})
    if proofs_doc.get("tree_size") != checkpoint.size:
        problems.append("proofs.json is for another tree size than the checkpoint")
    events = list(_read_events(folder))
    entries = _bundle_redactions(events, proofs, checkpoint, problems)
    for number, record in enumerate(events, start=1):
        try:
            index, row = _row_from_record(record)
            entry = entries.get(index)
            if entry is not None and (reason := redaction_problem(row, entry)):
                raise ValueError(reason)
            leaf = committed_leaf(row, entry) if entry is not None else leaf_bytes(row)
            path = [base64.b64decode(p, validate=True) for p in proofs[str(index)]]
            verify_inclusion(index, checkpoint.size, leaf_hash(leaf), path, checkpoint.root)
        except (KeyError, ValueError, TypeError, ProofError) as exc:
            problems.append(f"event {number} ({record.get('event_id')}): {type(exc).__name__}: {exc}")
    return checkpoint, len(events), problems


def _bundle_redactions(
    events: Sequence[dict[str, object]], proofs: dict[str, list[str]], checkpoint: Checkpoint, problems: list[str]
) -> dict[int, RedactionEntry]:
    """Redaction entries from the bundle's redaction records, each proven included in the checkpoint first."""
    records: dict[int, bytes] = {}
    for record in events:
        if record.get("topic") != REDACTION_TOPIC:
            continue
        try:
            index, row = _row_from_record(record)
            path = [base64.b64decode(p, validate=True) for p in proofs[str(index)]]
            verify_inclusion(index, checkpoint.size, leaf_hash(leaf_bytes(row)), path, checkpoint.root)
        except (KeyError, ValueError, TypeError, ProofError):
            continue  # reported with the other events
        if is_redaction_record(row):
            records[index] = row.raw
    entries, found = entries_by_leaf(records)
    problems += found
    return entries


_README = """ATB audit evidence bundle

events.jsonl|csv  stored events: exact bytes (raw_b64) and the metadata the log committed to;
                  event_type is the audit name (poa_issued, ...) of an audit event, else the CloudEvents
                  type, which ce_type always holds (the leaf commits to ce_type, not to event_type)
checkpoint.txt    C2SP tlog-checkpoint, signed note (Ed25519)
proofs.json       RFC 6962 inclusion path of each event's leaf, against that checkpoint
verifier.pub      the log's verifier key (<name>+<key id>+<key>): compare it with the published one

Check offline:  atb audit verify --bundle <this folder> --key '<verifier key you trust>'
By hand: leaf = canonical JSON of the event's metadata with raw_sha256 = SHA-256(raw);
leaf hash = SHA-256(0x00 || leaf); walk the path (RFC 9162 2.1.3.2) to the root in the checkpoint;
verify the checkpoint's signature with the key.
A row with redaction_leaf was redacted after its leaf was signed: its leaf has raw_sha256 and
raw_len of the original bytes (its received_sha256), and the redaction record (the event at leaf
redaction_leaf, topic atb-audit-store:redactions, also in this bundle) binds them to SHA-256(raw).
"""


@dataclass(frozen=True)
class OutsideCheckpoints:
    """Checkpoint notes from outside the store, and the witnesses to trust (docs/audit.md, "Witnessed checkpoints").

    `trusted` (label, note): checkpoints the auditor vouches for (a file from a previous
    export, a witness, the topic); each is an anchor once the log's signature checks.
    `announced`: notes read from the `atb.audit` topic; each log-signed one is an anchor.
    `cosigned` (label, note): notes whose witness cosignatures count (a witness's answer,
    the store's `audit_cosignatures`). Cosignatures in any of them count towards
    `threshold` distinct `witness_keys`.
    """

    witness_keys: Sequence[CosignerKey] = ()
    threshold: int = 1
    trusted: Sequence[tuple[str, str]] = ()
    announced: Sequence[str] = ()
    cosigned: Sequence[tuple[str, str]] = ()


def outside_anchors(
    outside: OutsideCheckpoints, key: VerifierKey, stored_cosigned: Sequence[str] = ()
) -> tuple[list[Anchor], list[str]]:
    """The anchors the outside notes give (signatures checked), and the notes that were rejected."""
    anchors: list[Anchor] = []
    problems: list[str] = []
    cosigned: dict[Checkpoint, dict[str, int]] = {}
    labelled = [
        *((f"trusted checkpoint {label}", note, True) for label, note in outside.trusted),
        *(("checkpoint announced on atb.audit", note, True) for note in outside.announced),
        *((label, note, False) for label, note in outside.cosigned),
        *(("audit_cosignatures", note, False) for note in stored_cosigned),
    ]
    for source, note, anchor in labelled:
        try:
            parsed = verify_note(note, key)
            checkpoint = Checkpoint.parse(parsed.text)
        except NoteError as exc:
            problems.append(f"{source} rejected: {exc}")
            continue
        if anchor:
            anchors.append(Anchor(checkpoint, f"{source} (size {checkpoint.size})"))
        for witness in outside.witness_keys:
            try:
                cosig = verify_cosignature(parsed, witness)
            except NoteError:
                continue
            seen = cosigned.setdefault(checkpoint, {})
            seen[witness.name] = max(seen.get(witness.name, 0), cosig.timestamp)
    if outside.witness_keys:
        found, short = witnessed(cosigned, outside.threshold)
        anchors += found
        if not found:
            fewer = f" (the largest cosigned by fewer: size {short.size})" if short is not None else ""
            problems.append(
                f"no checkpoint cosigned by {outside.threshold} of the {len(outside.witness_keys)} given witness "
                f"key(s) was found in the store, on atb.audit or in the given files{fewer}"
            )
    return anchors, problems
