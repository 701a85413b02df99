"""Delegations the console reads on the keys topic (`ConsoleService.delegation_seen`).

A grant made with `atb delegate grant` is signed by the delegator's own SVID; one
made in another console replica by the console's SVID with the delegator's
passkey assertion. The console keeps those (its delegates then see them on
/delegations and may approve in the delegator's place) and refuses, keeping
nothing, a grant or revocation proven by anyone else. Real dev PKI, real
signatures, a SQLite store. The follower that feeds it from Kafka is
tests/integration/test_console_delegations.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atb_identity import Svid, ensure_svid, sign_envelope
from atb_runtime.follow import Refused
from atb_runtime.identity import load_bundle
from console.adapters.store import ConsoleStore
from console.service import ConsoleService
from console.settings import ConsoleSettings
from contracts import AccountableParty, ApprovalRequired, ApprovalStateChanged, Envelope, Tier, digest_of, make_envelope
from contracts.approval_events import DelegationGranted, DelegationRevoked
from contracts.directory import Directory
from tests.unit.test_console_http import ORIGIN, RP_ID, Recorder, _request

ALICE, BOB, DAVE = "spiffe://atb.local/user/alice", "spiffe://atb.local/user/bob", "spiffe://atb.local/user/dave"


@dataclass
class Desk:
    service: ConsoleService
    store: ConsoleStore
    state: Path
    console: str

    def svid(self, spiffe_id: str) -> Svid:
        return ensure_svid(self.state, spiffe_id)

    def signed(self, event: DelegationGranted | DelegationRevoked, by: str) -> Envelope:
        return sign_envelope(make_envelope(event, source=by), self.svid(by))

    def seen(self, event: DelegationGranted | DelegationRevoked, by: str) -> Refused | None:
        envelope = self.signed(event, by)
        return self.service.delegation_seen(envelope, event)


def _grant(delegation_id: str, delegator: str = ALICE, delegate: str = DAVE, **kw: object) -> DelegationGranted:
    now = datetime.now(UTC).replace(microsecond=0)
    fields: dict[str, object] = {
        "delegation_id": delegation_id,
        "delegator": delegator,
        "delegate": delegate,
        "tiers": (Tier.HIGH,),
        "not_before": now - timedelta(minutes=1),
        "until": now + timedelta(days=2),
        "reason": "on leave",
        "granted_at": now - timedelta(seconds=5),
        **kw,
    }
    return DelegationGranted.model_validate(fields)


def _revoked(delegation_id: str, delegator: str = ALICE, revoked_by: str = ALICE) -> DelegationRevoked:
    return DelegationRevoked(
        delegation_id=delegation_id,
        delegator=delegator,
        revoked_by=revoked_by,
        reason="back",
        revoked_at=datetime.now(UTC) - timedelta(seconds=1),
    )


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    settings = ConsoleSettings(
        state_dir=tmp_path, console_rp_id=RP_ID, console_origin=ORIGIN, console_db_path=tmp_path / "c.db"
    )
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url())
    svid = ensure_svid(tmp_path, settings.service_id)
    bundle = load_bundle(None, tmp_path, settings.trust_domain)
    service = ConsoleService(settings, directory, store, Recorder(), svid, bundle)
    yield Desk(service, store, tmp_path, settings.service_id)
    store.close()


async def test_a_grant_signed_by_its_delegator_is_listed_and_offers_the_delegate_the_vote(desk: Desk) -> None:
    # Accountable: someone else than alice and dave (dave is emp-200, the usual test request's).
    leg = _request().leg.model_copy(update={"accountable_party": AccountableParty(type="employee", id="emp-999")})
    request = _request().model_copy(update={"leg": leg})
    required = ApprovalRequired(
        request_id="req-1",
        tier=Tier.HIGH,
        required_approvals=2,
        eligible_groups=("manager",),
        ticket_required=False,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        request_digest=digest_of(request),
        agent_id=request.agent_id,
        action=request.action,
        resource=request.resource,
        accountable_party_id="emp-999",
    )
    state = ApprovalStateChanged(request_id="req-1", status="open", request=request, updated_at=datetime.now(UTC))
    await desk.service.on_events([required, state])
    assert desk.service.on_behalf_offers("dave", "req-1") == []

    grant = _grant("dlg-from-the-cli")
    assert desk.seen(grant, ALICE) is None
    [row] = desk.service.delegations("dave")
    assert (row.delegation_id, row.delegator, row.delegate, row.tiers) == ("dlg-from-the-cli", "alice", "dave", "high")
    assert [r.delegation_id for r in desk.service.delegations("alice")] == ["dlg-from-the-cli"]
    # The delegate's vote will carry the exact signed grant, which approvals and the issuer verify again.
    assert json.loads(row.grant_event)["proof"] is not None
    assert json.loads(row.grant_event)["data"]["delegation_id"] == "dlg-from-the-cli"
    assert desk.service.on_behalf_offers("dave", "req-1") == [("dlg-from-the-cli", "alice")]

    # Read again (a restart reads the topic from its start): kept once.
    assert desk.seen(grant, ALICE) is None
    assert len(desk.service.delegations("dave")) == 1

    # The delegator revokes it with `atb delegate revoke`: no longer offered.
    assert desk.seen(_revoked("dlg-from-the-cli"), ALICE) is None
    [row] = desk.service.delegations("dave")
    assert row.revoked_at is not None
    assert desk.service.on_behalf_offers("dave", "req-1") == []


def test_a_grant_proven_by_anyone_but_its_delegator_is_refused_and_not_kept(desk: Desk) -> None:
    refused = desk.seen(_grant("dlg-forged"), BOB)  # bob signs a grant in alice's name
    assert refused is not None
    assert refused.code == "delegation_unproven"
    assert f"proof is by {BOB}" in refused.reason
    # The console's own SVID vouches only together with the delegator's passkey assertion.
    bare = desk.seen(_grant("dlg-console-bare"), desk.console)
    assert bare is not None
    assert bare.code == "delegation_unproven"
    assert "passkey assertion" in bare.reason
    # Signed by its delegator, but for someone the directory does not know.
    stranger = desk.seen(_grant("dlg-stranger", delegate="spiffe://atb.local/user/mallory"), ALICE)
    assert stranger is not None
    assert stranger.code == "unknown_principal"
    assert desk.service.delegations("dave") == []
    assert desk.service.delegations("alice") == []


def test_a_revocation_counts_only_as_the_delegators_own_act(desk: Desk) -> None:
    assert desk.seen(_grant("dlg-kept"), ALICE) is None
    for event, by in ((_revoked("dlg-kept"), BOB), (_revoked("dlg-kept", revoked_by=BOB), BOB)):
        refused = desk.seen(event, by)
        assert refused is not None
        assert refused.code == "delegation_unproven"
    [row] = desk.service.delegations("dave")
    assert row.revoked_at is None
    # Published by the console on the delegator's behalf (its revoke button): it only takes power away.
    assert desk.seen(_revoked("dlg-kept"), desk.console) is None
    [row] = desk.service.delegations("dave")
    assert row.revoked_at is not None
    assert row.revoked_at <= time.time()


def test_a_revocation_read_before_its_grant_still_ends_it(desk: Desk) -> None:
    """The grant published again after its revocation (a replay): the console shows it revoked, never in force."""
    assert desk.seen(_revoked("dlg-replayed"), ALICE) is None
    assert desk.seen(_grant("dlg-replayed"), ALICE) is None
    [row] = desk.service.delegations("dave")
    assert row.revoked_at is not None


def test_events_dated_ahead_of_now_and_a_reused_id_are_refused(desk: Desk) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    ahead = desk.seen(_grant("dlg-ahead", granted_at=later), ALICE)
    assert ahead is not None
    assert (ahead.code, "dated ahead of now" in ahead.reason) == ("delegation_unproven", True)
    assert desk.seen(_grant("dlg-taken"), ALICE) is None
    revocation = _revoked("dlg-taken").model_copy(update={"revoked_at": later})
    refused = desk.seen(revocation, ALICE)  # approvals refuses it too: both show the delegation in force
    assert refused is not None
    assert refused.code == "delegation_unproven"
    # Bob, proven as himself, publishes a grant of his own under alice's delegation id: the id is taken.
    conflict = desk.seen(_grant("dlg-taken", delegator=BOB), BOB)
    assert conflict is not None
    assert conflict.code == "delegation_conflict"
    [row] = desk.service.delegations("dave")
    assert (row.delegator, row.revoked_at) == ("alice", None)


def test_a_store_that_fails_refuses_the_event_instead_of_stopping_the_follower(
    desk: Desk, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(row: object) -> bool:
        raise OSError("disk I/O error")

    monkeypatch.setattr(desk.store, "add_delegation", broken)
    refused = desk.seen(_grant("dlg-unkept"), ALICE)
    assert refused is not None
    assert (refused.code, refused.reason) == ("delegation_not_kept", "not kept: OSError")
