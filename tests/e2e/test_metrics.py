"""Every metric the dashboards and the alert rules query is served by a running service.

The stack runs as processes; one low-risk request goes from the agent to the broker's
decision so every loop has run. Then each service's `/metrics` is read, and every `atb_*`
name in the Grafana dashboards (deploy/grafana/dashboards/) and in the alert rules
(deploy/prometheus/alerts.yml) must be one of the metric families served, or one of a
histogram's or counter's sample names. A panel or rule over a misspelt or removed metric
fails here instead of showing nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import yaml  # type: ignore[import-untyped]
from prometheus_client import generate_latest

from atb.policy.decision_logs import DecisionLogMetrics
from atb.sdk import AgentClient
from atb_identity import ensure_svid
from contracts import AccountableParty, Decision, LegitimateInterest
from tests.e2e.conftest import RunningStack

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
AGENT = "spiffe://atb.local/agent/crm-bot"
LEG = LegitimateInterest(ref="LI-1", jurisdiction="US", accountable_party=AccountableParty(type="svc", id="s-1"))
_NAME = re.compile(r"\batb_[a-z0-9_]+")
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "counter": ("_created",),
    "summary": ("_sum", "_count"),
}


def queried() -> dict[str, set[str]]:
    """Every atb_* name queried, with where."""
    names: dict[str, set[str]] = {}
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                for name in _NAME.findall(target["expr"]):
                    names.setdefault(name, set()).add(f"{path.name}: {panel['title']}")
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            for name in _NAME.findall(str(rule.get("expr", ""))):
                names.setdefault(name, set()).add(f"alerts.yml: {rule.get('alert') or rule.get('record')}")
    return names


def served(exposition: str) -> set[str]:
    """The names a query may use: each family's, and the sample names its type adds."""
    names: set[str] = set()
    for family, kind in _TYPE.findall(exposition):
        names.add(family)
        names.update(family + suffix for suffix in _SUFFIXES.get(kind, ()))
    return names


async def test_every_metric_the_dashboards_and_alerts_query_is_served(running_stack: RunningStack) -> None:
    svid = ensure_svid(running_stack.state_dir, AGENT)
    agent = AgentClient(
        svid=svid, tenant="acme", bootstrap=running_stack.kafka_bootstrap, namespace=running_stack.namespace
    )
    async with agent:
        request_id = await agent.request_poa("crm.contact.read", "crm:contact/9", leg=LEG)
        issued = await agent.await_poa(request_id, timeout=60)
        decision = await agent.invoke("crm.contact.read", "crm:contact/9", poa=issued.token, request_id=request_id)
    assert decision.decision is Decision.ALLOW, decision.reasons

    exposed: set[str] = set()
    async with aiohttp.ClientSession() as session:
        for name, port in running_stack.stack.ops_ports.items():
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200, name
                exposed |= served(await response.text())
    # The decision-log receiver (`atb policy decision-log-receiver`) runs beside OPA, not in the
    # stack: its families are read from its own registry, as its /metrics serves them.
    exposed |= served(generate_latest(DecisionLogMetrics().registry).decode())
    wanted = queried()
    assert wanted, "no atb_* metric is queried by any dashboard or rule"
    missing = {name: sorted(where) for name, where in wanted.items() if name not in exposed}
    assert not missing, f"queried but served by no service: {missing}"


def test_the_name_reader_sees_histogram_and_counter_samples() -> None:
    text = "# HELP a_seconds x\n# TYPE a_seconds histogram\n# HELP b_total y\n# TYPE b_total counter\n"
    assert served(text) >= {"a_seconds_bucket", "a_seconds_count", "b_total"}
    assert "c_total" not in served(text)
