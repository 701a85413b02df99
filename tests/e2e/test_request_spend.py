"""The broker spends single use per request as well as per jti (docs/scaling.md, defense in depth).

The issuer signs exactly one PoA per request; should a second, valid one ever exist
(a fencing failure, a replayed quorum), the broker must still allow the request's
action once. The test makes that second PoA the way such a failure would: the same
claims with a fresh `jti`, signed with the issuer's own key from its keyring.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import jwt
import pytest

from atb.sdk import AgentClient
from atb_identity import ensure_svid
from contracts import AccountableParty, Decision, LegitimateInterest, PoaClaims
from contracts.reasons import ReasonCode
from issuer.adapters.keyring import SigningKeyRing
from issuer.adapters.signer import PoaSigner
from tests.e2e.audit_sync import audit_rows
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/crm-assistant"
LEG = LegitimateInterest(ref="LI-RS", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="rs"))


def _twin(token: str, stack: RunningStack) -> str:
    """The same PoA with another jti, signed by the issuer's current key: a second PoA of one request."""
    claims = PoaClaims.model_validate(jwt.decode(token, options={"verify_signature": False}))
    twin = claims.model_copy(update={"jti": uuid.uuid4().hex})
    ring = SigningKeyRing.ensure(stack.state_dir / "issuer" / "keys")
    return PoaSigner(ring.current(datetime.now(UTC))).sign(twin)


async def test_a_second_poa_of_a_spent_request_is_refused_and_audited(running_stack: RunningStack) -> None:
    svid = ensure_svid(running_stack.state_dir, AGENT)
    async with AgentClient(
        svid=svid, tenant="acme", bootstrap=running_stack.kafka_bootstrap, namespace=running_stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/77", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        second = _twin(issued.token, running_stack)
        assert jwt.get_unverified_header(second)["kid"] == issued.kid
        # The twin alone is a perfectly valid PoA: presented first, it would be allowed.
        first = await agent.invoke("crm.contact.read", "crm:contact/77", poa=issued.token, request_id=request_id)
        again = await agent.invoke("crm.contact.read", "crm:contact/77", poa=second, request_id=request_id)
    assert first.decision is Decision.ALLOW, first.reasons
    assert again.decision is Decision.DENY
    assert again.codes == (ReasonCode.POA_REQUEST_ALREADY_SPENT,), again.reasons

    found = await audit_rows(
        running_stack.kafka_bootstrap,
        running_stack.namespace,
        running_stack.db_url,
        request_id,
        "poa_request_already_spent",
    )
    assert found, "the refusal is audited as poa_request_already_spent"
