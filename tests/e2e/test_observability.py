"""Logs and traces of the real service processes (docs/observability.md).

One stack of processes (ServiceStack) with the test switch `ATB_TRACE_FILE`:
every service writes the spans it ends to that file, and this test process
(the agent) records its own with the OpenTelemetry in-memory exporter. A
request asked through the gateway's `POST /issue` inside the agent's span and
then presented to the broker over Kafka is one trace, from the agent through
the gateway, approvals, the issuer and the gateway's view to the broker's
decision, whose record carries it on, and a second presentation over HTTP
is decided in the same trace; `atb trace` prints its id. Every line the
processes log is JSON with the schema.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from typer.testing import CliRunner

from atb.cli import app
from atb.dev.stack import ServiceStack, StackConfig
from atb.dev.topics import delete_topics, ensure_topics
from atb.sdk import AgentClient, BrokerClient, GatewayClient, GatewayError
from atb.trace.timeline import read_request
from atb_identity import bundle_path, ensure_svid
from atb_runtime.logs import REQUIRED_FIELDS
from contracts import AccountableParty, BrokerDecision, Decision, LegitimateInterest, Topic, topic_name
from tests.e2e.conftest import RunningStack
from tests.unit.test_trace_context import recording
from tests.waits import events, until

pytestmark = [pytest.mark.kafka, pytest.mark.opa]

AGENT = "spiffe://atb.local/agent/trace-bot"
LEG = LegitimateInterest(
    ref="LI-2024-001", jurisdiction="US", accountable_party=AccountableParty(type="employee", id="emp-100")
)
SERVICES = ("gateway", "approvals", "issuer", "broker", "audit-sink")


@pytest.fixture(scope="module")
async def traced_stack(
    kafka_bootstrap: str, opa_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[RunningStack, Path]]:
    ns = f"o{secrets.token_hex(4)}."
    await ensure_topics(kafka_bootstrap, ns)
    state = tmp_path_factory.mktemp("observed")
    spans = state / "spans.jsonl"
    db_url = f"sqlite:///{state / 'audit.db'}"
    config = StackConfig(
        kafka_bootstrap,
        opa_url,
        state,
        namespace=ns,
        audit_db_url=db_url,
        extra_env={"ATB_TRACE_FILE": str(spans), "ATB_LOG_FORMAT": "json"},
    )
    stack = ServiceStack(config)
    await stack.start(ready_timeout=90)
    try:
        yield RunningStack(stack, ns, state, db_url, kafka_bootstrap), spans
    finally:
        await stack.stop()
        await delete_topics(kafka_bootstrap, ns)


def _spans(path: Path, trace_id: str) -> list[dict[str, Any]]:
    found = [json.loads(line) for line in path.read_text().splitlines()]
    return [span for span in found if span["trace_id"] == trace_id]


async def _until(path: Path, trace_id: str, want: set[tuple[str, str]], seconds: float) -> list[dict[str, Any]]:
    """The trace's spans once every (service, name) in `want` has ended (a follower's span ends after its sink).

    The spans are a file the services' exporters write: polled (tests/waits.py).
    """

    async def spans() -> list[dict[str, Any]]:
        return _spans(path, trace_id)

    return await until(
        spans,
        lambda found: want <= {(s["service"], s["name"]) for s in found},
        timeout=seconds,
        what=f"the spans {sorted(want)} of {trace_id}",
        interval=0.1,
    )


async def test_one_trace_from_post_issue_to_the_brokers_decision(
    traced_stack: tuple[RunningStack, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, span_file = traced_stack
    agent_spans = recording()
    svid = ensure_svid(stack.state_dir, AGENT)
    with trace.get_tracer("agent").start_as_current_span("agent reads a contact") as root:
        trace_id = f"{root.get_span_context().trace_id:032x}"
        async with GatewayClient(
            svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=stack.stack.gateway_url
        ) as gateway:
            request_id = await gateway.request_poa(
                "crm.contact.read", "crm:contact/t1", tenant="acme", leg=LEG, params={"f": 1}
            )
            issued = await gateway.await_poa(request_id, timeout=60)
        assert issued.poa is not None
        async with AgentClient(
            svid=svid, tenant="acme", bootstrap=stack.kafka_bootstrap, namespace=stack.namespace
        ) as agent:
            decision = await agent.invoke(
                "crm.contact.read", "crm:contact/t1", poa=issued.poa.token, request_id=request_id, params={"f": 1}
            )
        # The same PoA presented again over HTTP: a replay, denied, and decided in the same trace.
        async with BrokerClient(
            svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=stack.stack.broker_url()
        ) as http_broker:
            replay = await http_broker.authorize(
                "crm.contact.read",
                "crm:contact/t1",
                request_id=request_id,
                tenant="acme",
                poa=issued.poa.token,
                params={"f": 1},
                execute=False,
            )
    assert decision.decision is Decision.ALLOW, decision.reasons
    assert replay.decision is Decision.DENY
    assert [s.name for s in agent_spans.get_finished_spans()] == ["agent reads a contact"]
    ns = stack.namespace
    spans = await _until(
        span_file,
        trace_id,
        {("gateway", f"atb-gateway-views process {ns}atb.poa.issued"), ("broker", "POST /v1/authorize")},
        30,
    )
    by_name = {(s["service"], s["name"]): s for s in spans}
    root_id = f"{root.get_span_context().span_id:016x}"

    # The gateway continued the agent's trace; each Kafka hop is a child of the hop that produced its record.
    issue = by_name[("gateway", "POST /issue")]
    assert issue["kind"] == "SERVER"
    assert issue["parent_span_id"] == root_id
    assert issue["attributes"]["http.response.status_code"] == 202
    approvals = by_name[("approvals", f"approvals process {ns}atb.poa.requests")]
    assert approvals["parent_span_id"] == issue["span_id"]
    issuer = by_name[("issuer", f"issuer process {ns}atb.approvals.outcomes")]
    assert issuer["parent_span_id"] == approvals["span_id"]
    view = by_name[("gateway", f"atb-gateway-views process {ns}atb.poa.issued")]
    assert view["parent_span_id"] == issuer["span_id"]
    broker = by_name[("broker", f"broker process {ns}atb.broker.actions")]
    assert broker["parent_span_id"] == root_id  # the agent presented the PoA in its own span
    assert broker["attributes"]["messaging.kafka.message.key"] == request_id

    # The records carry it: the request, the outcome, the PoA and the broker's decision (signed all the same).
    records = await read_request(stack.kafka_bootstrap, request_id, ns)
    carried = {type(r.payload).__name__: r.envelope.traceparent or "" for r in records if r.envelope is not None}
    assert carried["IssuanceRequested"].split("-")[2] == issue["span_id"]
    for name in ("IssuanceRequested", "QuorumReached", "PoaIssued", "ActionRequested", "BrokerDecision"):
        assert carried[name].split("-")[1:2] == [trace_id], (name, carried)
    decided = next(r for r in records if isinstance(r.payload, BrokerDecision))
    assert decided.envelope is not None
    assert decided.envelope.traceparent is not None
    assert decided.envelope.traceparent.split("-")[2] == broker["span_id"]
    # The HTTP decision: made in the decision queue's batch, its record continues the call's server span.
    authorize = by_name[("broker", "POST /v1/authorize")]
    assert authorize["parent_span_id"] == root_id
    # The outbox relay publishes right after answering: both decisions are awaited on Kafka.
    await events(
        stack.kafka_bootstrap,
        [topic_name(Topic.BROKER_DECISIONS, ns)],
        lambda e: isinstance(e.payload, BrokerDecision) and e.payload.request_id == request_id,
        count=2,
        what=f"both broker decisions of {request_id}",
    )
    records = await read_request(stack.kafka_bootstrap, request_id, ns)
    decisions = [r for r in records if isinstance(r.payload, BrokerDecision) and r.envelope is not None]
    denied = [r.envelope for r in decisions if r.envelope is not None and r.envelope.id != decided.envelope.id]
    assert len(denied) == 1, decisions
    assert denied[0].traceparent is not None
    assert denied[0].traceparent.split("-")[1:3] == [trace_id, authorize["span_id"]]

    # `atb trace` names the trace.
    monkeypatch.setenv("ATB_KAFKA_BOOTSTRAP_SERVERS", stack.kafka_bootstrap)
    monkeypatch.setenv("ATB_TOPIC_NAMESPACE", ns)
    shown = await asyncio.to_thread(CliRunner().invoke, app, ["trace", request_id])
    assert shown.exit_code == 0, shown.output
    assert f"trace id {trace_id}" in shown.output
    as_json = await asyncio.to_thread(CliRunner().invoke, app, ["trace", request_id, "--json"])
    assert json.loads(as_json.output)["trace_ids"] == [trace_id]


async def test_every_line_every_service_logged_is_json_with_the_schema(
    traced_stack: tuple[RunningStack, Path],
) -> None:
    stack, _spans_file = traced_stack
    # Something to log at the gateway's edge: one request answered 404 over mTLS.
    svid = ensure_svid(stack.state_dir, AGENT)
    async with GatewayClient(
        svid=svid, bundle_path=bundle_path(stack.state_dir), base_url=stack.stack.gateway_url
    ) as gateway:
        with pytest.raises(GatewayError) as refused:
            await gateway.status("req-unknown-to-the-gateway")
    assert refused.value.status == 404
    logs = {name: proc.log_path for name, proc in stack.stack.processes.items()}
    assert set(SERVICES) <= set(logs), logs
    # The access line is written once the answer is sent: wait for it (bounded), then read every log whole.
    # The access line is written once the answer is sent, to a log file of another process: polled.
    await until(
        lambda: asyncio.to_thread(logs["gateway"].read_text),
        lambda text: "/requests/req-unknown-to-the-gateway" in text,
        timeout=10,
        what="the gateway's access line for the probe",
    )
    access: list[dict[str, Any]] = []
    for name in SERVICES:
        lines = [line for line in logs[name].read_text().splitlines() if not line.startswith("=== ")]
        assert lines, name  # every service logged at least its start
        for line in lines:
            parsed = json.loads(line)  # not JSON: fails here
            assert set(REQUIRED_FIELDS) <= set(parsed), (name, line)
            assert parsed["service.name"] == name, line
            if parsed["log.logger"] == "atb.access":
                access.append(parsed)
    probe = next(line for line in access if line["url.path"] == "/requests/req-unknown-to-the-gateway")
    assert probe["http.request.method"] == "GET"
    assert probe["http.response.status_code"] == 404
    assert probe["tls.client.x509.alternative_names"] == [AGENT]
    assert probe["service.name"] == "gateway"
