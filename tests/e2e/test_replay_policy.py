"""`atb replay policy` on the real broker: a changed rule flips exactly the decisions it should.

A range is recorded for real: low and medium requests, PoAs, and broker
decisions over Kafka (one of them a blocked replay). The candidate policy moves
`crm.contact.read` from the low allowlist to medium: its requests change tier
and its allowed decisions would now be denied; nothing else changes, and the
replay deny is reported as not re-evaluated (the policy never made it).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest

from atb.sdk import AgentClient, ApproverClient
from atb_identity import ensure_svid
from contracts import AccountableParty, Decision, LegitimateInterest, VoteChoice
from tests.e2e.conftest import RunningStack
from tests.e2e.replay_cli import atb_replay

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/finance-bot"
LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)
POLICY = Path(__file__).resolve().parents[2] / "opa" / "policy"


def _candidate(tmp_path: Path, *, move_read_to_medium: bool) -> Path:
    folder = tmp_path / ("candidate" if move_read_to_medium else "unchanged")
    shutil.copytree(POLICY, folder)
    if move_read_to_medium:
        data_path = folder / "data.json"
        data = json.loads(data_path.read_text())
        policy = data["atb_policy"]
        policy["low_risk_allowlist"].remove("crm.contact.read")
        policy["medium_risk_actions"].append("crm.contact.read")
        policy["version"] = "candidate-1"
        data_path.write_text(json.dumps(data))
    return folder


async def _record(stack: RunningStack, agent: AgentClient) -> dict[str, list[tuple[str, str]]]:
    """Requests and decisions over Kafka; returns (request id, action id) per kind of action."""
    done: dict[str, list[tuple[str, str]]] = {"read": [], "replay": [], "other": []}
    for n in range(3):
        request_id = await agent.request_poa("crm.contact.read", f"crm:contact/{n}", leg=LEG)
        poa = await agent.await_poa(request_id, timeout=60)
        decision = await agent.invoke("crm.contact.read", f"crm:contact/{n}", poa=poa.token, request_id=request_id)
        assert decision.decision is Decision.ALLOW, decision.reasons
        done["read"].append((request_id, decision.action_id))
        if n == 0:
            again = await agent.invoke("crm.contact.read", "crm:contact/0", poa=poa.token, request_id=request_id)
            assert again.decision is Decision.DENY
            done["replay"].append((request_id, again.action_id))
    request_id = await agent.request_poa("catalog.product.read", "catalog:product/9", leg=LEG)
    poa = await agent.await_poa(request_id, timeout=60)
    decision = await agent.invoke("catalog.product.read", "catalog:product/9", poa=poa.token, request_id=request_id)
    assert decision.decision is Decision.ALLOW, decision.reasons
    done["other"].append((request_id, decision.action_id))
    request_id = await agent.request_poa("crm.contact.update", "crm:contact/5", leg=LEG)
    svid = ensure_svid(stack.state_dir, "spiffe://atb.local/user/alice")
    async with ApproverClient(svid=svid, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace) as alice:
        await alice.vote(await alice.approval_required(request_id), VoteChoice.APPROVE)
    poa = await agent.await_poa(request_id, timeout=60)
    decision = await agent.invoke("crm.contact.update", "crm:contact/5", poa=poa.token, request_id=request_id)
    assert decision.decision is Decision.ALLOW, decision.reasons
    done["other"].append((request_id, decision.action_id))
    return done


async def test_a_policy_what_if_reports_exactly_the_flipped_decisions(
    running_stack: RunningStack, opa_url: str, tmp_path: Path
) -> None:
    stack = running_stack
    since = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    svid = ensure_svid(stack.state_dir, AGENT)
    async with AgentClient(
        svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
    ) as agent:
        recorded = await _record(stack, agent)
    replay = partial(
        atb_replay, bootstrap=stack.kafka_bootstrap, namespace=stack.namespace, state_dir=tmp_path, opa_url=opa_url
    )
    candidate = _candidate(tmp_path, move_read_to_medium=True)

    run = await replay("policy", "--policy", str(candidate), "--since", since, "--json", "--fail-on-change")
    assert run.code == 3, run.stderr
    report = run.json()
    assert report["candidate_policy_version"] == "candidate-1"
    assert (report["requests"], report["decisions"]) == (5, 6)
    changes = {(c["kind"], c["subject"], c["request_id"], c["action_id"]) for c in report["changes"]}
    assert changes == {("tier_change", "request", rid, None) for rid, _ in recorded["read"]} | {
        ("would_deny", "decision", rid, aid) for rid, aid in recorded["read"]
    }
    assert len(report["changes"]) == len(changes)
    for c in report["changes"]:
        assert (c["tier_before"], c["tier_after"]) == ("low", "medium")
        if c["kind"] == "would_deny":
            assert "tier_too_low" in {r["code"] for r in c["reasons"]}
            assert all(set(r) == {"code", "detail"} for r in c["reasons"])
    [(replay_rid, replay_aid)] = recorded["replay"]
    assert [(s["request_id"], s["action_id"]) for s in report["skipped"]] == [(replay_rid, replay_aid)]
    assert "poa_single_use_replay_blocked" in report["skipped"][0]["why"]

    # The control: the unchanged policy changes nothing.
    same = await replay(
        "policy", "--policy", str(_candidate(tmp_path, move_read_to_medium=False)), "--json", "--fail-on-change"
    )
    assert same.code == 0, same.stderr
    assert same.json()["changes"] == []

    # Interrupted part way (--limit), resumed: the same report, each record read once overall.
    first = await replay("policy", "--policy", str(candidate), "--since", since, "--limit", "7", "--json")
    assert first.code == 0, first.stderr
    assert (first.json()["complete"], first.json()["records"]) == (False, 7)
    run_id = first.json()["run_id"]
    rest = await replay("policy", "--resume", run_id, "--json")
    assert rest.code == 0, rest.stderr
    assert {json.dumps(c, sort_keys=True) for c in rest.json()["changes"]} == {
        json.dumps(c, sort_keys=True) for c in report["changes"]
    }
    spooled = [json.loads(line) for line in (tmp_path / "replay" / f"{run_id}.spool.jsonl").read_text().splitlines()]
    assert max(Counter((r["t"], r["p"], r["o"]) for r in spooled).values()) == 1
