"""The broker trusts a verification key only from the issuer (found by the hostile-traffic soak).

Anyone who can write to `atb.keys` could otherwise add a key of their own and sign PoAs
with it. The issuer signs its SigningKeyPublished envelopes with its SVID
(issuer/adapters/announce.py); the broker's key follower dead-letters and audits a key
event proven by anybody else, or by nobody, and a PoA signed with such a key is refused
as signed by an unknown key. The issuer's own keys keep working (key rotation is
tested in test_approvals.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from atb.sdk import AgentClient
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from audit_sink.adapters.db import AuditStore, audit_events, make_engine
from contracts import (
    AccountableParty,
    DeadLetter,
    Decision,
    LegitimateInterest,
    PoaClaims,
    SigningKeyPublished,
    Topic,
    make_envelope,
    topic_name,
)
from contracts.console_events import PasskeyEnrolled, passkey_key
from contracts.reasons import ReasonCode
from issuer.adapters.keys import load_or_create_key
from issuer.adapters.signer import PoaSigner
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/crm-assistant"
ISSUER = "spiffe://atb.local/svc/issuer"
LEG = LegitimateInterest(ref="LI-KT", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="kt"))


def _key_event(kid: str, jwk: dict[str, str]) -> SigningKeyPublished:
    return SigningKeyPublished(kid=kid, alg="EdDSA", jwk=jwk, issuer=ISSUER, not_before=datetime.now(UTC))


async def _letters_for(store: AuditStore, kids: set[str], timeout: float = 30.0) -> set[str]:
    """The forged kids that the broker's key follower dead-lettered (by the letter's key)."""
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while found != kids and time.monotonic() < deadline:
        for kid in kids - found:
            rows = await asyncio.to_thread(store.for_request, kid)
            if any(r.event_type == DeadLetter.event_type and b'"consumer":"broker-keys@0"' in r.raw for r in rows):
                found.add(kid)
        if found != kids:
            await asyncio.sleep(0.3)
    return found


async def test_a_key_not_published_by_the_issuer_is_refused(running_stack: RunningStack, tmp_path: Path) -> None:
    stack = running_stack
    agent_svid = ensure_svid(stack.state_dir, AGENT)
    forged = load_or_create_key(tmp_path / "forged.pem")
    unsigned_kid, agent_kid = f"u{uuid.uuid4().hex[:10]}", forged.kid
    keys_topic = topic_name(SigningKeyPublished.topic, stack.namespace)
    by_agent = sign_envelope(make_envelope(_key_event(agent_kid, forged.jwk), source=AGENT), agent_svid)
    unsigned = make_envelope(_key_event(unsigned_kid, forged.jwk), source=ISSUER)
    async with Publisher(stack.kafka_bootstrap, "key-forger") as publisher:
        await publisher.publish([outgoing_envelope(by_agent, keys_topic), outgoing_envelope(unsigned, keys_topic)])
        await publisher.flush()

    store = AuditStore(make_engine(stack.db_url), "reader")
    assert await _letters_for(store, {agent_kid, unsigned_kid}) == {agent_kid, unsigned_kid}

    async with AgentClient(
        svid=agent_svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/91", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        claims = PoaClaims.model_validate(jwt.decode(issued.token, options={"verify_signature": False}))
        # The same claims, signed with the forged key the topic announced: refused as an unknown key.
        token = PoaSigner(forged).sign(claims.model_copy(update={"jti": uuid.uuid4().hex}))
        refused = await agent.invoke("crm.contact.read", "crm:contact/91", poa=token, request_id=request_id)
        genuine = await agent.invoke("crm.contact.read", "crm:contact/91", poa=issued.token, request_id=request_id)
    assert refused.decision is Decision.DENY
    assert refused.codes[0] is ReasonCode.UNKNOWN_KID, refused.reasons
    assert genuine.decision is Decision.ALLOW, genuine.reasons
    with make_engine(stack.db_url).connect() as conn:
        raws = [bytes(r) for (r,) in conn.execute(select(audit_events.c.raw))]
    refusals = [r for r in raws if b'"identity_proof_rejected"' in r and b'"consumer":"broker-keys@0"' in r]
    assert len(refusals) == 2, "both forged key events are audited as identity_proof_rejected"


async def _letters_by(store: AuditStore, key: str, consumers: set[str], timeout: float = 30.0) -> set[str]:
    """Which of `consumers` dead-lettered the record keyed `key` (stops as soon as all did)."""
    deadline = time.monotonic() + timeout
    found: set[str] = set()
    while found != consumers and time.monotonic() < deadline:
        rows = await asyncio.to_thread(store.for_request, key)
        for consumer in consumers - found:
            marker = f'"consumer":"{consumer}"'.encode()
            if any(r.event_type == DeadLetter.event_type and marker in r.raw for r in rows):
                found.add(consumer)
        if found != consumers:
            await asyncio.sleep(0.3)
    return found


async def test_a_passkey_not_announced_by_the_console_is_refused_by_its_followers_only(
    running_stack: RunningStack,
) -> None:
    # Approvals' and the issuer's passkey followers refuse it (dead letter); to the broker's key
    # follower a passkey is not a signing key at all: it takes no notice, the PoA flow goes on.
    stack = running_stack
    agent_svid = ensure_svid(stack.state_dir, AGENT)
    forged = PasskeyEnrolled(
        principal="alice",
        credential_id="Zm9yZ2VkLWNyZWRlbnRpYWw",
        public_key="cHVibGljLWtleQ",
        sign_count=0,
        rp_id="console.atb.local",
        origins=("https://console.atb.local",),
        user_verified=True,
        enrolled_at=datetime.now(UTC),
    )
    keys_topic = topic_name(Topic.KEYS, stack.namespace)
    async with Publisher(stack.kafka_bootstrap, "passkey-forger") as publisher:
        await publisher.publish(
            [outgoing_envelope(sign_envelope(make_envelope(forged, source=AGENT), agent_svid), keys_topic)]
        )
        await publisher.flush()
    store = AuditStore(make_engine(stack.db_url), "reader")
    wanted = {"approvals-passkeys@0", "issuer-passkeys@0"}
    assert await _letters_by(store, passkey_key(forged.credential_id), wanted) == wanted
    async with AgentClient(
        svid=agent_svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/92", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        allowed = await agent.invoke("crm.contact.read", "crm:contact/92", poa=issued.token, request_id=request_id)
    assert allowed.decision is Decision.ALLOW, allowed.reasons
    rows = await asyncio.to_thread(store.for_request, passkey_key(forged.credential_id))
    assert not any(b'"consumer":"broker-keys@0"' in r.raw for r in rows if r.event_type == DeadLetter.event_type)
