"""The console's passkeys as a verifier sees them: the latest announcement per credential, from atb.keys.

The console announces each credential it enrolls (`PasskeyEnrolled`) and each one
it removes (`PasskeyRevoked`), keyed by `passkey:<credential id>`. A verifier of
console votes (approvals, the issuer) keeps, per credential, the latest of those
records: an enrolment puts the credential's public key in force, a revocation
removes it. Only the console's own proof makes an announcement count
(`passkey_rules`, checked by the follower with `ProofCheck`): any other producer's
is refused with an audit event and dead-lettered, and changes nothing.

`console_vote_refusal` is the rule both apply to a vote: a vote from the console
(its channel, or vouched for by a passkey announcer) on a high or critical
request, or on one whose tier is not known, needs an assertion; any assertion
present is verified, whatever the tier: by a credential in force, enrolled for the
same person as the vote's approver (the approver directory), over the vote's
request digest and decision (`atb_identity.passkey.verify_vote_assertion`).

`accepted` remembers the highest signature counter a verifier accepted per
credential, so `get` hands `verify_vote_assertion` that counter: an assertion whose
counter did not go up (a replay, a cloned authenticator) is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from atb_identity import IdentityError, TrustBundle
from atb_identity.passkey import EnrolledPasskey, PasskeyAssertionError, b64url_decode, verify_vote_assertion
from atb_runtime.follow import FollowerDeadLetters, TopicFollower
from atb_runtime.proofs import ProofCheck, ProofRules
from contracts import EventPayload, Tier, Topic, VoteCast
from contracts.approval_events import VoteOnBehalf
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked, VoteCastV2
from contracts.directory import Directory

__all__ = [
    "CONSOLE",
    "STEP_UP_TIERS",
    "PasskeyFollower",
    "PasskeyRegistry",
    "console_vote_refusal",
    "passkey_rules",
]

CONSOLE = "spiffe://atb.local/svc/console"
"""The console's SVID: the only producer of passkey announcements by default."""
STEP_UP_TIERS = frozenset({Tier.HIGH, Tier.CRITICAL})
"""Tiers on which a console vote counts only with the approver's verified passkey assertion."""


def passkey_rules(consoles: Sequence[str] = (CONSOLE,)) -> ProofRules:
    """Only the console (its own proof, no attester) may announce or revoke a passkey."""
    allowed = frozenset(consoles)
    return ProofRules({PasskeyEnrolled: allowed, PasskeyRevoked: allowed})


class PasskeyRegistry:
    """Credential id → the passkey in force (the latest announcement), and the last counter accepted."""

    def __init__(self) -> None:
        self._enrolled: dict[str, PasskeyEnrolled] = {}
        self._counters: dict[str, int] = {}

    def apply(self, event: EventPayload) -> None:
        """Take one announcement (already proven); anything else on the keys topic is not a passkey: ignored."""
        if isinstance(event, PasskeyEnrolled):
            self._enrolled[event.credential_id] = event
        elif isinstance(event, PasskeyRevoked):
            self._enrolled.pop(event.credential_id, None)

    async def take(self, events: Sequence[EventPayload]) -> None:
        """A follower's sink: every event of a fetch, in order."""
        for event in events:
            self.apply(event)

    def get(self, credential_id: str) -> EnrolledPasskey | None:
        """The credential in force, with the highest counter seen (enrolled or accepted); None if unknown or revoked."""
        event = self._enrolled.get(credential_id)
        if event is None:
            return None
        try:
            public_key = b64url_decode(event.public_key, "public key")
        except IdentityError:
            return None
        return EnrolledPasskey(
            principal=event.principal,
            credential_id=event.credential_id,
            public_key=public_key,
            rp_id=event.rp_id,
            origins=tuple(event.origins),
            sign_count=max(event.sign_count, self._counters.get(credential_id, 0)),
        )

    def accepted(self, credential_id: str, sign_count: int) -> None:
        """An assertion by this credential with this counter was accepted: no lower or equal counter is, from now on."""
        if sign_count > self._counters.get(credential_id, 0):
            self._counters[credential_id] = sign_count


class PasskeyFollower:
    """Reads the keys topic from its start into a registry; announcements not proven by the console are refused."""

    def __init__(
        self,
        registry: PasskeyRegistry,
        bundle: TrustBundle,
        bootstrap: str,
        namespace: str,
        *,
        source: str,
        consumer: str,
        consoles: Sequence[str] = (CONSOLE,),
        dead_letters: FollowerDeadLetters | None = None,
    ) -> None:
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            (Topic.KEYS,),
            registry.take,
            name=consumer,
            dead_letters=dead_letters,
            check=ProofCheck(bundle, passkey_rules(consoles), source=source, namespace=namespace, consumer=consumer),
        )

    async def start(self) -> None:
        """Read the passkeys announced so far before the service judges any vote, then follow on."""
        await self._follower.start(catch_up=True)

    async def stop(self) -> None:
        await self._follower.stop()


def console_vote_refusal(
    vote: VoteCast | VoteOnBehalf | VoteCastV2,
    *,
    proven_by: str,
    tier: Tier | None,
    registry: PasskeyRegistry,
    directory: Directory,
    announcers: Collection[str],
    counters: Mapping[str, int] | None = None,
) -> str | None:
    """Why a vote's passkey assertion does not make it count (see the module), or None.

    `tier` None: the request is not known yet, so the assertion is required (fail closed).
    `counters`: per credential, a counter the assertion's must exceed besides the registry's.
    """
    assertion = vote.assertion if isinstance(vote, VoteCastV2) else None
    if assertion is None:
        if vote.channel != "console" and proven_by not in announcers:
            return None
        if tier is not None and tier not in STEP_UP_TIERS:
            return None
        shown = tier.value if tier is not None else "not yet known"
        return f"a console vote on a request whose tier is {shown} needs the approver's passkey assertion"
    passkey = registry.get(assertion.credential_id)
    if passkey is None:
        return f"credential {assertion.credential_id[:64]} is not enrolled, or was revoked"
    if not directory.same_person(passkey.principal, vote.approver_id):
        return f"credential {assertion.credential_id[:64]} is {passkey.principal}'s, not {vote.approver_id}'s"
    seen = (counters or {}).get(assertion.credential_id, 0)
    if seen > passkey.sign_count:
        passkey = replace(passkey, sign_count=seen)
    try:
        verify_vote_assertion(assertion, passkey, request_digest=vote.request_digest, choice=vote.choice)
    except PasskeyAssertionError as exc:
        return exc.reason
    return None
