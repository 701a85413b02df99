"""`atb replay redrive` on the real broker: a poison record is dead-lettered, re-driven once, counted once.

The poison: alice's correctly signed vote, published by mistake on the requests
topic. The approvals service dead-letters it (`unexpected_type`); re-driving it
to the votes topic is the fix: the letter carries no more than a prefix, so the
exact vote is read back from the letter's coordinates, and approvals then counts
it and the PoA is issued. Oversize originals, and originals that are gone or
changed: tests/e2e/test_hostile_input.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial

import jwt
import pytest

from atb.sdk import AgentClient, ApproverClient
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Publisher, outgoing_envelope
from atb_runtime.readback import read_committed
from contracts import (
    AccountableParty,
    AuditEvent,
    DeadLetter,
    LegitimateInterest,
    Topic,
    VoteCast,
    VoteChoice,
    make_envelope,
    spec_for,
    topic_name,
)
from tests.e2e.conftest import RunningStack
from tests.e2e.replay_cli import atb_replay
from tests.waits import events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
ALICE = "spiffe://atb.local/user/alice"
MEDIUM_LEG = LegitimateInterest(
    ref="LI-7", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-300")
)


async def _read(stack: RunningStack, topic: Topic) -> list[object]:
    return list(
        await read_committed(
            stack.kafka_bootstrap, topic_name(topic, stack.namespace), range(spec_for(topic).partitions)
        )
    )


async def _wait_for(
    stack: RunningStack, topic: Topic, match: Callable[[object], bool], want: int = 1, timeout: float = 30
) -> list[object]:
    """Every matching payload on `topic`, read to the end offsets once `want` of them are committed (consumed)."""
    await events(
        stack.kafka_bootstrap,
        [topic_name(topic, stack.namespace)],
        lambda e: match(e.payload),
        count=want,
        timeout=timeout,
        what=f"{want} matching record(s) on {topic.value}",
    )
    return [p for p in await _read(stack, topic) if match(p)]


async def test_a_fixed_poison_record_reaches_its_consumer_once(running_stack: RunningStack) -> None:
    stack = running_stack
    agent_svid = ensure_svid(stack.state_dir, AGENT)
    alice_svid = ensure_svid(stack.state_dir, ALICE)
    async with AgentClient(
        svid=agent_svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        request_id = await agent.request_poa("crm.contact.update", "crm:contact/77", leg=MEDIUM_LEG)
        async with ApproverClient(svid=alice_svid, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as alice:
            required = await alice.approval_required(request_id)
        vote = VoteCast(
            request_id=request_id,
            vote_id=f"vote-{uuid.uuid4().hex}",
            approver_id=ALICE,
            choice=VoteChoice.APPROVE,
            request_digest=required.request_digest,
            channel="cli",
            cast_at=datetime.now(UTC),
        )
        envelope = sign_envelope(make_envelope(vote, source=ALICE), alice_svid)
        wrong_topic = topic_name(Topic.POA_REQUESTS, stack.namespace)
        async with Publisher(stack.kafka_bootstrap, "misrouted") as publisher:
            await publisher.publish([outgoing_envelope(envelope, wrong_topic)])

        def poison(p: object) -> bool:
            # The gateway's view follower letters it too (as `gateway-views@0`): approvals' is the one to fix.
            return isinstance(p, DeadLetter) and p.request_id == request_id and p.consumer == "approvals"

        letters = await _wait_for(stack, Topic.DLQ, poison)
        assert [(lt.consumer, lt.error_code) for lt in letters] == [("approvals", "unexpected_type")]  # type: ignore[attr-defined]

        args = (
            "redrive",
            "--filter", "consumer=approvals",
            "--filter", "error_code=unexpected_type",
            "--filter", f"request_id={request_id}",
            "--to", Topic.VOTES.value,
            "--json",
        )  # fmt: skip
        replay = partial(
            atb_replay, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace, state_dir=stack.state_dir
        )

        dry = await replay(*args)
        assert dry.code == 0, dry.stderr
        report = dry.json()
        assert report["dry_run"] is True
        assert report["sent"] == 0
        assert [(r["status"], r["target_topic"]) for r in report["redrives"]] == [
            ("send", topic_name(Topic.VOTES, stack.namespace))
        ]
        with pytest.raises(TimeoutError):
            await agent.await_poa(request_id, timeout=2)  # a dry run sent nothing

        done = await replay(*args, "--execute")
        assert done.code == 0, done.stderr
        assert done.json()["sent"] == 1
        issued = await agent.await_poa(request_id, timeout=30)
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims["leg"]["approval"]["approver_id"] == "alice"

    again = await replay(*args, "--execute")
    assert again.code == 0, again.stderr
    assert again.json()["sent"] == 0, again.stdout
    assert [r["status"] for r in again.json()["redrives"]] == ["already_redriven"]

    def audited(kind: str) -> Callable[[object], bool]:
        return lambda p: isinstance(p, AuditEvent) and p.request_id == request_id and p.audit_type == kind

    redriven = await _wait_for(stack, Topic.AUDIT, audited("dlq_redriven"))
    assert len(redriven) == 1
    details = redriven[0].details  # type: ignore[attr-defined]
    assert details["original_topic"] == wrong_topic
    assert details["target_topic"] == topic_name(Topic.VOTES, stack.namespace)
    assert details["run_id"] == done.json()["run_id"]
    counted = await _wait_for(stack, Topic.AUDIT, audited("approval_vote_counted"))
    assert len(counted) == 1
