"""Hardening found in review: every fix here has a test that fails without it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from approvals.domain import Requirements
from approvals.domain.directory import Directory
from approvals.domain.request_state import on_ballot
from approvals.domain.tally import Ballot
from approvals.service import MAX_REQUEST_BYTES, ApprovalsService
from approvals.settings import ApprovalsSettings
from atb_identity import TrustBundle, bundle_path, ensure_svid, sign_envelope
from atb_runtime import Incoming, Outgoing, outgoing
from audit_sink.domain import RecordMeta, RetentionPolicy, row_for
from contracts import (
    AccountableParty,
    ApprovalStateChanged,
    IssuanceRequested,
    LegitimateInterest,
    PoaIssued,
    Tier,
    VoteChoice,
    decode_envelope,
    encode_envelope,
    make_envelope,
    payload_of,
)
from contracts.agents import AgentRegistry, RegisteredAgent

AGENT = "spiffe://atb.local/agent/a"
DIRECTORY = Directory.from_mapping(json.loads((Path(__file__).parents[2] / "config" / "approvers.json").read_text()))


class _Policy:
    async def for_request(self, request: IssuanceRequested) -> Requirements:
        return Requirements(Tier.LOW, 0, False, (), 0, 300, "test")


class _Store:
    def record(self, state: ApprovalStateChanged) -> Outgoing:
        return outgoing(state, source="spiffe://atb.local/svc/approvals", namespace="")


def _service(tmp_path: Path) -> ApprovalsService:
    svid = ensure_svid(tmp_path, "spiffe://atb.local/svc/approvals")
    bundle = TrustBundle.load(bundle_path(tmp_path), "atb.local")
    agents = AgentRegistry((RegisteredAgent(AGENT, frozenset({"acme"})),))
    return ApprovalsService(ApprovalsSettings(), _Policy(), bundle, DIRECTORY, _Store(), svid, agents)  # type: ignore[arg-type]


def _request_record(tmp_path: Path, *, key: bytes | None = None, params: dict[str, object] | None = None) -> Incoming:
    svid = ensure_svid(tmp_path, AGENT)
    request = IssuanceRequested(
        request_id="req-1",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.read",
        resource="crm:contact/1",
        params=params or {},  # type: ignore[arg-type]
        leg=LegitimateInterest(ref="LI", jurisdiction="US", accountable_party=AccountableParty(type="e", id="e1")),
        requested_at=datetime.now(UTC),
    )
    value = encode_envelope(sign_envelope(make_envelope(request, source=AGENT), svid))
    return Incoming("atb.poa.requests", 0, 7, b"req-1" if key is None else key, value)


def _codes(out: list[Outgoing]) -> list[str]:
    codes = []
    for record in out:
        payload = payload_of(decode_envelope(record.value))
        codes.append(getattr(payload, "error_code", None) or type(payload).__name__)
    return codes


async def test_a_valid_low_request_gets_its_quorum(tmp_path: Path) -> None:
    out = await _service(tmp_path).handle([_request_record(tmp_path)])
    assert "QuorumReached" in _codes(out)
    quorum = next(r for r in out if r.value is not None and b"quorum_reached" in r.value)
    assert decode_envelope(quorum.value).proof is not None  # outcomes are signed


async def test_an_oversize_request_is_dead_lettered_not_looped_on(tmp_path: Path) -> None:
    big = _request_record(tmp_path, params={"blob": "x" * (MAX_REQUEST_BYTES + 10)})
    out = await _service(tmp_path).handle([big])
    assert "oversize" in _codes(out)
    assert "QuorumReached" not in _codes(out)


async def test_a_record_keyed_by_something_else_is_dead_lettered(tmp_path: Path) -> None:
    out = await _service(tmp_path).handle([_request_record(tmp_path, key=b"other-key")])
    assert "key_mismatch" in _codes(out)
    assert "QuorumReached" not in _codes(out)


def test_a_stranger_s_vote_takes_no_room_in_the_state() -> None:
    ballot = Ballot(
        vote_id="v1",
        identity="spiffe://atb.local/agent/someone",
        choice=VoteChoice.APPROVE,
        digest="sha256:" + "a" * 64,
        received_at=datetime.now(UTC),
        channel="cli",
        vote_event="{}",
    )
    step = on_ballot(
        None, "req-9", ballot, directory=DIRECTORY, now=datetime.now(UTC), hold_seconds=300, decided_by="approvals"
    )
    assert step.state is None
    assert not step.changed
    assert step.audits[0].reason == "unknown_approver"


@pytest.mark.parametrize("spelling", ["emp\u200b-101", "\u0435mp-101", "emp 101", ""])
def test_invisible_or_look_alike_accountable_party_ids_are_refused(spelling: str) -> None:
    with pytest.raises(ValidationError):
        AccountableParty(type="employee", id=spelling)


def test_naive_times_are_refused_in_events() -> None:
    with pytest.raises(ValidationError):
        ApprovalStateChanged(request_id="r", status="held", updated_at=datetime(2026, 1, 1))


def test_audit_columns_are_bounded_and_nul_free() -> None:
    envelope = json.loads(
        encode_envelope(
            make_envelope(
                IssuanceRequested(
                    request_id="r",
                    agent_id=AGENT,
                    tenant="acme",
                    action="crm.contact.read",
                    resource="r",
                    leg=LegitimateInterest(
                        ref="LI", jurisdiction="US", accountable_party=AccountableParty(type="e", id="e")
                    ),
                    requested_at=datetime.now(UTC),
                ),
                source=AGENT,
            )
        )
    )
    envelope["subject"] = "s" * 1000
    envelope["source"] = "spiffe://atb.local/agent/\x00evil"
    raw = json.dumps(envelope).encode()
    row = row_for(
        RecordMeta("atb.poa.requests", 0, 1, None, raw, 0), recorded_at=datetime.now(UTC), retention=RetentionPolicy()
    )
    assert row.raw == raw
    assert row.producer is not None
    assert "\x00" not in row.producer
    assert row.request_id is not None
    assert len(row.request_id) <= 255


def test_the_audit_store_keeps_a_poa_without_its_token() -> None:
    issued = PoaIssued(
        request_id="r",
        jti="j" * 32,
        kid="k",
        agent_id=AGENT,
        action="crm.contact.read",
        tier=Tier.LOW,
        issued_at=datetime.now(UTC),
        expires_at=datetime.now(UTC),
        token="eyJhbGciOiJFZERTQSJ9.e30.c2lnbmF0dXJl",
        token_sha256="sha256:" + "c" * 64,
    )
    raw = encode_envelope(make_envelope(issued, source="spiffe://atb.local/svc/issuer"))
    row = row_for(
        RecordMeta("atb.poa.issued", 0, 1, b"r", raw, 0), recorded_at=datetime.now(UTC), retention=RetentionPolicy()
    )
    assert row.redacted
    assert b"c2lnbmF0dXJl" not in row.raw
    assert b"sha256:" + b"c" * 64 in row.raw
    assert row.received_sha256 == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert payload_of(decode_envelope(row.raw)).event_type == PoaIssued.event_type
