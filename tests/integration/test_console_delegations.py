"""The console's delegations follower on the real Kafka: grants made with `atb delegate` reach /delegations.

The follower `console.main.delegations_follower` reads `atb.keys` from its start
and hands each delegation event to `ConsoleService.delegation_seen` (its rule is
tests/unit/test_console_delegations_seen.py). A grant signed by its delegator is
kept; one signed by anyone else is kept nowhere and, read after the follower
started, dead-lettered with its reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atb_identity import ensure_svid, sign_envelope
from atb_runtime import Outgoing, Publisher, outgoing_envelope
from atb_runtime.identity import load_bundle
from console.adapters.store import ConsoleStore
from console.main import delegations_follower
from console.service import ConsoleService
from console.settings import ConsoleSettings
from contracts import DeadLetter, Tier, Topic, decode_envelope, make_envelope, payload_of, topic_name
from contracts.approval_events import DelegationGranted
from contracts.directory import Directory
from tests.waits import records

pytestmark = pytest.mark.kafka

ALICE, BOB, DAVE = "spiffe://atb.local/user/alice", "spiffe://atb.local/user/bob", "spiffe://atb.local/user/dave"


def _grant(state: Path, delegation_id: str, signer: str, namespace: str) -> Outgoing:
    now = datetime.now(UTC).replace(microsecond=0)
    grant = DelegationGranted(
        delegation_id=delegation_id,
        delegator=ALICE,
        delegate=DAVE,
        tiers=(Tier.HIGH,),
        not_before=now,
        until=now + timedelta(days=1),
        reason="on leave",
        granted_at=now - timedelta(seconds=5),
    )
    envelope = sign_envelope(make_envelope(grant, source=signer), ensure_svid(state, signer))
    return outgoing_envelope(envelope, topic_name(Topic.KEYS, namespace))


async def test_a_grant_made_with_atb_delegate_is_kept_and_a_forged_one_dead_lettered(
    kafka_bootstrap: str, namespace: str, tmp_path: Path
) -> None:
    settings = ConsoleSettings(
        state_dir=tmp_path,
        console_db_path=tmp_path / "console.db",
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_namespace=namespace,
    )
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url())
    async with Publisher(kafka_bootstrap, "console-delegations-test") as publisher:
        await publisher.send_and_wait(
            [
                _grant(tmp_path, "dlg-cli-before", ALICE, namespace),
                _grant(tmp_path, "dlg-forged-before", BOB, namespace),
            ]
        )
        bundle = load_bundle(None, tmp_path, settings.trust_domain)
        service = ConsoleService(
            settings, directory, store, publisher, ensure_svid(tmp_path, settings.service_id), bundle
        )
        follower = delegations_follower(settings, service, publisher)
        await follower.start(catch_up=True)  # returns once what was on the topic at its start is taken in
        try:
            assert [row.delegation_id for row in service.delegations("dave")] == ["dlg-cli-before"]

            await publisher.send_and_wait([_grant(tmp_path, "dlg-forged-after", BOB, namespace)])
            [letter] = await records(
                kafka_bootstrap,
                [topic_name(Topic.DLQ, namespace)],
                lambda r: r.value is not None and b"dlg-forged" in r.value,
                what="the dead letter of the forged grant",
                timeout=60,
            )
        finally:
            await follower.stop()
    dead = payload_of(decode_envelope(letter.value))
    assert isinstance(dead, DeadLetter)
    assert dead.error_code == "delegation_unproven"
    assert f"proof is by {BOB}" in dead.reason
    assert "dlg-forged-after" in dead.reason  # the one read before the follower started is not lettered again
    assert [row.delegation_id for row in service.delegations("dave")] == ["dlg-cli-before"]
    store.close()
