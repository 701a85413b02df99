"""JSON nested past the parser's recursion, where the bytes come from someone else, is a clear refusal.

Python's `json.loads` raises RecursionError, not ValueError, on a document nested
about a thousand levels deep: a 2 KB string. Each reader of outside bytes that
used it caught only ValueError, so such a document escaped as an unexpected error:
a passkey assertion's clientDataJSON (carried on a vote to approvals and the
issuer), an archive's or an evidence pack's leaf (an auditor verifying a hostile
copy), a tombstone's leaf in a store (a hostile DBA), the console's JSON bodies.
Each now refuses it the way it refuses any other JSON it cannot read.
"""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from atb_identity.passkey import PasskeyAssertionError, _client_data
from audit_sink.archive.format import ArchiveFormatError, _loads
from audit_sink.domain.checkpoint import Checkpoint
from audit_sink.domain.verify import _not_expired
from audit_sink.evidence import EvidenceError, _check_leaf_digest, _check_redaction

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


@pytest.mark.parametrize("document", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
def test_a_passkey_client_data_nested_too_deep_is_malformed(document: bytes) -> None:
    with pytest.raises(PasskeyAssertionError) as caught:
        _client_data(document)
    assert caught.value.rule == "malformed"


@pytest.mark.parametrize("document", [DEEP, DEEP_OBJECT], ids=["arrays", "objects"])
def test_an_archive_document_nested_too_deep_is_a_format_error(document: bytes) -> None:
    with pytest.raises(ArchiveFormatError, match="manifest is not JSON"):
        _loads(document, "manifest")


@pytest.mark.parametrize("document", [DEEP, DEEP_OBJECT, b"[1, 2]"], ids=["arrays", "objects", "not an object"])
def test_an_evidence_leaf_nested_too_deep_or_not_an_object_is_an_evidence_error(document: bytes) -> None:
    with pytest.raises(EvidenceError, match="leaf is not"):
        _check_leaf_digest(document, b"raw")


def test_a_tombstone_nested_too_deep_is_reported_unreadable() -> None:
    assert _not_expired(DEEP, "2026-01-01T00:00:00+00:00").startswith("unreadable tombstone")


def test_the_fixtures_really_exhaust_the_stdlib_parser() -> None:
    """Guard for the tests above: without their fix each would see RecursionError."""
    for document in (DEEP, DEEP_OBJECT):
        with pytest.raises(RecursionError):
            json.loads(document)


def test_a_redacted_events_leaf_that_is_not_an_object_is_an_evidence_error() -> None:
    """The redaction path read `fields.get(...)` of the event's leaf: a JSON array raised AttributeError."""
    record_raw = b"record"
    record_leaf = json.dumps({"raw_sha256": hashlib.sha256(record_raw).hexdigest(), "raw_len": len(record_raw)})
    redaction = {
        "leaf_index": 1,
        "leaf": base64.b64encode(record_leaf.encode()).decode(),
        "raw": base64.b64encode(record_raw).decode(),
        "inclusion_path": [],
    }
    checkpoint = Checkpoint("atb.local/audit", 2, b"\x00" * 32)
    with pytest.raises(EvidenceError, match="the leaf is not a JSON object"):
        _check_redaction(redaction, 0, b"[1, 2]", b"raw", checkpoint)
