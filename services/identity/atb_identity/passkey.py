"""Verify a passkey (WebAuthn) assertion against an enrolled credential: one function for every verifier.

The console checks a vote's assertion before publishing it; approvals and the
issuer check it again, on their own, against the credential's public key as
announced (`contracts.console_events.PasskeyEnrolled`), so a compromised console
cannot approve anything by itself.

`verify_assertion` refuses, by the first rule that fails, with a
`PasskeyAssertionError` whose `rule` is stable:

=====================  =========================================================
``malformed``          a field is not base64url, clientDataJSON is not a JSON
                       object, authenticatorData is shorter than 37 bytes
``credential``         the assertion names another credential than the enrolled one
``type``               clientDataJSON.type is not ``webauthn.get``
``challenge``          clientDataJSON.challenge is not the expected challenge
``origin``             clientDataJSON.origin is not one of the credential's origins
``cross_origin``       clientDataJSON.crossOrigin is true (an embedding page asked)
``rp_id``              authenticatorData's rpIdHash is not SHA-256 of the RP id
``user_present``       the UP flag is off
``user_verified``      the UV flag is off (user verification is required)
``counter``            the signature counter did not go up, where the
                       authenticator keeps one (a cloned key or a replay)
``signature``          the signature does not verify with the COSE public key
=====================  =========================================================

The relying-party checks are those of the `webauthn` package (py_webauthn),
which runs last over the same data; the rules before it name the failure.

`verify_vote_assertion` derives the challenge from the vote
(`contracts.console_events.vote_challenge`: request digest, decision, nonce).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from webauthn import verify_authentication_response
from webauthn.helpers import decode_credential_public_key
from webauthn.helpers.exceptions import InvalidAuthenticationResponse, InvalidPublicKeyStructure

from atb_identity.errors import IdentityError
from contracts.console_events import PasskeyAssertion, vote_challenge
from contracts.events import VoteChoice

__all__ = [
    "ASSERTION_INVALID",
    "EnrolledPasskey",
    "PasskeyAssertionError",
    "VerifiedAssertion",
    "b64url",
    "b64url_decode",
    "verify_assertion",
    "verify_vote_assertion",
]

ASSERTION_INVALID = "assertion_invalid"
"""The code every refused assertion carries (`PasskeyAssertionError.code`); `rule` says which rule."""

_FLAG_UP = 0x01
_FLAG_UV = 0x04
_AUTH_DATA_MIN = 37  # rpIdHash (32) + flags (1) + signCount (4)


class PasskeyAssertionError(IdentityError):
    """A passkey assertion that does not hold; `rule` names the first rule it fails."""

    code = ASSERTION_INVALID

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule


@dataclass(frozen=True)
class EnrolledPasskey:
    """A credential as enrolled: whose, its id, its COSE public key, where it may be used, its last counter."""

    principal: str
    credential_id: str
    """base64url, unpadded."""
    public_key: bytes
    """COSE_Key."""
    rp_id: str
    origins: tuple[str, ...]
    sign_count: int = 0


@dataclass(frozen=True)
class VerifiedAssertion:
    """An assertion that holds: the credential, its new counter, and whether the user was verified."""

    principal: str
    credential_id: str
    sign_count: int
    user_verified: bool


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, what: str = "value") -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PasskeyAssertionError("malformed", f"{what} is not base64url") from exc


def verify_assertion(
    assertion: PasskeyAssertion,
    passkey: EnrolledPasskey,
    challenge: bytes,
    *,
    require_user_verification: bool = True,
) -> VerifiedAssertion:
    """The assertion holds for `passkey` over `challenge`, or `PasskeyAssertionError` says why not."""
    if assertion.credential_id != passkey.credential_id:
        raise PasskeyAssertionError("credential", "the assertion is by another credential than the enrolled one")
    client_data_raw = b64url_decode(assertion.client_data_json, "clientDataJSON")
    auth_data = b64url_decode(assertion.authenticator_data, "authenticatorData")
    b64url_decode(assertion.signature, "signature")
    client_data = _client_data(client_data_raw)
    if client_data.get("type") != "webauthn.get":
        raise PasskeyAssertionError("type", f"clientDataJSON.type is {client_data.get('type')!r}, not 'webauthn.get'")
    if client_data.get("challenge") != b64url(challenge):
        raise PasskeyAssertionError("challenge", "clientDataJSON.challenge is not the expected challenge")
    if client_data.get("origin") not in passkey.origins:
        raise PasskeyAssertionError("origin", f"origin {str(client_data.get('origin'))[:200]!r} is not allowed")
    if client_data.get("crossOrigin") is True:
        raise PasskeyAssertionError("cross_origin", "the assertion was asked for by a cross-origin frame")
    if len(auth_data) < _AUTH_DATA_MIN:
        raise PasskeyAssertionError("malformed", f"authenticatorData has {len(auth_data)} bytes, fewer than 37")
    if auth_data[:32] != hashlib.sha256(passkey.rp_id.encode("utf-8")).digest():
        raise PasskeyAssertionError("rp_id", f"rpIdHash is not the hash of {passkey.rp_id!r}")
    flags = auth_data[32]
    if not flags & _FLAG_UP:
        raise PasskeyAssertionError("user_present", "the authenticator says the user was not present")
    if require_user_verification and not flags & _FLAG_UV:
        raise PasskeyAssertionError("user_verified", "the authenticator did not verify the user")
    counter = int.from_bytes(auth_data[33:37], "big")
    if (counter > 0 or passkey.sign_count > 0) and counter <= passkey.sign_count:
        raise PasskeyAssertionError("counter", f"signature counter {counter} is not above {passkey.sign_count}")
    try:
        decode_credential_public_key(passkey.public_key)
    except (InvalidPublicKeyStructure, ValueError, KeyError, TypeError) as exc:
        raise PasskeyAssertionError("malformed", "the enrolled public key is not a usable COSE key") from exc
    credential = {
        "id": assertion.credential_id,
        "rawId": assertion.credential_id,
        "type": "public-key",
        "response": {
            "authenticatorData": assertion.authenticator_data,
            "clientDataJSON": assertion.client_data_json,
            "signature": assertion.signature,
            **({"userHandle": assertion.user_handle} if assertion.user_handle else {}),
        },
    }
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=passkey.rp_id,
            expected_origin=list(passkey.origins),
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=require_user_verification,
        )
    except InvalidAuthenticationResponse as exc:
        raise PasskeyAssertionError("signature", str(exc)[:300]) from exc
    except Exception as exc:  # a malformed signature or key the library did not expect: refused, never raised
        raise PasskeyAssertionError("signature", f"the signature could not be verified ({type(exc).__name__})") from exc
    return VerifiedAssertion(passkey.principal, passkey.credential_id, verified.new_sign_count, verified.user_verified)


def verify_vote_assertion(
    assertion: PasskeyAssertion,
    passkey: EnrolledPasskey,
    *,
    request_digest: str,
    choice: VoteChoice | str,
) -> VerifiedAssertion:
    """A vote's assertion: user verification required, the challenge derived from the vote it signs."""
    challenge = vote_challenge(request_digest, choice, assertion.nonce)
    return verify_assertion(assertion, passkey, challenge, require_user_verification=True)


def _client_data(raw: bytes) -> dict[str, object]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # nested past the parser's recursion
        raise PasskeyAssertionError("malformed", "clientDataJSON is not JSON") from exc
    if not isinstance(data, dict):
        raise PasskeyAssertionError("malformed", "clientDataJSON is not a JSON object")
    return data
