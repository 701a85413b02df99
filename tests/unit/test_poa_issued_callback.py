"""`PoaIssued.callback_url`, added to v1 after it was published: written only when set.

A PoaIssued without a callback must stay byte for byte the published version, which
consumers older than the field (`extra="forbid"`) read; one with a callback carries it
inside the signed data, where issuer/callbacks.py reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import PoaIssued, Tier, decode_envelope, encode_envelope, make_envelope, payload_of

PUBLISHED_V1 = {
    "request_id",
    "jti",
    "kid",
    "agent_id",
    "action",
    "tier",
    "issued_at",
    "expires_at",
    "token",
    "token_sha256",
}
"""The fields of atb.poa.issued.v1 as first published."""


def _poa(callback: str | None = None) -> PoaIssued:
    now = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    return PoaIssued(
        request_id="req-1",
        jti="j1",
        kid="k1",
        agent_id="spiffe://atb.local/agent/finance-bot",
        action="crm.contact.read",
        tier=Tier.LOW,
        issued_at=now,
        expires_at=now,
        token="t",
        token_sha256="sha256:" + "0" * 64,
        callback_url=callback,
    )


def test_a_poa_without_a_callback_is_the_published_v1_and_one_with_it_carries_it() -> None:
    plain = make_envelope(_poa(), source="spiffe://atb.local/svc/issuer")
    assert set(plain.data) == PUBLISHED_V1
    assert b"callback_url" not in encode_envelope(plain)

    hooked = make_envelope(_poa("https://hooks.example.com/atb"), source="spiffe://atb.local/svc/issuer")
    assert set(hooked.data) == PUBLISHED_V1 | {"callback_url"}
    read = payload_of(decode_envelope(encode_envelope(hooked)))
    assert isinstance(read, PoaIssued)
    assert read.callback_url == "https://hooks.example.com/atb"
    assert payload_of(decode_envelope(encode_envelope(plain))) == _poa()
