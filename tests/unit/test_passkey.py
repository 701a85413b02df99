"""atb_identity.passkey: a vote's passkey assertion holds only for its credential, request, decision and origin.

The assertions are made by a software authenticator (P-256, as a platform
authenticator signs: authenticatorData || SHA-256(clientDataJSON)); every forgery
below changes one thing and must be refused by the rule named.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from atb_identity.passkey import (
    ASSERTION_INVALID,
    EnrolledPasskey,
    PasskeyAssertionError,
    b64url,
    verify_assertion,
    verify_vote_assertion,
)
from contracts.console_events import PasskeyAssertion, vote_challenge
from contracts.events import VoteChoice

RP_ID = "console.atb.test"
ORIGIN = "https://console.atb.test"
DIGEST = "sha256v2:" + "ab" * 32
OTHER_DIGEST = "sha256v2:" + "cd" * 32


def cose_p256(key: ec.EllipticCurvePrivateKey) -> bytes:
    numbers = key.public_key().public_numbers()
    return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


@dataclass
class SoftAuthenticator:
    """A passkey in software: one P-256 credential and a signature counter."""

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    credential_id: str = field(default_factory=lambda: b64url(secrets.token_bytes(16)))
    counter: int = 0

    def enrolled(self, *, sign_count: int = 0) -> EnrolledPasskey:
        return EnrolledPasskey("alice", self.credential_id, cose_p256(self.key), RP_ID, (ORIGIN,), sign_count)

    def sign(
        self,
        challenge: bytes,
        *,
        nonce: str,
        rp_id: str = RP_ID,
        origin: str = ORIGIN,
        kind: str = "webauthn.get",
        up: bool = True,
        uv: bool = True,
        cross_origin: bool = False,
        count: bool = True,
        signer: ec.EllipticCurvePrivateKey | None = None,
    ) -> PasskeyAssertion:
        if count:
            self.counter += 1
        flags = (0x01 if up else 0) | (0x04 if uv else 0)
        auth_data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + self.counter.to_bytes(4, "big")
        client = {"type": kind, "challenge": b64url(challenge), "origin": origin, "crossOrigin": cross_origin}
        client_json = json.dumps(client).encode()
        signed = auth_data + hashlib.sha256(client_json).digest()
        signature = (signer or self.key).sign(signed, ec.ECDSA(hashes.SHA256()))
        return PasskeyAssertion(
            credential_id=self.credential_id,
            authenticator_data=b64url(auth_data),
            client_data_json=b64url(client_json),
            signature=b64url(signature),
            nonce=nonce,
        )

    def vote(self, digest: str = DIGEST, choice: VoteChoice = VoteChoice.APPROVE, **kw: object) -> PasskeyAssertion:
        nonce = b64url(secrets.token_bytes(16))
        return self.sign(vote_challenge(digest, choice, nonce), nonce=nonce, **kw)  # type: ignore[arg-type]


def refused(
    rule: str, assertion: PasskeyAssertion, passkey: EnrolledPasskey, *, digest: str = DIGEST, choice: str = "approve"
) -> None:
    with pytest.raises(PasskeyAssertionError) as caught:
        verify_vote_assertion(assertion, passkey, request_digest=digest, choice=choice)
    assert caught.value.code == ASSERTION_INVALID
    assert caught.value.rule == rule, str(caught.value)


def test_a_vote_assertion_holds_for_its_request_and_decision() -> None:
    device = SoftAuthenticator()
    verified = verify_vote_assertion(device.vote(), device.enrolled(), request_digest=DIGEST, choice="approve")
    assert verified.principal == "alice"
    assert verified.credential_id == device.credential_id
    assert verified.sign_count == 1
    assert verified.user_verified


def test_the_challenge_binds_digest_decision_and_nonce() -> None:
    base = vote_challenge(DIGEST, "approve", "n" * 22)
    assert base != vote_challenge(OTHER_DIGEST, "approve", "n" * 22)
    assert base != vote_challenge(DIGEST, "deny", "n" * 22)
    assert base != vote_challenge(DIGEST, "approve", "m" * 22)
    assert base == vote_challenge(DIGEST, VoteChoice.APPROVE, "n" * 22)
    with pytest.raises(ValueError, match="abstain"):
        vote_challenge(DIGEST, "abstain", "n" * 22)


def test_an_assertion_for_another_request_is_refused() -> None:
    device = SoftAuthenticator()
    refused("challenge", device.vote(digest=OTHER_DIGEST), device.enrolled())


def test_an_assertion_for_the_other_decision_is_refused() -> None:
    device = SoftAuthenticator()
    refused("challenge", device.vote(choice=VoteChoice.DENY), device.enrolled(), choice="approve")


def test_an_assertion_over_an_arbitrary_challenge_is_refused() -> None:
    device = SoftAuthenticator()
    assertion = device.sign(secrets.token_bytes(32), nonce="x" * 22)
    refused("challenge", assertion, device.enrolled())


def test_another_credential_is_refused() -> None:
    device, other = SoftAuthenticator(), SoftAuthenticator()
    refused("credential", other.vote(), device.enrolled())


def test_a_signature_by_another_key_under_this_credential_id_is_refused() -> None:
    device = SoftAuthenticator()
    forger = ec.generate_private_key(ec.SECP256R1())
    refused("signature", device.vote(signer=forger), device.enrolled())


def test_a_tampered_client_data_is_refused() -> None:
    device = SoftAuthenticator()
    good = device.vote()
    client = json.loads(_unb64(good.client_data_json))
    client["extra"] = "x"
    tampered = good.model_copy(update={"client_data_json": b64url(json.dumps(client).encode())})
    refused("signature", tampered, device.enrolled())


def test_user_verification_off_is_refused() -> None:
    device = SoftAuthenticator()
    refused("user_verified", device.vote(uv=False), device.enrolled())


def test_user_presence_off_is_refused() -> None:
    device = SoftAuthenticator()
    refused("user_present", device.vote(up=False), device.enrolled())


def test_a_replayed_assertion_is_refused_by_its_counter() -> None:
    device = SoftAuthenticator()
    assertion = device.vote()
    first = verify_vote_assertion(assertion, device.enrolled(), request_digest=DIGEST, choice="approve")
    refused("counter", assertion, device.enrolled(sign_count=first.sign_count))


def test_a_counter_that_goes_back_is_refused() -> None:
    device = SoftAuthenticator(counter=5)
    refused("counter", device.vote(), device.enrolled(sign_count=10))


def test_an_authenticator_without_a_counter_is_accepted_at_zero() -> None:
    device = SoftAuthenticator()
    assertion = device.vote(count=False)
    assert verify_vote_assertion(assertion, device.enrolled(), request_digest=DIGEST, choice="approve").sign_count == 0


def test_another_origin_is_refused() -> None:
    device = SoftAuthenticator()
    refused("origin", device.vote(origin="https://evil.example"), device.enrolled())


def test_a_cross_origin_frame_is_refused() -> None:
    device = SoftAuthenticator()
    refused("cross_origin", device.vote(cross_origin=True), device.enrolled())


def test_another_rp_id_is_refused() -> None:
    device = SoftAuthenticator()
    refused("rp_id", device.vote(rp_id="evil.example"), device.enrolled())


def test_a_registration_response_is_not_an_assertion() -> None:
    device = SoftAuthenticator()
    refused("type", device.vote(kind="webauthn.create"), device.enrolled())


@pytest.mark.parametrize(
    "change",
    [
        {"client_data_json": b64url(b"not json")},
        {"client_data_json": b64url(b"[1, 2]")},
        {"authenticator_data": b64url(b"short")},
        {"signature": "!!!"},
    ],
)
def test_malformed_parts_are_refused(change: dict[str, str]) -> None:
    device = SoftAuthenticator()
    bad = device.vote().model_copy(update=change)
    with pytest.raises(PasskeyAssertionError) as caught:
        verify_vote_assertion(bad, device.enrolled(), request_digest=DIGEST, choice="approve")
    assert caught.value.rule in {"malformed", "rp_id"}


def test_a_garbage_signature_is_refused_not_raised() -> None:
    device = SoftAuthenticator()
    bad = device.vote().model_copy(update={"signature": b64url(b"\x30\x02\x01")})
    refused("signature", bad, device.enrolled())


def test_an_unusable_enrolled_key_is_refused() -> None:
    device = SoftAuthenticator()
    enrolled = device.enrolled()
    broken = EnrolledPasskey(enrolled.principal, enrolled.credential_id, b"\xa0", RP_ID, (ORIGIN,))
    refused("malformed", device.vote(), broken)


def test_user_verification_may_be_waived_for_sign_in_only() -> None:
    device = SoftAuthenticator()
    challenge = secrets.token_bytes(32)
    assertion = device.sign(challenge, nonce="s" * 22, uv=False)
    verified = verify_assertion(assertion, device.enrolled(), challenge, require_user_verification=False)
    assert not verified.user_verified


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
