"""The console's passkeys as a verifier sees them: the latest announcement per credential, from atb.keys.

The console announces each credential it enrolls (`PasskeyEnrolled`) and each one
it removes (`PasskeyRevoked`), keyed by `passkey:<credential id>`. A verifier of
console votes (approvals, the issuer) keeps, per credential, the latest of those
records: an enrolment puts the credential's public key in force, a revocation
removes it. Only the console's own proof makes an announcement count
(`passkey_rules`, checked by the follower with `ProofCheck`): any other producer's
is refused with an audit event and dead-lettered, and changes nothing.

`accepted` remembers the highest signature counter a verifier accepted per
credential, so `get` hands `verify_vote_assertion` that counter: an assertion whose
counter did not go up (a replay, a cloned authenticator) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from atb_identity import IdentityError, TrustBundle
from atb_identity.passkey import EnrolledPasskey, b64url_decode
from atb_runtime.follow import FollowerDeadLetters, TopicFollower
from atb_runtime.proofs import ProofCheck, ProofRules
from contracts import EventPayload, Topic
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked

__all__ = ["CONSOLE", "PasskeyFollower", "PasskeyRegistry", "passkey_rules"]

CONSOLE = "spiffe://atb.local/svc/console"
"""The console's SVID: the only producer of passkey announcements by default."""


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
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
