"""`atb delegate` on the real Kafka broker: a grant and a revocation signed by the delegator's SVID, and no one else's.

The events are read back from the keys topic and their proofs verified with the
dev PKI's bundle, as approvals verifies them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from atb.cli import app
from atb.cli.delegate import parse_until
from atb.errors import AtbUsageError, ExitCode
from atb_identity import TrustBundle, bundle_path, issue_svid, svid_paths, verify_origin
from atb_runtime.readback import read_events
from contracts import Tier, Topic, topic_name
from contracts.approval_events import DelegationGranted, DelegationRevoked

ALICE, DAVE = "spiffe://atb.local/user/alice", "spiffe://atb.local/user/dave"


@pytest.fixture
def env(tmp_path: Path, kafka_bootstrap: str, namespace: str) -> dict[str, str]:
    state = tmp_path / "state"
    for who in (ALICE, DAVE):
        issue_svid(state, who, hours=1)
    return {
        "ATB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "ATB_TOPIC_NAMESPACE": namespace,
        "ATB_STATE_DIR": str(state),
        "ATB_APPROVER": "",
        "ATB_DEBUG": "",
    }


async def _atb(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def _delegations(env: dict[str, str]) -> list[tuple[str, DelegationGranted | DelegationRevoked]]:
    """Each delegation event on the keys topic, with the identity its proof establishes."""
    bundle = TrustBundle.load(bundle_path(Path(env["ATB_STATE_DIR"])), "atb.local")
    topic = topic_name(Topic.KEYS, env["ATB_TOPIC_NAMESPACE"])
    out: list[tuple[str, DelegationGranted | DelegationRevoked]] = []
    for event in await read_events(env["ATB_KAFKA_BOOTSTRAP_SERVERS"], {topic: None}):
        if isinstance(event.payload, (DelegationGranted, DelegationRevoked)):
            proven = verify_origin(event.envelope, event.envelope.source, bundle, attesters=(), at=datetime.now(UTC))
            out.append((proven.proven_by, event.payload))
    return out


async def test_grant_list_and_revoke_signed_by_the_delegator(env: dict[str, str]) -> None:
    granted = await _atb(env, "delegate", "alice", "dave", "--until", "8h", "--tiers", "high", "--reason", "leave")
    assert granted.exit_code == ExitCode.OK, granted.stderr
    [(signer, grant)] = await _delegations(env)
    assert signer == ALICE
    assert isinstance(grant, DelegationGranted)
    assert (grant.delegator, grant.delegate, grant.tiers, grant.reason) == (ALICE, DAVE, (Tier.HIGH,), "leave")
    assert timedelta(hours=7, minutes=59) < grant.until - grant.not_before <= timedelta(hours=8)
    assert grant.delegation_id in granted.stdout

    listed = await _atb(env, "delegate", "list")
    assert listed.exit_code == ExitCode.OK, listed.stderr
    assert "in force" in listed.stdout

    by_dave = await _atb(env, "delegate", "revoke", grant.delegation_id, "--as", "dave")
    assert by_dave.exit_code == ExitCode.USAGE
    assert f"only {ALICE} may revoke" in by_dave.stderr
    revoked = await _atb(env, "delegate", "revoke", grant.delegation_id, "--as", "alice")
    assert revoked.exit_code == ExitCode.OK, revoked.stderr
    events = await _delegations(env)
    assert [(s, type(e).__name__) for s, e in events] == [(ALICE, "DelegationGranted"), (ALICE, "DelegationRevoked")]

    # Revoked: dave can no longer vote for alice (refused before any request is looked up).
    voted = await _atb(env, "delegate", "vote", "req-x", "approve", "--for", "alice", "--as", "dave", "--timeout", "1")
    assert voted.exit_code == ExitCode.USAGE
    assert f"no delegation in force lets {DAVE} vote for {ALICE}" in voted.stderr


async def test_only_the_delegator_signs_a_grant(env: dict[str, str]) -> None:
    cert, key = svid_paths(Path(env["ATB_STATE_DIR"]), DAVE)
    forged = await _atb(
        env, "delegate", "alice", "dave", "--until", "1d", "--svid-cert", str(cert), "--svid-key", str(key)
    )
    assert forged.exit_code == ExitCode.USAGE
    assert f"the SVID is {DAVE}, not {ALICE}" in forged.stderr
    assert await _delegations(env) == []  # nothing was published


def test_until_is_a_time_with_its_zone_or_a_duration() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert parse_until("90m", now) == now + timedelta(minutes=90)
    assert parse_until("3d", now) == now + timedelta(days=3)
    assert parse_until("2026-12-24T18:00Z", now) == datetime(2026, 12, 24, 18, 0, tzinfo=UTC)
    assert parse_until("2026-12-24T18:00+01:00", now) == datetime(2026, 12, 24, 17, 0, tzinfo=UTC)
    for bad in ("8", "tomorrow", "2026-12-24T18:00"):
        with pytest.raises(AtbUsageError):
            parse_until(bad, now)
