"""The console's contracts: passkey assertions on votes, the vote challenge, credential announcements.

- `PasskeyAssertion`: what a browser's `navigator.credentials.get()` returned for
  one vote (credential id, authenticatorData, clientDataJSON, signature), plus the
  console's nonce, so approvals and the issuer can re-verify it on their own
  (`atb_identity.passkey.verify_vote_assertion`).
- `vote_challenge`: the WebAuthn challenge of a vote, derived from the request
  digest, the decision and the nonce. An assertion over one request, or one
  decision, is therefore no assertion over any other.
- `VoteCastV2` (`atb.approvals.vote_cast.v2`): VoteCast with the `console`
  channel and an optional assertion.
- `PasskeyEnrollmentGranted`: an enrollment officer's one-time, short-lived
  permission for one directory principal to register a passkey, signed with the
  officer's own SVID (`atb console enroll <principal> --as <officer>`). It
  travels inside the `PasskeyEnrolled` it allows, so a console cannot enroll a
  passkey for anyone on its own (`contracts.passkey_grants`).
- `PasskeyEnrolled`, `PasskeyRevoked`: a credential's public key, keyed
  `passkey:<credential id>`, and its removal, keyed `passkey-revoked:<credential
  id>` so that compaction keeps it for good. A removal is final: an enrollment
  of a removed credential read later (a replay) does not bring it back.

Models and one hash: no I/O.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from contracts.events import EventPayload, RequestDigest, RequestId, VoteChoice
from contracts.topics import Topic

__all__ = [
    "CONSOLE_EVENT_TYPES",
    "VOTE_CHALLENGE_DOMAIN",
    "Base64Url",
    "PasskeyAssertion",
    "PasskeyEnrolled",
    "PasskeyEnrollmentGranted",
    "PasskeyRevoked",
    "VoteCastV2",
    "passkey_key",
    "passkey_revoked_key",
    "vote_challenge",
]

Base64Url = Annotated[str, Field(min_length=1, max_length=8192, pattern=r"^[A-Za-z0-9_-]+$")]
"""Unpadded base64url, as WebAuthn's JSON serialisation writes bytes."""
Nonce = Annotated[str, Field(min_length=22, max_length=86, pattern=r"^[A-Za-z0-9_-]+$")]
"""At least 16 random bytes, base64url."""
Principal = Annotated[str, Field(min_length=1, max_length=256)]

VOTE_CHALLENGE_DOMAIN = b"atb.console.vote.v1"
"""Separates vote challenges from every other use of a passkey (sign-in challenges are random)."""


def vote_challenge(request_digest: str, choice: VoteChoice | str, nonce: str) -> bytes:
    """The WebAuthn challenge for a vote: SHA-256 over the domain, the digest, the decision and the nonce.

    Each part is length-prefixed, so no two distinct triples give the same input.
    """
    h = hashlib.sha256(VOTE_CHALLENGE_DOMAIN)
    for part in (request_digest, str(VoteChoice(choice).value), nonce):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.digest()


def passkey_key(credential_id: str) -> str:
    """The Kafka key of a credential's enrollment."""
    return f"passkey:{credential_id}"


def passkey_revoked_key(credential_id: str) -> str:
    """The Kafka key of a credential's removal: its own, so that compaction keeps it whatever is published under
    the enrollment's key later (a replayed announcement cannot push a removal out of the compacted topic)."""
    return f"passkey-revoked:{credential_id}"


class PasskeyAssertion(BaseModel):
    """One WebAuthn assertion, as the browser returned it, and the console's nonce of the challenge."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    credential_id: Base64Url
    authenticator_data: Base64Url
    client_data_json: Base64Url
    signature: Base64Url
    user_handle: Base64Url | None = None
    nonce: Nonce
    """The console's nonce: the challenge is `vote_challenge(request_digest, choice, nonce)`."""


class VoteCastV2(EventPayload):
    """One approver's vote, bound to the digest of the exact request; from the console, device-bound.

    v1 plus the `console` channel and `assertion`: for a console vote on a high or
    critical request, the assertion of the approver's enrolled passkey over
    `vote_challenge(request_digest, choice, assertion.nonce)`.
    """

    event_type: ClassVar[str] = "atb.approvals.vote_cast.v2"
    topic: ClassVar[Topic] = Topic.VOTES

    request_id: RequestId
    vote_id: Annotated[str, Field(min_length=1, max_length=128)]
    approver_id: Annotated[str, Field(min_length=1, max_length=256)]
    choice: VoteChoice
    request_digest: RequestDigest
    channel: Literal["cli", "slack", "teams", "console"]
    cast_at: AwareDatetime
    reason: Annotated[str, Field(max_length=1024)] = ""
    assertion: PasskeyAssertion | None = None


class PasskeyEnrollmentGranted(EventPayload):
    """An enrollment officer lets `principal` register one passkey between `granted_at` and `expires_at`.

    Signed by the officer's own SVID (`granted_by`, no attester). Not published on its
    own: the console carries its envelope inside the `PasskeyEnrolled` it allows.
    """

    event_type: ClassVar[str] = "atb.console.passkey_enrollment_granted.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    grant_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]
    principal: Principal
    granted_by: Principal
    """The officer's SPIFFE ID: the identity that signs this event."""
    granted_at: AwareDatetime
    expires_at: AwareDatetime

    def partition_key(self) -> str:
        return f"passkey-grant:{self.grant_id}"


class PasskeyEnrolled(EventPayload):
    """A directory principal registered a passkey with the console: its COSE public key is in force."""

    event_type: ClassVar[str] = "atb.console.passkey_enrolled.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    principal: Principal
    credential_id: Base64Url
    public_key: Base64Url
    """The credential's COSE_Key (RFC 9052), base64url, as the authenticator attested it."""
    sign_count: Annotated[int, Field(ge=0)]
    rp_id: Annotated[str, Field(min_length=1, max_length=253)]
    origins: tuple[str, ...]
    user_verified: bool
    enrolled_at: AwareDatetime
    grant: Annotated[str, Field(max_length=16384)] | None = None
    """The signed `PasskeyEnrollmentGranted` envelope (JSON) that allowed this enrollment; without one,
    verifiers refuse the announcement."""

    def partition_key(self) -> str:
        return passkey_key(self.credential_id)


class PasskeyRevoked(EventPayload):
    """A credential is no longer in force: no assertion by it counts from `revoked_at` on."""

    event_type: ClassVar[str] = "atb.console.passkey_revoked.v1"
    topic: ClassVar[Topic] = Topic.KEYS

    principal: Principal
    credential_id: Base64Url
    revoked_by: Annotated[str, Field(min_length=1, max_length=256)]
    reason: Annotated[str, Field(max_length=1024)] = ""
    revoked_at: AwareDatetime

    def partition_key(self) -> str:
        return passkey_revoked_key(self.credential_id)


CONSOLE_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls for cls in (VoteCastV2, PasskeyEnrollmentGranted, PasskeyEnrolled, PasskeyRevoked)
}
"""The console's event types, by CloudEvents `type` (to be merged into `contracts.events.EVENT_TYPES`)."""
