"""The console's HTTP edge in process (aiohttp test server, SQLite store, a recording publisher): the
vote step-up with a software passkey (the console verifies the assertion before it publishes anything),
forged and replayed assertions refused, and the security headers (HSTS only over TLS)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from atb_identity import ensure_svid
from atb_identity.passkey import b64url
from atb_runtime.records import Outgoing
from console.adapters.http import COOKIE, CSP, build_app
from console.adapters.store import ConsoleStore, Credential
from console.service import ConsoleService
from console.settings import ConsoleSettings
from contracts import (
    ApprovalRequired,
    ApprovalStateChanged,
    AuditEvent,
    IssuanceRequested,
    LegitimateInterest,
    Tier,
    digest_of,
)
from contracts.console_events import VoteCastV2, vote_challenge
from contracts.directory import Directory
from tests.unit.test_passkey import SoftAuthenticator, cose_p256

ORIGIN = "https://console.atb.test"
RP_ID = "console.atb.test"
AGENT = "spiffe://atb.local/agent/finance-bot"


class Recorder:
    def __init__(self) -> None:
        self.records: list[Outgoing] = []

    async def publish(self, records: Sequence[Outgoing]) -> None:
        self.records.extend(records)

    async def flush(self) -> None:
        return None

    async def send_and_wait(self, records: Sequence[Outgoing]) -> None:
        self.records.extend(records)

    def of_type(self, event_type: str) -> list[dict[str, Any]]:
        out = []
        for record in self.records:
            body = json.loads(record.value or b"{}")
            if body.get("type") == event_type:
                out.append(body["data"])
        return out


class Rig:
    def __init__(self, client: TestClient[Any, Any], store: ConsoleStore, service: ConsoleService, recorder: Recorder):
        self.client, self.store, self.service, self.recorder = client, store, service, recorder
        self.device = SoftAuthenticator()
        self.store.add_credential(
            Credential(
                self.device.credential_id, "alice", cose_p256(self.device.key), 0, RP_ID, True, time.time(), None, None
            )
        )
        self.sid, self.csrf = store.create_session("alice", now=time.time())

    async def post(self, path: str, *, data: Any = None, json_body: Any = None, **headers: str) -> Any:
        sent = {"Cookie": f"{COOKIE}={self.sid}", "Origin": ORIGIN, **headers}
        return await self.client.post(path, data=data, json=json_body, headers=sent, allow_redirects=False)


def _request() -> IssuanceRequested:
    leg = {"basis": "LI", "ref": "LI-1", "description": "payment", "jurisdiction": "DE",
           "accountable_party": {"type": "employee", "id": "emp-200"}}  # fmt: skip
    return IssuanceRequested(
        request_id="req-1",
        agent_id=AGENT,
        tenant="acme",
        action="sap.payment.execute",
        resource="sap:vendor/1",
        params={"amount": 5},
        leg=LegitimateInterest.model_validate(leg),
        requested_at=datetime.now(UTC),
    )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = ConsoleSettings(
        state_dir=tmp_path, console_rp_id=RP_ID, console_origin=ORIGIN, console_db_path=tmp_path / "c.db"
    )
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url())
    recorder = Recorder()
    service = ConsoleService(settings, directory, store, recorder, ensure_svid(tmp_path, settings.service_id))
    request = _request()
    required = ApprovalRequired(
        request_id="req-1",
        tier=Tier.HIGH,
        required_approvals=2,
        eligible_groups=("manager",),
        ticket_required=False,
        deadline=datetime.now(UTC) + timedelta(minutes=5),
        request_digest=digest_of(request),
        agent_id=AGENT,
        action=request.action,
        resource=request.resource,
        accountable_party_id="emp-200",
    )
    state = ApprovalStateChanged(request_id="req-1", status="open", request=request, updated_at=datetime.now(UTC))
    await service.on_events([required, state])
    app = build_app(service, store, idle_s=900, tls=False, trust_forwarded_proto=True)
    async with TestClient(TestServer(app)) as client:
        yield Rig(client, store, service, recorder)
    store.close()


async def _options(rig: Rig) -> dict[str, Any]:
    response = await rig.post("/requests/req-1/options", json_body={"choice": "approve"}, **{"X-CSRF-Token": rig.csrf})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def _browser_answer(rig: Rig, challenge: bytes, nonce: str, **kw: Any) -> str:
    assertion = rig.device.sign(challenge, nonce=nonce, rp_id=RP_ID, origin=ORIGIN, **kw)
    return json.dumps(
        {
            "id": assertion.credential_id,
            "response": {
                "authenticatorData": assertion.authenticator_data,
                "clientDataJSON": assertion.client_data_json,
                "signature": assertion.signature,
            },
            "nonce": nonce,
        }
    )


async def _vote(rig: Rig, answer: str) -> str:
    form = {"csrf": rig.csrf, "choice": "approve", "assertion": answer}
    response = await rig.post("/requests/req-1/vote", data=form)
    assert response.status == 303
    location: str = response.headers["Location"]
    return location.rsplit("result=", 1)[1]


async def test_a_step_up_vote_carries_a_verified_assertion(rig: Rig) -> None:
    options = await _options(rig)
    digest = digest_of(_request())
    challenge = vote_challenge(digest, "approve", options["nonce"])
    assert options["publicKey"]["challenge"] == b64url(challenge)
    assert options["publicKey"]["userVerification"] == "required"
    assert await _vote(rig, _browser_answer(rig, challenge, options["nonce"])) == "vote_cast"
    [vote] = rig.recorder.of_type(VoteCastV2.event_type)
    cast = VoteCastV2.model_validate(vote)
    assert cast.channel == "console"
    assert cast.approver_id == "alice"
    assert cast.assertion is not None
    assert cast.assertion.credential_id == rig.device.credential_id


async def test_forged_and_replayed_assertions_are_refused_and_nothing_is_published(rig: Rig) -> None:
    digest = digest_of(_request())
    options = await _options(rig)
    nonce = options["nonce"]
    # Signed over another request's challenge with the console's nonce.
    other = vote_challenge("sha256v2:" + "0" * 64, "approve", nonce)
    assert await _vote(rig, _browser_answer(rig, other, nonce)) == "assertion_invalid"
    # The nonce was used by that attempt: a correct assertion over it now is a replay.
    assert (
        await _vote(rig, _browser_answer(rig, vote_challenge(digest, "approve", nonce), nonce)) == "assertion_invalid"
    )
    # A fresh nonce, but no user verification.
    fresh = (await _options(rig))["nonce"]
    no_uv = _browser_answer(rig, vote_challenge(digest, "approve", fresh), fresh, uv=False)
    assert await _vote(rig, no_uv) == "assertion_invalid"
    # A nonce the console never handed out.
    made_up = "m" * 22
    assert await _vote(rig, _browser_answer(rig, vote_challenge(digest, "approve", made_up), made_up)) == (
        "assertion_invalid"
    )
    # No assertion at all on a high request.
    response = await rig.post("/requests/req-1/vote", data={"csrf": rig.csrf, "choice": "approve"})
    assert response.headers["Location"].endswith("result=step_up_required")
    assert rig.recorder.of_type(VoteCastV2.event_type) == []
    refused = [a for a in rig.recorder.of_type("atb.audit.event.v1") if a["audit_type"] == "console_vote_refused"]
    assert [a["reason"] for a in refused] == ["assertion_invalid"] * 4 + ["step_up_required"]
    # And the honest vote still goes through afterwards.
    last = (await _options(rig))["nonce"]
    assert await _vote(rig, _browser_answer(rig, vote_challenge(digest, "approve", last), last)) == "vote_cast"


async def test_headers_and_hsts_only_over_tls(rig: Rig) -> None:
    plain = await rig.client.get("/signin")
    assert plain.headers["Content-Security-Policy"] == CSP
    assert "Strict-Transport-Security" not in plain.headers
    behind_tls = await rig.client.get("/signin", headers={"X-Forwarded-Proto": "https"})
    assert behind_tls.headers["Strict-Transport-Security"].startswith("max-age=")
    refused = await rig.post("/requests/req-1/vote", data={"choice": "approve"})
    assert refused.status == 403
    assert refused.headers["Content-Security-Policy"] == CSP


class _Unreachable(Recorder):
    """A publisher whose broker cannot be reached."""

    async def publish(self, records: Sequence[Outgoing]) -> None:
        raise ConnectionError("kafka unreachable")


async def test_an_evidence_download_is_audited_first_and_refused_when_it_cannot_be(tmp_path: Path) -> None:
    from audit_sink.adapters.db import migrate
    from console.adapters.audit import AuditReader
    from console.adapters.evidence import EvidenceDesk
    from contracts import AuditEvent
    from tests.audit_support import Filler, rows

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    filler = Filler(url, tmp_path / "audit")
    filler.append(rows(0, 20, request_id="req-9"))
    filler.checkpoint()
    settings = ConsoleSettings(
        state_dir=tmp_path, console_rp_id=RP_ID, console_origin=ORIGIN, console_db_path=tmp_path / "c.db"
    )
    directory = Directory.from_mapping(json.loads(settings.directory_path().read_text(encoding="utf-8")))
    store = ConsoleStore(settings.db_url())
    sid, _ = store.create_session("bob", now=time.time())  # group compliance
    headers = {"Cookie": f"{COOKIE}={sid}", "Accept": "application/json"}
    path = "/compliance/export?request_id=req-9&format=csv"
    for publisher in (Recorder(), _Unreachable()):
        service = ConsoleService(settings, directory, store, publisher, ensure_svid(tmp_path, settings.service_id))
        evidence = EvidenceDesk(url, tmp_path / "audit" / "checkpoint.key.pub")
        app = build_app(
            service, store, idle_s=900, tls=False, trust_forwarded_proto=True, audit=AuditReader(url), evidence=evidence
        )
        async with TestClient(TestServer(app)) as client:
            response = await client.get(path, headers=headers)
            body = await response.read()
        if isinstance(publisher, _Unreachable):
            assert response.status == 503
            assert json.loads(body)["error"] == "export_unaudited"
            continue
        assert response.status == 200
        assert response.content_type == "application/zip"
        audits = [a for a in publisher.of_type(AuditEvent.event_type) if a["audit_type"] == "console_evidence_exported"]
        assert len(audits) == 1
        assert audits[0]["request_id"] == "req-9"
        assert audits[0]["details"] == {
            "principal": "bob",
            "since": None,
            "until": None,
            "format": "csv",
            "events": 20,
            "bytes": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    store.close()


async def test_json_nested_past_the_parsers_recursion_is_a_400_and_a_malformed_assertion(rig: Rig) -> None:
    """json.loads raises RecursionError, not ValueError, on a body ~1,000 levels deep (a 500 before)."""
    deep = "[" * 20_000 + "]" * 20_000  # 40 KB: under the body limit
    response = await rig.post(
        "/requests/req-1/options", data=deep, **{"X-CSRF-Token": rig.csrf, "Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["error"] == "bad_request"
    form_deep = "[" * 5_000 + "]" * 5_000  # form-encoded three bytes a bracket: under the body limit too
    form = {"csrf": rig.csrf, "choice": "approve", "assertion": form_deep}
    voted = await rig.post("/requests/req-1/vote", data=form)
    assert voted.status == 303
    assert rig.recorder.of_type(VoteCastV2.event_type) == []  # refused as malformed (and audited)
    assert [e["audit_type"] for e in rig.recorder.of_type(AuditEvent.event_type)] == ["console_vote_refused"]
