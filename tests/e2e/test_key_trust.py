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
import functools
import uuid
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from atb.sdk import AgentClient
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import StoredEvent as ReadEvent
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
from tests.e2e.audit_sync import caught_up, stored
from tests.e2e.conftest import RunningStack

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/crm-assistant"
ISSUER = "spiffe://atb.local/svc/issuer"
LEG = LegitimateInterest(ref="LI-KT", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="kt"))


def _key_event(kid: str, jwk: dict[str, str]) -> SigningKeyPublished:
    return SigningKeyPublished(kid=kid, alg="EdDSA", jwk=jwk, issuer=ISSUER, not_before=datetime.now(UTC))


async def _letters_for(stack: RunningStack, kids: set[str]) -> set[str]:
    """The forged kids that the broker's key follower dead-lettered (by the letter's key)."""
    return {kid for kid in kids if await _letters_by(stack, kid, {"broker-keys@0"})}


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

    assert await _letters_for(stack, {agent_kid, unsigned_kid}) == {agent_kid, unsigned_kid}

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


async def _letters_by(stack: RunningStack, key: str, consumers: set[str], timeout: float = 30.0) -> set[str]:
    """Which of `consumers` dead-lettered the record keyed `key`: each letter awaited on the DLQ, then stored."""
    for consumer in sorted(consumers):
        await stored(
            stack.kafka_bootstrap,
            stack.namespace,
            stack.db_url,
            Topic.DLQ,
            functools.partial(_letter_of, key, consumer),
            timeout=timeout,
            what=f"{consumer} dead-lettering {key}",
        )
    rows = await asyncio.to_thread(AuditStore(make_engine(stack.db_url), "reader").for_request, key)
    return {
        consumer
        for consumer in consumers
        if any(r.event_type == DeadLetter.event_type and f'"consumer":"{consumer}"'.encode() in r.raw for r in rows)
    }


def _letter_of(key: str, consumer: str, event: ReadEvent) -> bool:
    # The store files a letter under its envelope's subject: the record's key.
    return (
        isinstance(event.payload, DeadLetter) and event.payload.consumer == consumer and event.envelope.subject == key
    )


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
    wanted = {"approvals-passkeys@0", "issuer-passkeys@0"}
    assert await _letters_by(stack, passkey_key(forged.credential_id), wanted) == wanted
    async with AgentClient(
        svid=agent_svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/92", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        allowed = await agent.invoke("crm.contact.read", "crm:contact/92", poa=issued.token, request_id=request_id)
    assert allowed.decision is Decision.ALLOW, allowed.reasons
    # No letter from the broker: true of everything committed so far once the sink caught up.
    await caught_up(stack.kafka_bootstrap, stack.namespace, stack.db_url)
    store = AuditStore(make_engine(stack.db_url), "reader")
    rows = await asyncio.to_thread(store.for_request, passkey_key(forged.credential_id))
    assert not any(b'"consumer":"broker-keys@0"' in r.raw for r in rows if r.event_type == DeadLetter.event_type)
