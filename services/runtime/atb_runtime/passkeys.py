"""The console's passkeys as a verifier sees them, from atb.keys: enrolled and not removed (a removal is final).

The console announces each credential it enrolls (`PasskeyEnrolled`, keyed
`passkey:<credential id>`) and each one it removes (`PasskeyRevoked`, keyed
`passkey-revoked:<credential id>`, so compaction keeps it). A verifier of console
votes (approvals, the issuer) puts an enrolled credential's public key in force
and takes it out for good on its removal: an enrollment of a removed credential
read later (a replay of the console's announcement) does not bring it back. Only
the console's own proof makes an announcement count
(`passkey_rules`, checked by the follower with `ProofCheck`): any other producer's
is refused with an audit event and dead-lettered, and changes nothing.

The console's proof is not enough for an enrollment: a console on its own could
otherwise enroll a key of its own for an approver. A `PasskeyEnrolled` counts only
with the enrollment officer's grant inside it (`EnrollmentGrants`: the grant's
signature by its officer's SVID, then `contracts.passkey_grants`). One grant
enrolls one credential: a second credential with the same grant burns it, and
neither counts from then on (`PasskeyRegistry.get`). A refused announcement is
audited (`passkey_announcement_refused`) and dead-lettered.

`console_vote_refusal` is the rule both apply to a vote: a vote from the console
(its channel, or vouched for by a passkey announcer) on a high or critical
request, or on one whose tier is not known, needs an assertion; any assertion
present is verified, whatever the tier: by a credential in force, enrolled for the
same person as the vote's approver (the approver directory), over the vote's
request digest and decision (`atb_identity.passkey.verify_vote_assertion`).

`delegation_refusal` is the rule both apply to a delegation grant the console made
for a delegator who signed it with their passkey: proven by a passkey announcer,
it counts only with the delegator's assertion over `delegation_challenge`, by a
credential in force that is the delegator's. (A grant proven by the delegator's
own SVID needs none.) The counter is not checked against later use: the grant is
checked again with every on-behalf vote, long after the delegator's later
assertions; the challenge binds every term of the grant, so a replay is the same
grant.

`accepted` remembers the highest signature counter a verifier accepted per
credential, so `get` hands `verify_vote_assertion` that counter: an assertion whose
counter did not go up (a replay, a cloned authenticator) is refused.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

from atb_identity import IdentityError, TrustBundle, verify_origin
from atb_identity.passkey import (
    EnrolledPasskey,
    PasskeyAssertionError,
    b64url_decode,
    verify_assertion,
    verify_vote_assertion,
)
from atb_runtime.follow import FollowerDeadLetters, Refused, TopicFollower
from atb_runtime.proofs import ProofCheck, ProofRules
from atb_runtime.records import audit
from contracts import Envelope, EventDecodeError, EventPayload, Tier, Topic, VoteCast, decode_envelope, payload_of
from contracts.approval_events import DelegationGranted, VoteOnBehalf, delegation_challenge
from contracts.console_events import PasskeyEnrolled, PasskeyEnrollmentGranted, PasskeyRevoked, VoteCastV2
from contracts.directory import Directory
from contracts.passkey_grants import DEFAULT_ENROLLER_GROUPS, GrantUses, judge_grant
from contracts.reasons import Reason, ReasonCode

__all__ = [
    "CONSOLE",
    "STEP_UP_TIERS",
    "AnnouncementCheck",
    "EnrollmentGrants",
    "PasskeyFollower",
    "PasskeyRegistry",
    "console_vote_refusal",
    "delegation_refusal",
    "on_behalf_proof_refusal",
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
    """Credential id → the passkey in force (enrolled and never removed), and the last counter accepted."""

    def __init__(self) -> None:
        self._enrolled: dict[str, PasskeyEnrolled] = {}
        self._revoked: set[str] = set()
        """Removed credentials: a removal is final."""
        self._counters: dict[str, int] = {}
        self.grants = GrantUses()
        """Which credentials each enrollment grant enrolled (`EnrollmentGrants` records them)."""

    def apply(self, event: EventPayload) -> None:
        """Take one announcement (already proven); anything else on the keys topic is not a passkey: ignored."""
        if isinstance(event, PasskeyEnrolled):
            if event.credential_id not in self._revoked:
                self._enrolled[event.credential_id] = event
        elif isinstance(event, PasskeyRevoked):
            self._revoked.add(event.credential_id)
            self._enrolled.pop(event.credential_id, None)

    async def take(self, events: Sequence[EventPayload]) -> None:
        """A follower's sink: every event of a fetch, in order."""
        for event in events:
            self.apply(event)

    def get(self, credential_id: str) -> EnrolledPasskey | None:
        """The credential in force, with the highest counter seen (enrolled or accepted); None if unknown or revoked."""
        event = self._enrolled.get(credential_id)
        if event is None or self.grants.burnt(credential_id):
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


