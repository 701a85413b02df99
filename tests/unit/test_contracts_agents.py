"""contracts.agents: which tenants each agent acts for (docs/tenants.md; issue 14, point 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from atb_identity import SpiffeId
from atb_runtime.agents import DEFAULT_AGENT_REGISTRY, load_agent_registry
from contracts.agents import AgentRegistry, AgentRegistryError, RegisteredAgent
from contracts.reasons import ReasonCode

ROOT = Path(__file__).parents[2]
CRM = "spiffe://atb.local/agent/crm-assistant"
SHARED = "spiffe://atb.local/agent/shared-services-bot"


def registry(*entries: dict[str, Any]) -> AgentRegistry:
    return AgentRegistry.from_mapping({"agents": list(entries)})


REGISTRY = registry(
    {"agent": CRM, "tenants": ["acme"]},
    {"agent": SHARED, "tenants": ["acme", "globex"]},
)


def test_an_agent_acts_for_its_registered_tenants_only() -> None:
    assert REGISTRY.tenants_of(CRM) == frozenset({"acme"})
    assert REGISTRY.allows(CRM, "acme")
    assert not REGISTRY.allows(CRM, "globex")
    assert REGISTRY.refusal_reason(CRM, "acme") is None
    refusal = REGISTRY.refusal_reason(CRM, "globex")
    assert refusal is not None
    assert refusal.code is ReasonCode.TENANT_NOT_ALLOWED
    assert "globex" in refusal.detail


def test_an_agent_with_two_tenants_acts_for_both() -> None:
    assert REGISTRY.tenants_of(SHARED) == frozenset({"acme", "globex"})
    assert REGISTRY.allows(SHARED, "acme")
    assert REGISTRY.allows(SHARED, "globex")
    assert not REGISTRY.allows(SHARED, "initech")


def test_an_unregistered_agent_acts_for_no_tenant() -> None:
    stranger = "spiffe://atb.local/agent/stranger"
    assert REGISTRY.tenants_of(stranger) == frozenset()
    assert not REGISTRY.is_registered(stranger)
    assert not REGISTRY.allows(stranger, "acme")
    refusal = REGISTRY.refusal_reason(stranger, "acme")
    assert refusal is not None
    assert refusal.code is ReasonCode.TENANT_NOT_ALLOWED
    assert "not in the agent registry" in refusal.detail
    assert AgentRegistry(()).tenants_of(CRM) == frozenset()


def test_spiffe_ids_are_looked_up_normalised_like_the_approver_directory() -> None:
    assert REGISTRY.tenants_of("SPIFFE://ATB.LOCAL/agent/CRM-assistant") == frozenset({"acme"})
    assert REGISTRY.tenants_of(" spiffe://atb.local/agent/crm-assistant ") == frozenset({"acme"})
    assert REGISTRY.tenants_of("spiffe://atb.local/agent/crm-assistant2") == frozenset()
    assert REGISTRY.tenants_of("spiffe://atb.local/agent/crm") == frozenset()


def test_tenants_are_compared_exactly() -> None:
    assert not REGISTRY.allows(CRM, "ACME")
    assert not REGISTRY.allows(CRM, "acme ")
    assert not REGISTRY.allows(CRM, "ａｃｍｅ")  # fullwidth


def test_a_refusal_of_a_huge_agent_id_stays_short() -> None:
    refusal = REGISTRY.refusal_reason("spiffe://atb.local/agent/" + "a" * 2000, "acme")
    assert refusal is not None
    assert len(refusal.detail) < 512


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "JSON object"),
        ({}, "'agents' must be a list"),
        ({"agents": {}}, "'agents' must be a list"),
        ({"agents": [], "extra": 1}, "unknown field"),
        ({"agents": ["spiffe://atb.local/agent/x"]}, r"agents\[0\]: must be an object"),
        ({"agents": [{"agent": CRM}]}, "missing field"),
        ({"agents": [{"tenants": ["acme"]}]}, "missing field"),
        ({"agents": [{"agent": CRM, "tenants": ["acme"], "role": "x"}]}, "unknown field"),
        ({"agents": [{"agent": 7, "tenants": ["acme"]}]}, "must be a string"),
        ({"agents": [{"agent": CRM, "tenants": "acme"}]}, "must be a list"),
        ({"agents": [{"agent": CRM, "tenants": []}]}, "at least one"),
        ({"agents": [{"agent": CRM, "tenants": [7]}]}, "must be a string"),
        ({"agents": [{"agent": CRM, "tenants": [["acme"]]}]}, "must be a string"),
        ({"agents": [{"agent": CRM, "tenants": ["acme", "acme"]}]}, "twice"),
        ({"agents": [{"agent": CRM, "tenants": [""]}]}, "1 to 64"),
        ({"agents": [{"agent": CRM, "tenants": ["a" * 65]}]}, "1 to 64"),
        ({"agents": [{"agent": CRM, "tenants": ["ac me"]}]}, "no spaces"),
        ({"agents": [{"agent": CRM, "tenants": ["acme\n"]}]}, "no spaces"),
        ({"agents": [{"agent": CRM, "tenants": ["Acme"]}]}, "normal form"),
        ({"agents": [{"agent": CRM, "tenants": ["ａｃｍｅ"]}]}, "normal form"),
        ({"agents": [{"agent": CRM, "tenants": [f"t{i}" for i in range(65)]}]}, "more than 64"),
        ({"agents": [{"agent": "crm-assistant", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "https://atb.local/agent/x", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://ATB.local/agent/x", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent//x", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent/..", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent/./x", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent/x?q=1", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local:443/agent/x", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent/x/", "tenants": ["acme"]}]}, "not a SPIFFE ID"),
        ({"agents": [{"agent": "spiffe://atb.local/agent/" + "a" * 2048, "tenants": ["acme"]}]}, "2048 bytes"),
        (
            {
                "agents": [
                    {"agent": CRM, "tenants": ["acme"]},
                    {"agent": "spiffe://atb.local/agent/CRM-Assistant", "tenants": ["globex"]},
                ]
            },
            "one agent; list it once",
        ),
        (
            {"agents": [{"agent": CRM, "tenants": ["acme"]}, {"agent": CRM, "tenants": ["acme"]}]},
            "one agent; list it once",
        ),
    ],
)
def test_nonsense_is_refused_with_a_message_naming_it(data: Any, message: str) -> None:
    with pytest.raises(AgentRegistryError, match=message):
        AgentRegistry.from_mapping(data)


def test_the_constructors_refuse_nonsense_too() -> None:
    with pytest.raises(AgentRegistryError, match="must be a set"):
        RegisteredAgent(CRM, "acme")  # type: ignore[arg-type]  # a bare string would become {"a", "c", ...}
    with pytest.raises(AgentRegistryError, match="at least one"):
        RegisteredAgent(CRM, frozenset())
    with pytest.raises(AgentRegistryError, match="not a SPIFFE ID"):
        RegisteredAgent("alice", frozenset({"acme"}))
    with pytest.raises(AgentRegistryError, match="RegisteredAgent values"):
        AgentRegistry(({"agent": CRM, "tenants": ["acme"]},))  # type: ignore[arg-type]
    with pytest.raises(AgentRegistryError, match="must be a sequence"):
        AgentRegistry(CRM)  # type: ignore[arg-type]


def test_every_accepted_agent_is_a_valid_spiffe_id() -> None:
    """The registry's SPIFFE check agrees with atb_identity's on what it accepts."""
    for agent in ("spiffe://atb.local/agent/a", "spiffe://a-b.c_d/x/Y.z/1-2_3", "spiffe://td/p"):
        RegisteredAgent(agent, frozenset({"acme"}))
        SpiffeId.parse(agent)


def test_the_dev_registry_loads_and_covers_every_agent_the_demo_tests_and_benchmarks_use() -> None:
    assert DEFAULT_AGENT_REGISTRY == ROOT / "config" / "agents.json"
    dev = load_agent_registry()
    used: set[str] = set()
    for folder in ("atb", "bench", "tests/e2e"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "ATB_AGENT_REGISTRY_PATH" in text:
                continue  # brings its own registry (tests/e2e/test_tenants.py)
            used.update(re.findall(r"spiffe://atb\.local/agent/[A-Za-z0-9._-]+", text))
    used.discard("spiffe://atb.local/agent/my-bot")  # atb/sdk/__init__.py's docstring example
    missing = sorted(a for a in used if not dev.is_registered(a))
    assert not missing, f"config/agents.json lacks {missing}"
    for agent in used:
        assert "acme" in dev.tenants_of(agent), agent


def test_the_loader_reads_a_file_and_refuses_a_bad_one(tmp_path: Path) -> None:
    good = tmp_path / "agents.json"
    good.write_text(json.dumps({"agents": [{"agent": CRM, "tenants": ["acme"]}]}), encoding="utf-8")
    assert load_agent_registry(good).tenants_of(CRM) == frozenset({"acme"})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"agents": [{"agent": CRM, "tenants": ["Acme"]}]}), encoding="utf-8")
    with pytest.raises(AgentRegistryError):
        load_agent_registry(bad)
    with pytest.raises(FileNotFoundError):
        load_agent_registry(tmp_path / "absent.json")
