"""What of a record is a live credential, and the audit name of an AuditEvent: read from its bytes.

`redact` gives the bytes the audit store keeps for a record that carries a
bearer token: a `PoaIssued` without its `token` (its `token_sha256` stays), an
`ActionRequested` whose `poa` is replaced by `sha256:<hex>` of the token (the
digest the issuance's `token_sha256` holds, so the two still join).
`audit_name` is an AuditEvent's `audit_type` (`poa_issued`, ...), the name the
operating model logs as `event_type` (docs/audit.md).

Pure: JSON and SHA-256 only.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import msgspec
import orjson

from contracts import ActionRequested, AuditEvent, EventDecodeError, PoaIssued, decode_envelope, encode_envelope

__all__ = ["DIGEST", "audit_name", "audit_name_in", "is_redacted_payload", "redact", "sha256_text"]

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def sha256_text(value: bytes) -> str:
    return "sha256:" + hashlib.sha256(value).hexdigest()


def _token_digest(value: object) -> str:
    return sha256_text(value.encode() if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def redact(event_type: str, raw: bytes) -> bytes | None:
    """The bytes to store for a record that carries a bearer token; None when it carries none (store `raw`).

    Re-encoded canonically, so a producer's proof over the record no longer verifies
    against the stored bytes; `received_sha256` keeps the digest of what was received.
    """
    if event_type not in (PoaIssued.event_type, ActionRequested.event_type):
        return None
    try:
        envelope = decode_envelope(raw)
    except EventDecodeError:
        return None
    data = dict(envelope.data)
    if event_type == PoaIssued.event_type:
        data["token"] = ""
    else:
        if data.get("poa") is None:
            return None
        data["poa"] = _token_digest(data["poa"])
    return encode_envelope(envelope.model_copy(update={"data": data}))


def is_redacted_payload(event_type: str, raw: bytes) -> bool:
    """Stored bytes that decode as a redacted token-carrying event (no token left in its field)."""
    try:
        data = decode_envelope(raw).data
    except EventDecodeError:
        return False
    if event_type == PoaIssued.event_type:
        return data.get("token") == ""
    if event_type == ActionRequested.event_type:
        poa = data.get("poa")
        return isinstance(poa, str) and DIGEST.match(poa) is not None
    return False


class _AuditData(msgspec.Struct):
    audit_type: object = None


class _AuditEnvelope(msgspec.Struct):
    data: _AuditData


_AUDIT_NAME = re.compile(r"^[a-z0-9_]{1,64}\Z")
_audit_decoder = msgspec.json.Decoder(_AuditEnvelope)


def audit_name(event_type: str, raw: bytes) -> str | None:
    """An AuditEvent's `audit_type` (`poa_issued`, ...) read from its stored bytes; None for anything else."""
    if event_type != AuditEvent.event_type:
        return None
    try:
        name = _audit_decoder.decode(raw).data.audit_type
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    return _named(name)


def audit_name_in(event_type: str, data: Mapping[str, object]) -> str | None:
    """`audit_name` of an event whose `data` object is read already."""
    if event_type != AuditEvent.event_type:
        return None
    return _named(data.get("audit_type"))


def _named(name: object) -> str | None:
    return name if isinstance(name, str) and _AUDIT_NAME.match(name) else None
