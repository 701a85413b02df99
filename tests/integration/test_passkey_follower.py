"""The passkey follower on real Kafka: started, it has read every announcement already on atb.keys.

Approvals and the issuer start it before they judge any vote (`PasskeyFollower.start` catches up
to the end offsets of that moment), so a console vote is never refused for a passkey announced
before the service started. An announcement proven by anyone but the console is never in force
(its dead letter and audit, for records that arrive while following, are shown in
tests/service/test_console_votes.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from atb_identity import Svid, TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_identity.passkey import b64url
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.follow import follower_dead_letters
from atb_runtime.passkeys import CONSOLE, PasskeyFollower, PasskeyRegistry
from contracts import Topic, make_envelope, topic_name
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked
from contracts.directory import Directory
from tests.passkey_support import OFFICER
from tests.passkey_support import grant as passkey_grant
from tests.unit.test_passkey import ORIGIN, RP_ID, SoftAuthenticator

APPROVALS = "spiffe://atb.local/svc/approvals"
CHAT = "spiffe://atb.local/svc/chat"
DIRECTORY = Path(__file__).resolve().parents[2] / "config" / "approvers.json"


def _enrolled(device: SoftAuthenticator, principal: str, officer: Svid, *, grant: bool = True) -> PasskeyEnrolled:
    now = datetime.now(UTC)
    return PasskeyEnrolled(
        grant=passkey_grant(officer, principal, now) if grant else None,
        principal=principal,
        credential_id=device.credential_id,
        public_key=b64url(device.enrolled().public_key),
        sign_count=0,
        rp_id=RP_ID,
        origins=(ORIGIN,),
        user_verified=True,
        enrolled_at=now,
    )


async def test_started_the_follower_knows_every_passkey_announced_before(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    alice, bob, forged, ungranted = (SoftAuthenticator() for _ in range(4))
    keys = topic_name(Topic.KEYS, namespace)
    console, chat = ensure_svid(tmp_path, CONSOLE), ensure_svid(tmp_path, CHAT)
    officer = ensure_svid(tmp_path, OFFICER)
    revoked = PasskeyRevoked(
        principal="bob", credential_id=bob.credential_id, revoked_by="bob", revoked_at=datetime.now(UTC)
    )
    records = [
        sign_envelope(make_envelope(_enrolled(alice, "alice", officer), source=CONSOLE), console),
        sign_envelope(make_envelope(_enrolled(bob, "bob", officer), source=CONSOLE), console),
        sign_envelope(make_envelope(revoked, source=CONSOLE), console),
        sign_envelope(make_envelope(_enrolled(forged, "carol", officer), source=CHAT), chat),
        sign_envelope(make_envelope(_enrolled(ungranted, "dave", officer, grant=False), source=CONSOLE), console),
    ]
    async with Publisher(kafka_bootstrap, "passkey-announcer") as publisher:
        await publisher.publish([outgoing_envelope(r, keys) for r in records])
        await publisher.flush()

    bundle = TrustBundle.load(bundle_path(tmp_path), "atb.local")
    registry = PasskeyRegistry()
    async with Publisher(kafka_bootstrap, "passkey-letters") as letters:
        follower = PasskeyFollower(
            registry,
            bundle,
            kafka_bootstrap,
            namespace,
            source=APPROVALS,
            consumer="approvals-passkeys@0",
            directory=Directory.from_mapping(json.loads(DIRECTORY.read_text(encoding="utf-8"))),
            dead_letters=follower_dead_letters(
                "approvals", "passkeys", "0", source=APPROVALS, namespace=namespace, publish=letters.publish
            ),
        )
        await follower.start()
        try:
            # Right after start, without waiting: what was on the topic is in the registry.
            assert registry.get(alice.credential_id) is not None
            assert registry.get(bob.credential_id) is None  # revoked after it was enrolled
            assert registry.get(forged.credential_id) is None  # announced by chat: not in force
            assert registry.get(ungranted.credential_id) is None  # the console's, but no officer granted it
        finally:
            await follower.stop()
        await letters.flush()
