"""A dead letter's prefix of the original record never carries a bearer token (contracts/redaction.py)."""

from __future__ import annotations

import base64
import hashlib
import json

from atb_runtime import Incoming
from atb_runtime.records import letter_for
from contracts.limits import DEAD_LETTER_PREFIX_BYTES
from contracts.redaction import mask_tokens

# The shape of a PoA: a base64url JSON header, claims and a signature.
TOKEN = (
    "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIiwidHlwIjoicG9hK2p3dCJ9"
    ".eyJzdWIiOiJzcGlmZmU6Ly9hdGIubG9jYWwvYWdlbnQvYSIsImp0aSI6IngifQ"
    ".c2lnbmF0dXJlLWJ5dGVzLXNpZ25hdHVyZS1ieXRlcy1zaWduYXR1cmUtYnl0ZXM"
)


def _letter(value: bytes) -> bytes:
    record = Incoming("atb.broker.requests", 0, 7, b"req-1", value)
    letter = letter_for(record, consumer="broker", error_code="invalid_envelope", reason="bad")
    assert letter.original_sha256 == "sha256:" + hashlib.sha256(value).hexdigest()
    return base64.b64decode(letter.original_prefix_b64)


def test_a_presented_token_is_masked_in_the_prefix_and_the_rest_is_kept() -> None:
    value = json.dumps({"data": {"poa": TOKEN, "action": "crm.contact.read"}}).encode()
    prefix = _letter(value)
    assert TOKEN.encode() not in prefix
    assert len(prefix) == len(value)
    assert b'"action": "crm.contact.read"' in prefix
    assert prefix == value.replace(TOKEN.encode(), b"*" * len(TOKEN))


def test_a_token_cut_off_where_the_prefix_ends_is_masked_too() -> None:
    filler = b'{"pad": "' + b"a" * (DEAD_LETTER_PREFIX_BYTES - 40) + b'", "poa": "'
    prefix = _letter(filler + TOKEN.encode() + b'"}')
    assert len(prefix) == DEAD_LETTER_PREFIX_BYTES
    cut = prefix[len(filler) :]
    assert cut
    assert set(cut) == {ord("*")}
    assert TOKEN.encode()[: len(cut)] not in prefix


def test_every_part_of_a_compact_jws_is_masked() -> None:
    header, claims, signature = TOKEN.split(".")
    for text in (TOKEN, f"{header}.{claims}", header, f"x {TOKEN} y"):
        masked = mask_tokens(text.encode())
        assert not any(part.encode() in masked for part in (header, claims, signature)), text
