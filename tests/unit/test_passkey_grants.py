"""contracts.passkey_grants: the rule that makes an enrollment announcement count, one row per rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from contracts.console_events import PasskeyEnrolled, PasskeyEnrollmentGranted
from contracts.directory import Directory
from contracts.passkey_grants import MAX_GRANT_S, GrantUses, judge_grant, officer_refusal
from contracts.reasons import ReasonCode

DIRECTORY = Directory.from_mapping(
    json.loads((Path(__file__).resolve().parents[2] / "config" / "approvers.json").read_text(encoding="utf-8"))
)
T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
CAROL = "spiffe://atb.local/user/carol"  # security: an officer under the default groups


def _grant(principal: str = "bob", *, by: str = CAROL, seconds: float = 900) -> PasskeyEnrollmentGranted:
    return PasskeyEnrollmentGranted(
        grant_id="grant-1",
        principal=principal,
        granted_by=by,
        granted_at=T0,
        expires_at=T0 + timedelta(seconds=seconds),
    )


def _enrolled(principal: str = "bob", *, at: datetime = T0 + timedelta(seconds=60)) -> PasskeyEnrolled:
    return PasskeyEnrolled(
        principal=principal,
        credential_id="cred",
        public_key="pk",
        sign_count=0,
        rp_id="localhost",
        origins=("https://localhost",),
        user_verified=True,
        enrolled_at=at,
    )


@pytest.mark.parametrize(
    ("enrolled", "grant", "code"),
    [
        (_enrolled(), _grant(), None),
        (_enrolled("slack:UBOB0002"), _grant("emp-102"), None),  # one person, named by two identities
        (_enrolled(at=T0), _grant(), None),  # the window's ends count
        (_enrolled(at=T0 + timedelta(seconds=900)), _grant(), None),
        (_enrolled(), _grant("dave"), ReasonCode.PASSKEY_GRANT_INVALID),  # another person's grant
        (_enrolled(), _grant(seconds=MAX_GRANT_S + 1), ReasonCode.PASSKEY_GRANT_INVALID),  # too long a window
        (_enrolled(), _grant(seconds=0), ReasonCode.PASSKEY_GRANT_INVALID),  # an empty one
        (_enrolled(at=T0 - timedelta(seconds=1)), _grant(), ReasonCode.PASSKEY_GRANT_NOT_IN_FORCE),
        (_enrolled(at=T0 + timedelta(seconds=901)), _grant(), ReasonCode.PASSKEY_GRANT_NOT_IN_FORCE),
        (_enrolled(), _grant(by="spiffe://atb.local/user/alice"), ReasonCode.PASSKEY_ENROLLER_NOT_ALLOWED),  # a manager
        (_enrolled(), _grant(by="spiffe://atb.local/svc/console"), ReasonCode.PASSKEY_ENROLLER_NOT_ALLOWED),
        (_enrolled("carol"), _grant("carol"), None),  # an officer may enroll their own passkey
    ],
)
def test_judge_grant(enrolled: PasskeyEnrolled, grant: PasskeyEnrollmentGranted, code: ReasonCode | None) -> None:
    refusal = judge_grant(enrolled, grant, directory=DIRECTORY, enroller_groups=("security",))
    assert (refusal.code if refusal else None) == code, refusal


def test_the_enroller_groups_are_a_setting() -> None:
    assert officer_refusal(DIRECTORY, "spiffe://atb.local/user/bob", ("security",)) is not None
    assert officer_refusal(DIRECTORY, "spiffe://atb.local/user/bob", ("security", "compliance")) is None
    refusal = officer_refusal(DIRECTORY, CAROL, ())
    assert refusal is not None
    assert "none configured" in refusal.detail


def test_one_grant_enrolls_one_credential_and_a_second_burns_it_for_both() -> None:
    uses = GrantUses()
    assert uses.use("g1", "a") is None
    assert uses.use("g1", "a") is None  # the same credential announced again
    assert not uses.burnt("a")
    assert not uses.burnt("unknown")  # no grant recorded: the caller's admission decides
    refusal = uses.use("g1", "b")
    assert refusal is not None
    assert refusal.code is ReasonCode.PASSKEY_GRANT_USED
    assert uses.burnt("a")
    assert uses.burnt("b")
    assert uses.use("g2", "c") is None
    assert not uses.burnt("c")
