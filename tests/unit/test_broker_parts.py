"""Broker parts: connector registry, OPA answer parsing (fail closed), JWKS refresh limits, spent store."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from atb_runtime.opa import PolicyUnavailableError
from broker.adapters.keys import KeyRing
from broker.adapters.policy import PolicyGate
from broker.adapters.revocations import REQUEST_REVOCATION_S, RevocationList
from broker.adapters.spent import Spend, SpendVerdict, SpentStore
from broker.domain import Connector, ConnectorRegistry, RegistryError, Route, RouteRefused
from broker.settings import BrokerSettings
from contracts import MAX_LIFETIME_SECONDS, PoaRevoked
from contracts.agents import AgentRegistry
from issuer.adapters.keys import load_or_create_key

REGISTRY = {
    "connectors": [
        {
            "name": "sap",
            "actions": ["sap.*"],
            "egress": ["sap.example.internal"],
            "endpoint": "https://sap.example.internal/api",
        },
        {"name": "crm", "actions": ["crm.contact.read", "crm.contact.update"], "egress": ["crm.example.com"]},
    ]
}


def test_registry_routes_by_action_pattern() -> None:
    registry = ConnectorRegistry.from_json(REGISTRY)
    route = registry.route("sap.vendor.change", "sap:vendor/1")
    assert isinstance(route, Route)
    assert route.connector.name == "sap"
    crm = registry.route("crm.contact.read", "https://crm.example.com/contacts/1")
    assert isinstance(crm, Route)
    assert crm.connector.name == "crm"


@pytest.mark.parametrize(
    ("action", "resource", "named", "code"),
    [
        ("hr.employee.export_pii", "hr:emp/1", None, "connector_unknown"),
        ("crm.contacts.bulk_delete", "crm:all", None, "connector_unknown"),  # exact names: no prefix match
        ("sapx.vendor.change", "sap:vendor/1", None, "connector_unknown"),  # `sap.*` is not `sap*`
        ("crm.contact.read", "https://evil.example/x", None, "egress_denied"),
        ("crm.contact.read", "https://crm.example.com.evil.example/x", None, "egress_denied"),
        ("crm.contact.read", "https://user@evil.example/crm.example.com", None, "egress_denied"),
        ("crm.contact.read", "ftp://crm.example.com/x", None, "egress_denied"),
        ("crm.contact.read", "crm:contact/1", "sap", "connector_mismatch"),
    ],
)
def test_registry_refuses(action: str, resource: str, named: str | None, code: str) -> None:
    route = ConnectorRegistry.from_json(REGISTRY).route(action, resource, named)
    assert isinstance(route, RouteRefused)
    assert route.reason.code.value == code
    assert route.reason.detail


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"connectors": [{"name": "a", "actions": [], "egress": []}]},
        {"connectors": [{"name": "a", "actions": ["x*"], "egress": []}]},
        {"connectors": [{"name": "a", "actions": ["x.*"], "egress": [], "endpoint": "https://elsewhere.example"}]},
        {
            "connectors": [
                {"name": "a", "actions": ["x.*"], "egress": []},
                {"name": "a", "actions": ["y.*"], "egress": []},
            ]
        },
        {"connectors": [{"name": "a", "actions": ["x.*"], "egress": [], "secret": "no"}]},
        {"connectors": ["a"]},
    ],
)
def test_bad_registry_is_refused_at_start(doc: Any) -> None:
    with pytest.raises(RegistryError):
        ConnectorRegistry.from_json(doc)


def test_the_shipped_registry_loads_and_covers_the_seed_actions() -> None:
    import json

    from broker.adapters.connectors import load_registry

    registry = load_registry(BrokerSettings().registry_path())
    policy = json.loads((Path(__file__).resolve().parents[2] / "opa" / "policy" / "data.json").read_text())[
        "atb_policy"
    ]
    for key in ("low_risk_allowlist", "medium_risk_actions", "high_risk_actions", "critical_actions"):
        for action in policy[key]:
            assert isinstance(registry.route(action, "x:1"), Route), action


class _FakeOpa:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        None,
        {},
        [],
        [{"allow": True, "reasons": [], "tier": "low"}],
        [{"allow": "yes", "reasons": [], "tier": "low", "policy_version": "1"}],
        [{"allow": True, "reasons": [], "tier": "trivial", "policy_version": "1"}],
        [{"allow": True, "reasons": [], "tier": "low", "policy_version": "1"}] * 2,
        # Reasons are data: text, an unknown code, a missing or extra field, a deny without a reason.
        [{"allow": False, "reasons": ["tier_too_low: x"], "tier": "low", "policy_version": "1"}],
        [{"allow": False, "reasons": [{"code": "tier_too_lo", "detail": "x"}], "tier": "low", "policy_version": "1"}],
        [{"allow": False, "reasons": [{"code": "tier_too_low"}], "tier": "low", "policy_version": "1"}],
        [{"allow": False, "reasons": [{"code": "tier_too_low", "detail": 3}], "tier": "low", "policy_version": "1"}],
        [
            {
                "allow": False,
                "reasons": [{"code": "tier_too_low", "detail": "x", "why": "y"}],
                "tier": "low",
                "policy_version": "1",
            }
        ],
        [{"allow": False, "reasons": [], "tier": "low", "policy_version": "1"}],
        [{"allow": True, "reasons": [{"code": "poa_valid", "detail": ""}], "tier": "low", "policy_version": "1"}],
    ],
)
def test_a_malformed_policy_answer_is_policy_unavailable(answer: Any) -> None:
    from broker.domain import Presentation
    from tests.unit.test_broker_corpus import ACTION, AGENT, THUMB

    gate = PolicyGate(_FakeOpa(answer), agents=AgentRegistry(()), allow_unmandated_low_risk=False)  # type: ignore[arg-type]
    presentation = Presentation(ACTION, AGENT, THUMB, "http:1", "http")
    with pytest.raises(PolicyUnavailableError):
        asyncio.run(gate.decide([(presentation, None)]))


def test_the_policys_deny_reasons_are_read_as_codes_and_details() -> None:
    from broker.domain import Presentation
    from contracts.reasons import Reason, ReasonCode
    from tests.unit.test_broker_corpus import ACTION, AGENT, THUMB

    reasons = [{"code": "ticket_missing", "detail": "no ticket"}, {"code": "tier_too_low", "detail": ""}]
    answer = [{"allow": False, "reasons": reasons, "tier": "critical", "policy_version": "7"}]
    gate = PolicyGate(_FakeOpa(answer), agents=AgentRegistry(()), allow_unmandated_low_risk=False)  # type: ignore[arg-type]
    (decided,) = asyncio.run(gate.decide([(Presentation(ACTION, AGENT, THUMB, "http:1", "http"), None)]))
    assert decided.reasons == (
        Reason(ReasonCode.TICKET_MISSING, "no ticket"),
        Reason(ReasonCode.TIER_TOO_LOW, ""),
    )
    assert (decided.allow, decided.tier.value, decided.policy_version) == (False, "critical", "7")


def test_unknown_kid_refresh_is_rate_limited(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path / "k.pem")
    hits = 0

    async def jwks(_request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"keys": [key.jwk]})

    async def scenario() -> tuple[bool, bool, object]:
        app = web.Application()
        app.router.add_get("/jwks", jwks)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        ring = KeyRing("localhost:1", "", jwks_url=f"http://127.0.0.1:{port}/jwks", refresh_interval_s=60)
        try:
            first = await ring.refresh()
            # A flood of made-up kids right after: no further fetches.
            rest = await asyncio.gather(*(ring.refresh() for _ in range(50)))
            return first, any(rest), ring.get(key.kid)
        finally:
            await runner.cleanup()

    first, again, learned = asyncio.run(scenario())
    assert first is True
    assert again is False
    assert hits == 1
    assert learned is not None


def _spend_in_process(url: str, jti: str, who: str, out: Any) -> None:
    store = SpentStore(url)
    out.put(asyncio.run(store.spend_many([Spend(jti, who, "req-1", "agent", int(time.time()) + 60)]))[0])
    store.close()


def test_one_jti_spent_from_many_processes_has_one_owner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'spent.db'}"
    SpentStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_spend_in_process, args=(url, "jti-contended-000001", f"p{i}", out)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [out.get(timeout=5) for _ in procs]
    assert results.count(SpendVerdict.OWNED) == 1
    assert results.count(SpendVerdict.REPLAYED) == 5


def _synchronous(store: SpentStore) -> int:
    with store._engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA synchronous").scalar_one())


def test_the_sqlite_spent_store_is_durable_before_the_answer_by_default(tmp_path: Path) -> None:
    assert BrokerSettings().spent_sqlite_synchronous == "FULL"
    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    assert _synchronous(store) == 2  # FULL: every commit fsynced
    spend = Spend("jti-durable-00000001", "p", "req-d", "agent", int(time.time()) + 60)
    assert asyncio.run(store.spend_many([spend])) == [SpendVerdict.OWNED]
    store.close()
    fast = SpentStore(f"sqlite:///{tmp_path / 'fast.db'}", synchronous="NORMAL")  # the documented trade-off
    assert _synchronous(fast) == 1
    fast.close()
    with pytest.raises(ValueError, match="synchronous"):
        SpentStore(f"sqlite:///{tmp_path / 'off.db'}", synchronous="OFF")


def test_forget_expired_keeps_live_rows(tmp_path: Path) -> None:
    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    now = int(time.time())
    spends = [
        Spend("old-000000000000001", "a", "r-old", "x", now - 10),
        Spend("live-00000000000001", "b", "r-live", "x", now + 60),
    ]
    assert asyncio.run(store.spend_many(spends)) == [SpendVerdict.OWNED, SpendVerdict.OWNED]
    assert asyncio.run(store.forget_expired(now)) == 1
    assert store.owner("live-00000000000001") == "b"
    assert store.owner("old-000000000000001") is None
    store.close()


def test_seed_flag_spelling_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOW_UNMANDATED_LOW_RISK", "true")
    assert BrokerSettings().allow_unmandated_low_risk is True
    monkeypatch.setenv("ALLOW_UNMANDATED_LOW_RISK", "maybe")
    with pytest.raises(ValueError, match="true or false"):
        BrokerSettings()
    monkeypatch.delenv("ALLOW_UNMANDATED_LOW_RISK")
    assert BrokerSettings().allow_unmandated_low_risk is False


def test_connector_dataclass_pattern_semantics() -> None:
    c = Connector("x", ("a.*", "b.c"), frozenset({"h"}))
    assert c.serves("a.b.c")
    assert c.serves("b.c")
    assert not c.serves("b.c.d")
    assert not c.serves("a")


def test_outbox_rows_survive_a_crash_and_are_published_once_by_their_instance(tmp_path: Path) -> None:
    from atb_runtime import Outgoing
    from broker.adapters.outbox import OutboxRelay, encode_outbox

    url = f"sqlite:///{tmp_path / 'spent.db'}"
    events = [Outgoing(topic="atb.broker.decisions", key=b"req-1", value=b'{"a":1}')]

    async def before_crash() -> None:
        store = SpentStore(url)
        spends = [Spend("jti-outbox-0000000001", "http:1", "req-1", "agent", int(time.time()) + 60)]
        assert await store.commit(spends, lambda owned: encode_outbox(events), "0") == [SpendVerdict.OWNED]
        await store.commit([], lambda owned: encode_outbox(events), "1")  # another replica's row
        store.close()  # "crash": nothing published

    sent: list[Outgoing] = []

    async def send(records: Any) -> None:
        sent.extend(records)

    async def after_restart() -> tuple[int, int]:
        store = SpentStore(url)
        relay = OutboxRelay(store, send, "0")
        first = await relay.drain()
        second = await relay.drain()
        store.close()
        return first, second

    asyncio.run(before_crash())
    first, second = asyncio.run(after_restart())
    assert (first, second) == (1, 0)
    assert sent == events  # only instance 0's row, once


def test_a_failing_send_keeps_rows_for_the_next_try(tmp_path: Path) -> None:
    from atb_runtime import Outgoing
    from broker.adapters.outbox import OutboxRelay, encode_outbox

    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    events = [Outgoing(topic="t", key=b"k", value=b"{}")]

    async def broken(records: Any) -> None:
        raise ConnectionError("kafka down")

    async def scenario() -> int:
        await store.commit([], lambda owned: encode_outbox(events), "0")
        with pytest.raises(ConnectionError):
            await OutboxRelay(store, broken, "0").drain()
        sent: list[Any] = []

        async def ok(records: Any) -> None:
            sent.extend(records)

        await OutboxRelay(store, ok, "0").drain()
        return len(sent)

    assert asyncio.run(scenario()) == 1
    store.close()


def test_the_policy_input_carries_the_registered_tenants_of_the_proven_agent() -> None:
    from broker.domain import Presentation
    from contracts.agents import RegisteredAgent
    from tests.unit.test_broker_corpus import ACTION, AGENT, THUMB

    seen: list[dict[str, Any]] = []

    class _Recording(_FakeOpa):
        async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
            seen.append(input_doc)
            return [{"allow": True, "reasons": [], "tier": "low", "policy_version": "1"}]

    agents = AgentRegistry((RegisteredAgent(AGENT, frozenset({"globex", "acme"})),))
    gate = PolicyGate(_Recording(None), agents=agents, allow_unmandated_low_risk=False, cache_seconds=0)  # type: ignore[arg-type]
    asyncio.run(gate.decide([(Presentation(ACTION, AGENT, THUMB, "http:1", "http"), None)]))
    stranger = Presentation(ACTION, "spiffe://atb.local/agent/stranger", THUMB, "http:2", "http")
    asyncio.run(gate.decide([(stranger, None)]))
    assert seen[0]["batch"][0]["request"]["agent_tenants"] == ["acme", "globex"]
    assert seen[1]["batch"][0]["request"]["agent_tenants"] == []  # unregistered: no tenant (policy: critical)


def test_a_second_poa_of_a_spent_request_is_refused_and_its_redelivery_keeps_its_answer(tmp_path: Path) -> None:
    """Single use per request as well as per jti, in one transaction (docs/scaling.md)."""
    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    exp = int(time.time()) + 60
    first = Spend("jti-first-000000001", "kafka:a/0/1", "req-pay", "agent", exp)
    second = Spend("jti-second-00000001", "kafka:a/0/2", "req-pay", "agent", exp)
    other = Spend("jti-other-000000001", "kafka:a/0/3", "req-other", "agent", exp)
    assert asyncio.run(store.spend_many([first])) == [SpendVerdict.OWNED]
    assert asyncio.run(store.spend_many([second, other])) == [SpendVerdict.REQUEST_SPENT, SpendVerdict.OWNED]
    # Redeliveries are the same presentations: the same answers, whatever the order.
    assert asyncio.run(store.spend_many([second, first])) == [SpendVerdict.REQUEST_SPENT, SpendVerdict.OWNED]
    assert store.request_owner("req-pay") == "jti-first-000000001"
    # Two PoAs of one request in one batch: the first in the batch wins, the other is refused.
    a = Spend("jti-batch-a00000001", "http:1", "req-batch", "agent", exp)
    b = Spend("jti-batch-b00000001", "http:2", "req-batch", "agent", exp)
    assert asyncio.run(store.spend_many([a, b])) == [SpendVerdict.OWNED, SpendVerdict.REQUEST_SPENT]
    store.close()


def test_spent_requests_are_forgotten_only_well_after_their_poa_expired(tmp_path: Path) -> None:
    from broker.adapters.spent import REQUEST_MEMORY_S

    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    now = int(time.time())
    asyncio.run(store.spend_many([Spend("jti-expired-0000001", "p", "req-x", "a", now - 10)]))
    asyncio.run(store.forget_expired(now))
    assert store.owner("jti-expired-0000001") is None
    assert store.request_owner("req-x") == "jti-expired-0000001"  # a second PoA could still be alive
    asyncio.run(store.forget_expired(now + REQUEST_MEMORY_S + 1))
    assert store.request_owner("req-x") is None
    store.close()


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _revocation(jti: str, request_id: str, at: float, expires: float | None) -> PoaRevoked:
    return PoaRevoked(
        request_id=request_id,
        jti=jti,
        reason="stolen",
        revoked_by="ops",
        revoked_at=datetime.fromtimestamp(at, UTC),
        expires_at=None if expires is None else datetime.fromtimestamp(expires, UTC),
    )


def test_revocations_are_forgotten_once_the_revoked_poa_has_expired() -> None:
    clock = _Clock(1_000_000.0)
    revocations = RevocationList("localhost:1", "", leeway_s=10, clock=clock)
    revocations.add(_revocation("jti-a", "req-a", clock.now, clock.now + 60))
    revocations.add(_revocation("*", "req-b", clock.now, clock.now + 120))
    revocations.add(_revocation("jti-old", "req-c", clock.now - 3600, clock.now - 3000))  # long expired
    assert len(revocations) == 2
    assert revocations.revoked("jti-a", "req-x") == "stolen"
    assert revocations.revoked("jti-any", "req-b") == "stolen"
    clock.now += 60 + 10  # jti-a's PoA has expired, leeway included: refused as expired from now on
    assert revocations.revoked("jti-a", "req-x") is None
    assert revocations.revoked("jti-any", "req-b") == "stolen"
    clock.now += 60
    assert revocations.revoked("jti-any", "req-b") is None
    assert len(revocations) == 0


def test_revocations_without_expiry_are_bounded_from_when_they_were_made() -> None:
    clock = _Clock(1_000_000.0)
    revocations = RevocationList("localhost:1", "", leeway_s=10, clock=clock)
    revocations.add(_revocation("jti-a", "req-a", clock.now, None))  # published before `expires_at` existed
    revocations.add(_revocation("*", "req-b", clock.now, None))
    clock.now += MAX_LIFETIME_SECONDS + 5  # within the leeway: a PoA issued just before could still verify
    assert revocations.revoked("jti-a", "req-x") == "stolen"
    clock.now += 10
    assert revocations.revoked("jti-a", "req-x") is None
    assert revocations.revoked("jti-any", "req-b") == "stolen"  # a whole request: up to 15 minutes
    clock.now += REQUEST_REVOCATION_S
    assert revocations.revoked("jti-any", "req-b") is None


def test_a_later_revocation_of_the_same_poa_extends_it() -> None:
    clock = _Clock(1_000_000.0)
    revocations = RevocationList("localhost:1", "", leeway_s=0, clock=clock)
    revocations.add(_revocation("*", "req-a", clock.now, clock.now + 10))
    revocations.add(_revocation("*", "req-a", clock.now, clock.now + 100))
    clock.now += 50
    assert revocations.revoked("jti-any", "req-a") == "stolen"


def test_revocation_memory_stays_bounded_over_a_long_topic() -> None:
    """A day of revocations, one a second, each of a PoA living 5 minutes: at most ~5 minutes are kept."""
    clock = _Clock(1_000_000.0)
    revocations = RevocationList("localhost:1", "", leeway_s=10, clock=clock)
    most = 0
    for i in range(86_400):
        clock.now += 1
        revocations.add(_revocation(f"jti-{i}", f"req-{i}", clock.now, clock.now + MAX_LIFETIME_SECONDS))
        most = max(most, len(revocations))
    assert most <= MAX_LIFETIME_SECONDS + 10 + 1
    assert len(revocations._expiry) <= MAX_LIFETIME_SECONDS + 10 + 1
    # A replica that reads the whole day from the beginning an hour later keeps none of it.
    late = RevocationList("localhost:1", "", leeway_s=10, clock=_Clock(clock.now + 3600))
    for i in range(0, 86_400, 97):
        late.add(_revocation(f"jti-{i}", f"req-{i}", 1_000_000.0 + i, 1_000_000.0 + i + MAX_LIFETIME_SECONDS))
    assert len(late) == 0


class _OpaEval:
    """The real policy, evaluated by the `opa` binary (`opa eval`), for a PolicyGate."""

    ROOT = Path(__file__).resolve().parents[2]

    async def evaluate(self, path: str, input_doc: dict[str, Any]) -> Any:
        import json

        opa = self.ROOT / ".cache" / "bin" / "opa"
        query = "data." + path.replace("/", ".")
        process = await asyncio.create_subprocess_exec(
            *(str(opa), "eval", "--format", "json", "--stdin-input", "-d", str(self.ROOT / "opa" / "policy"), query),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await process.communicate(json.dumps(input_doc).encode())
        assert process.returncode == 0
        return json.loads(out)["result"][0]["expressions"][0]["value"]


def _claims_with(accountable: str, approval: str | None = None, dual: list[str] | None = None) -> Any:
    from contracts import PoaClaims
    from tests.unit.test_broker_corpus import claims

    body = claims()
    leg = dict(body["leg"], accountable_party={"type": "employee", "id": accountable})
    if approval is not None:
        leg["approval"] = {"approver_id": approval, "approved_at": "2026-01-01T00:00:00Z"}
    if dual is not None:
        del leg["approval"]
        leg["dual_control"] = {"required": True, "approvers": [{"id": i, "type": "manager"} for i in dual]}
        body["tier"] = "high"
    body["leg"] = leg
    return PoaClaims.model_validate(body)


@pytest.mark.parametrize(
    ("accountable", "approval", "dual", "denial"),
    [
        ("emp-100", "EMP-100", None, "self_approval"),  # case
        ("emp-100", " emp-100\t", None, "self_approval"),  # whitespace
        ("emp-100", "ｅｍｐ－１００", None, "self_approval"),  # fullwidth
        ("emp-200", "slack:UDAVE004", None, "self_approval"),  # an alias of dave, who is emp-200
        ("EMP-200", "spiffe://atb.local/user/ＤＡＶＥ ", None, "self_approval"),  # all of it at once
        ("emp-100", None, ["alice", "slack:UDAVE004"], ""),  # distinct people: allowed
        ("emp-200", None, ["alice", "Slack:UDAVE004"], "self_approval"),
        ("emp-100", None, ["alice", "spiffe://atb.local/user/alice"], "dual_control_not_distinct"),
        ("emp-100", None, ["ａｌｉｃｅ", "emp-101 "], "dual_control_not_distinct"),  # both are alice
    ],
)
def test_the_policy_compares_normalised_directory_principals(
    accountable: str, approval: str | None, dual: list[str] | None, denial: str
) -> None:
    from broker.adapters.policy import load_directory
    from broker.domain import Presentation
    from contracts.agents import RegisteredAgent
    from tests.unit.test_broker_corpus import ACTION, AGENT, THUMB

    if not (_OpaEval.ROOT / ".cache" / "bin" / "opa").exists():
        pytest.fail("OPA is not built (.cache/bin/opa): run `atb dev up` (make test builds it)", pytrace=False)
    agents = AgentRegistry((RegisteredAgent(AGENT, frozenset({"acme"})),))
    gate = PolicyGate(
        _OpaEval(),  # type: ignore[arg-type]
        agents=agents,
        allow_unmandated_low_risk=False,
        cache_seconds=0,
        directory=load_directory(),
    )
    action = ACTION.model_copy(update={"action": "sap.vendor.change" if dual else "crm.contact.update"})
    presentation = Presentation(action, AGENT, THUMB, "http:1", "http")
    (answer,) = asyncio.run(gate.decide([(presentation, _claims_with(accountable, approval, dual))]))
    if not denial:
        assert answer.allow, answer.reasons
    else:
        assert not answer.allow
        assert [r.code.value for r in answer.reasons] == [denial]


def test_the_wal_checkpoint_runs_outside_a_transaction(tmp_path: Path) -> None:
    """The relay's periodic checkpoint used to fail with "database table is locked" (after BEGIN IMMEDIATE)."""
    store = SpentStore(f"sqlite:///{tmp_path / 'spent.db'}")
    exp = int(time.time()) + 60
    asyncio.run(store.spend_many([Spend("jti-checkpoint-00001", "p", "req-ckpt", "a", exp)]))
    asyncio.run(store.checkpoint())
    assert store.owner("jti-checkpoint-00001") == "p"
    store.close()
