"""Reminders and escalation exactly once while the approvals service is killed with SIGKILL, on the real broker.

High requests with one of their two approvals wait out a 40 s pending window
(ATB_MAX_PENDING_SECONDS): the shipped policy reminds at 50 % and 80 % and
escalates to security at 80 %. Approvals is killed and restarted repeatedly
during the first 22 s; each restart reloads the changelog, where the reminder
counters are committed in the same transaction as the reminders themselves.
At the end a `read_committed` reader sees, per request, each reminder once, the
escalation once and one expiry, and the audit topic the matching audit events once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from atb_runtime.readback import iter_records
from contracts import (
    AccountableParty,
    AuditEvent,
    EventDecodeError,
    IssuanceRequested,
    LegitimateInterest,
    RequestExpired,
    Topic,
    VoteCast,
    VoteChoice,
    decode_envelope,
    digest_of,
    make_envelope,
    payload_of,
    topic_name,
)
from contracts.approval_events import ApprovalEscalated, ReminderDue
from tests.waits import events as await_events

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
ALICE = "spiffe://atb.local/user/alice"
LEG = LegitimateInterest(ref="LI-R", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="e-9"))
PENDING_S = 40
REQUESTS = 12


async def _read(bootstrap: str, ns: str) -> list[object]:
    topics = [topic_name(Topic.OUTCOMES, ns), topic_name(Topic.AUDIT, ns)]
    out: list[object] = []
    async for record in iter_records(bootstrap, topics):
        try:
            out.append(payload_of(decode_envelope(record.value)))
        except EventDecodeError:
            continue
    return out


async def test_reminders_and_escalations_exactly_once_across_sigkill_of_approvals(
    kafka_bootstrap: str, opa_url: str, tmp_path: Path
) -> None:
    ns = f"r{time.monotonic_ns() % 10**8:08d}."
    await ensure_topics(kafka_bootstrap, ns)
    stack = ServiceStack(
        StackConfig(
            kafka_bootstrap,
            opa_url,
            tmp_path,
            namespace=ns,
            audit_db_url=f"sqlite:///{tmp_path / 'audit.db'}",
            extra_env={"ATB_MAX_PENDING_SECONDS": str(PENDING_S)},
        ),
        services=("approvals",),
    )
    await stack.start(ready_timeout=90)
    try:
        agent, alice = ensure_svid(tmp_path, AGENT), ensure_svid(tmp_path, ALICE)
        ids = [f"rem-{i}" for i in range(REQUESTS)]
        records: list[Outgoing] = []
        for request_id in ids:
            request = IssuanceRequested(
                request_id=request_id,
                agent_id=AGENT,
                tenant="acme",
                action="iam.role.assign",
                resource=f"iam:role/{request_id}",
                leg=LEG,
                requested_at=datetime.now(UTC),
            )
            vote = VoteCast(
                request_id=request_id,
                vote_id=f"{request_id}-alice",
                approver_id=ALICE,
                choice=VoteChoice.APPROVE,
                request_digest=digest_of(request),
                channel="cli",
                cast_at=datetime.now(UTC),
            )
            for payload, svid, by in ((request, agent, AGENT), (vote, alice, ALICE)):
                signed = sign_envelope(make_envelope(payload, source=by), svid)
                records.append(outgoing_envelope(signed, topic_name(payload.topic, ns)))
        started = time.monotonic()
        async with Publisher(kafka_bootstrap, "reminder-fault") as publisher:
            await publisher.publish(records)
            await publisher.flush()

        rng, kills = random.Random(20261205), 0
        while time.monotonic() - started < 22:
            await asyncio.sleep(rng.uniform(1.0, 4.0))  # the fault schedule: when approvals is killed is the subject
            kills += await stack.kill("approvals")
            await stack.restart("approvals", ready_timeout=90)
        assert kills >= 3

        # Every request's last event is its expiry: a consumer waits for them, then the topics are read to their end.
        await await_events(
            kafka_bootstrap,
            [topic_name(Topic.OUTCOMES, ns)],
            lambda e: isinstance(e.payload, RequestExpired) and e.payload.request_id in ids,
            count=len(ids),
            timeout=120,
            what="every request's expiry",
        )
        events = await _read(kafka_bootstrap, ns)
        expired = Counter(e.request_id for e in events if isinstance(e, RequestExpired))
        assert set(expired) == set(ids), f"not expired: {sorted(set(ids) - set(expired))}"
        assert max(expired.values()) == 1

        reminders = Counter((e.request_id, e.reminder) for e in events if isinstance(e, ReminderDue))
        escalations = Counter(e.request_id for e in events if isinstance(e, ApprovalEscalated))
        assert reminders == Counter({(r, n): 1 for r in ids for n in (1, 2)})
        assert escalations == Counter(dict.fromkeys(ids, 1))
        audited = Counter(
            (e.audit_type, e.request_id)
            for e in events
            if isinstance(e, AuditEvent) and e.audit_type in ("approval_reminder_sent", "approval_escalated")
        )
        assert audited == Counter(
            {**{("approval_reminder_sent", r): 2 for r in ids}, **{("approval_escalated", r): 1 for r in ids}}
        )
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)
