"""issuer.adapters.metrics: each PoA counts once in its own tier's series, and its wait is observed there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from contracts import AccountableParty, IssuanceRequested, LegitimateInterest, PoaIssued, QuorumReached, Tier, digest_of
from issuer.adapters.metrics import count_issued

AGENT = "spiffe://atb.example/agent/crm-bot"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def _pair(tier: Tier, waited: timedelta) -> tuple[QuorumReached, PoaIssued]:
    request = IssuanceRequested(
        request_id="req-m",
        agent_id=AGENT,
        tenant="acme",
        action="crm.contact.read",
        resource="crm:contact/1",
        leg=LegitimateInterest(ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="b")),
        requested_at=NOW - waited,
    )
    quorum = QuorumReached(
        request_id="req-m",
        tier=tier,
        required_approvals=0,
        request_digest=digest_of(request),
        poa_ttl_seconds=300,
        request=request,
        request_event="{}",
        votes=(),
        decided_at=NOW,
    )
    issued = PoaIssued(
        request_id="req-m",
        jti="j" * 32,
        kid="k",
        agent_id=AGENT,
        action="crm.contact.read",
        tier=tier,
        issued_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
        token="t",
        token_sha256="sha256:" + "0" * 64,
    )
    return quorum, issued


def _value(name: str, tier: Tier) -> float:
    return REGISTRY.get_sample_value(name, {"tier": tier.value}) or 0.0


@pytest.mark.parametrize("tier", list(Tier))
def test_each_poa_counts_in_its_tier_alone(tier: Tier) -> None:
    others = [t for t in Tier if t is not tier]
    before = {t: _value("atb_issuer_poas_issued_total", t) for t in Tier}
    waits = {t: _value("atb_issuer_request_to_poa_seconds_sum", t) for t in Tier}
    for _ in range(2):  # the second time through the tier's cached series
        quorum, issued = _pair(tier, timedelta(seconds=3))
        count_issued(quorum, issued, NOW)
    assert _value("atb_issuer_poas_issued_total", tier) == before[tier] + 2
    assert _value("atb_issuer_request_to_poa_seconds_sum", tier) == pytest.approx(waits[tier] + 6)
    for other in others:
        assert _value("atb_issuer_poas_issued_total", other) == before[other]
        assert _value("atb_issuer_request_to_poa_seconds_sum", other) == waits[other]
