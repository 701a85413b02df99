"""atb_runtime.passkeys: an enrolled credential is in force until its removal, for good; only the console may
announce."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from atb_identity import ClaimNotProvenError, TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_identity.passkey import b64url
from atb_runtime.passkeys import CONSOLE, PasskeyRegistry, passkey_rules
from contracts import make_envelope
from contracts.approval_events import DelegationRevoked
from contracts.console_events import PasskeyEnrolled, PasskeyRevoked
from tests.unit.test_passkey import ORIGIN, RP_ID, SoftAuthenticator

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _enrolled(device: SoftAuthenticator, principal: str = "alice", *, sign_count: int = 0) -> PasskeyEnrolled:
    return PasskeyEnrolled(
        principal=principal,
        credential_id=device.credential_id,
        public_key=b64url(device.enrolled().public_key),
        sign_count=sign_count,
        rp_id=RP_ID,
        origins=(ORIGIN,),
        user_verified=True,
        enrolled_at=NOW,
    )


def _revoked(device: SoftAuthenticator) -> PasskeyRevoked:
    return PasskeyRevoked(principal="alice", credential_id=device.credential_id, revoked_by="alice", revoked_at=NOW)


def test_an_enrolled_credential_is_in_force_until_its_removal_which_is_final() -> None:
    device, other = SoftAuthenticator(), SoftAuthenticator()
    registry = PasskeyRegistry()
    assert registry.get(device.credential_id) is None
    registry.apply(_enrolled(device))
    registry.apply(_enrolled(other, "bob"))
    passkey = registry.get(device.credential_id)
    assert passkey is not None
    assert (passkey.principal, passkey.public_key, passkey.rp_id, passkey.origins) == (
        "alice",
        device.enrolled().public_key,
        RP_ID,
        (ORIGIN,),
    )
    registry.apply(_revoked(device))
    assert registry.get(device.credential_id) is None
    assert registry.get(other.credential_id) is not None  # another credential is untouched
    # The console's announcement published again after the removal (a replay by anyone who may write to the
    # keys topic; once compaction kept only the latest record per key, it could even be the only one read):
    # a removed credential stays removed. A new enrollment is a new credential, with an id of its own.
    registry.apply(_enrolled(device))
    registry.apply(_enrolled(device, "carol"))
    assert registry.get(device.credential_id) is None


def test_the_counter_is_the_highest_of_enrolled_and_accepted() -> None:
    device = SoftAuthenticator()
    registry = PasskeyRegistry()
    registry.apply(_enrolled(device, sign_count=4))
    registry.accepted(device.credential_id, 2)  # lower than enrolled: no change
    assert registry.get(device.credential_id).sign_count == 4  # type: ignore[union-attr]
    registry.accepted(device.credential_id, 9)
    registry.accepted(device.credential_id, 7)  # never goes back
    assert registry.get(device.credential_id).sign_count == 9  # type: ignore[union-attr]


def test_other_events_of_the_keys_topic_are_ignored() -> None:
    device = SoftAuthenticator()
    registry = PasskeyRegistry()
    registry.apply(_enrolled(device))
    alice = "spiffe://atb.local/user/alice"
    revoked = DelegationRevoked(delegation_id="dlg-1", delegator=alice, revoked_by=alice, revoked_at=NOW)
    registry.apply(revoked)
    assert registry.get(device.credential_id) is not None


@pytest.mark.parametrize("by", [CONSOLE, "spiffe://atb.local/svc/chat"])
def test_only_the_consoles_own_proof_makes_an_announcement_count(tmp_path: Path, by: str) -> None:
    envelope = sign_envelope(make_envelope(_enrolled(SoftAuthenticator()), source=by), ensure_svid(tmp_path, by))
    bundle = TrustBundle.load(bundle_path(tmp_path), "atb.local")
    rules = passkey_rules()
    if by == CONSOLE:
        rules.verify(envelope, _enrolled(SoftAuthenticator()), bundle, at=datetime.now(UTC))
    else:
        with pytest.raises(ClaimNotProvenError):
            rules.verify(envelope, _enrolled(SoftAuthenticator()), bundle, at=datetime.now(UTC))