class EnrollmentGrants:
    """Judges the grant inside each enrollment announcement, and records its use in the registry."""

    def __init__(
        self,
        registry: PasskeyRegistry,
        bundle: TrustBundle,
        directory: Directory,
        enroller_groups: Collection[str] = DEFAULT_ENROLLER_GROUPS,
    ) -> None:
        self._registry = registry
        self._bundle = bundle
        self._directory = directory
        self._groups = frozenset(enroller_groups)

    def grant_of(self, enrolled: PasskeyEnrolled) -> PasskeyEnrollmentGranted | Reason:
        """The grant inside the announcement, proven by its officer's own SVID; or why there is none."""
        if enrolled.grant is None:
            return Reason(
                ReasonCode.PASSKEY_GRANT_MISSING, "no enrollment officer's grant: a console alone enrolls no one"
            )
        try:
            envelope = decode_envelope(enrolled.grant.encode())
            grant = payload_of(envelope)
        except EventDecodeError as exc:
            return Reason(ReasonCode.PASSKEY_GRANT_INVALID, f"the grant does not decode: {exc.reason}")
        if not isinstance(grant, PasskeyEnrollmentGranted):
            return Reason(ReasonCode.PASSKEY_GRANT_INVALID, f"the grant is a {type(grant).__name__}")
        try:
            verify_origin(envelope, grant.granted_by, self._bundle, attesters=(), at=grant.granted_at)
        except IdentityError as exc:
            return Reason(ReasonCode.PASSKEY_GRANT_INVALID, f"the grant is not proven by {grant.granted_by}: {exc}")
        return grant

    def check(self, enrolled: PasskeyEnrolled) -> Reason | None:
        """Why the announcement must not count (see the module), or None; a counting one uses its grant."""
        grant = self.grant_of(enrolled)
        if isinstance(grant, Reason):
            return grant
        refusal = judge_grant(enrolled, grant, directory=self._directory, enroller_groups=self._groups)
        if refusal is not None:
            return refusal
        return self._registry.grants.use(grant.grant_id, enrolled.credential_id)


class AnnouncementCheck:
    """The keys-topic follower's check: the console's proof (`passkey_rules`), then, for an enrollment,
    its officer's grant (`EnrollmentGrants`); a refusal carries its audit event."""

    def __init__(
        self,
        registry: PasskeyRegistry,
        bundle: TrustBundle,
        directory: Directory,
        *,
        source: str,
        namespace: str,
        consumer: str,
        enroller_groups: Collection[str] = DEFAULT_ENROLLER_GROUPS,
        consoles: Sequence[str] = (CONSOLE,),
    ) -> None:
        rules = passkey_rules(consoles)
        self._proofs = ProofCheck(bundle, rules, source=source, namespace=namespace, consumer=consumer)
        self._grants = EnrollmentGrants(registry, bundle, directory, enroller_groups)
        self._source = source
        self._namespace = namespace
        self._consumer = consumer

    def __call__(self, envelope: Envelope, payload: EventPayload) -> Refused | None:
        refused = self._proofs(envelope, payload)
        if refused is not None or not isinstance(payload, PasskeyEnrolled):
            return refused
        reason = self._grants.check(payload)
        if reason is None:
            return None
        record = audit(
            ReasonCode.PASSKEY_ANNOUNCEMENT_REFUSED,
            source=self._source,
            namespace=self._namespace,
            outcome="denied",
            reason=str(reason)[:1024],
            details={
                "rule": reason.code.value,
                "principal": payload.principal,
                "credential_id": payload.credential_id[:256],
                "consumer": self._consumer,
            },
        )
        return Refused(reason.code.value, reason.detail, (record,))


class PasskeyFollower:
    """Reads the keys topic from its start into a registry, through `AnnouncementCheck`."""

    def __init__(
        self,
        registry: PasskeyRegistry,
        bundle: TrustBundle,
        bootstrap: str,
        namespace: str,
        *,
        source: str,
        consumer: str,
        directory: Directory,
        enroller_groups: Collection[str] = DEFAULT_ENROLLER_GROUPS,
        consoles: Sequence[str] = (CONSOLE,),
        dead_letters: FollowerDeadLetters | None = None,
    ) -> None:
        check = AnnouncementCheck(
            registry,
            bundle,
            directory,
            source=source,
            namespace=namespace,
            consumer=consumer,
            enroller_groups=enroller_groups,
            consoles=consoles,
        )
        self._follower = TopicFollower(
            bootstrap,
            namespace,
            (Topic.KEYS,),
            registry.take,
            name=consumer,
            dead_letters=dead_letters,
            check=check,
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
    assertion = vote.assertion if isinstance(vote, (VoteCastV2, VoteOnBehalf)) else None
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


def delegation_refusal(
    grant: DelegationGranted,
    *,
    proven_by: str,
    registry: PasskeyRegistry,
    directory: Directory,
    announcers: Collection[str],
) -> str | None:
    """Why a grant proven by `proven_by` is not the delegator's own act (see the module), or None."""
    if proven_by == grant.delegator:
        return None
    if proven_by not in announcers:
        return f"proof is by {proven_by}, which is neither the delegator nor a passkey announcer"
    assertion = grant.assertion
    if assertion is None:
        return "a grant made in the console needs the delegator's passkey assertion"
    passkey = registry.get(assertion.credential_id)
    if passkey is None:
        return f"credential {assertion.credential_id[:64]} is not enrolled, or was revoked"
    if not directory.same_person(passkey.principal, grant.delegator):
        return f"credential {assertion.credential_id[:64]} is {passkey.principal}'s, not {grant.delegator}'s"
    try:
        verify_assertion(assertion, replace(passkey, sign_count=0), delegation_challenge(grant, assertion.nonce))
    except PasskeyAssertionError as exc:
        return exc.reason
    return None


def on_behalf_proof_refusal(vote: VoteOnBehalf, *, proven_by: str, announcers: Collection[str]) -> str | None:
    """Why an on-behalf vote's proof is not its delegate's act, or None.

    It is signed by the delegate's own SVID, or it comes from the console (a passkey announcer) with the
    delegate's passkey assertion, which `console_vote_refusal` verifies for `approver_id` whatever the tier.
    No other attester may vouch for it.
    """
    if proven_by == vote.approver_id:
        return None
    if proven_by in announcers and vote.assertion is not None:
        return None
    return "an on-behalf vote is signed by its delegate, or cast in the console with the delegate's passkey"
