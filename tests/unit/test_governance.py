"""Repository governance of docs/architecture.md §2.3 (policy review), §2.4 (connector onboarding) and §2.7 (alerts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _owners() -> dict[str, list[str]]:
    rules: dict[str, list[str]] = {}
    for line in (ROOT / ".github" / "CODEOWNERS").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, *owners = line.split()
            rules[path] = owners
    return rules


def test_policy_changes_need_the_security_owners() -> None:
    owners = _owners()
    assert "@atb-project/security" in owners["/opa/policy/"]
    # The last matching CODEOWNERS line wins: nothing later may take opa/policy away from security.
    later = [p for p in list(owners)[list(owners).index("/opa/policy/") + 1 :] if "opa" in p]
    assert later == []


def test_every_codeowners_path_exists() -> None:
    for path in _owners():
        assert (ROOT / path.strip("/")).exists(), path


def test_connector_template_lists_egress_classification_and_steps() -> None:
    text = (ROOT / ".github" / "ISSUE_TEMPLATE" / "add-connector.md").read_text()
    front = text.split("---")[1]
    assert re.search(r'^title: "Add connector: <system>"$', front, re.MULTILINE)
    for heading in ("## Egress (Security reviews)", "## Data classification (Legal reviews)", "## Implementation"):
        assert heading in text
    assert len(re.findall(r"^- \[ \] ", text, re.MULTILINE)) >= 5


ALERTS = (ROOT / "deploy/prometheus/alerts.yml").read_text()
RULES = re.split(r"^      - alert: ", ALERTS, flags=re.MULTILINE)[1:]


@pytest.mark.parametrize("rule", RULES, ids=[r.split()[0] for r in RULES])
def test_every_alert_has_a_seed_severity_and_a_runbook_section(rule: str) -> None:
    name = rule.split()[0]
    assert re.search(r"^          severity: P[1-4]$", rule, re.MULTILINE), name
    anchor = re.search(r"runbook: docs/runbook.md#([a-z0-9-]+)", rule)
    assert anchor is not None, name
    assert anchor.group(1) == name.lower()
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    assert re.search(rf"^#+ {name}$", runbook, re.MULTILINE), f"docs/runbook.md has no section {name}"


def test_the_seed_p1_alert_exists() -> None:
    assert any(r.split()[0] == "ATBSecurityPolicyDenialSpike" and "severity: P1" in r for r in RULES)


def test_alert_expressions_use_metrics_the_broker_exports() -> None:
    from prometheus_client import generate_latest

    # Importing registers: the processors' metrics, every loop's consumer lag, the dead-letter counter,
    # the audit sink's rows and checkpoint time, and its lag gauge, every service's SVID expiry.
    import atb_runtime.eos
    import atb_runtime.identity
    import atb_runtime.lag
    import atb_runtime.records
    import atb_runtime.tracking  # noqa: F401
    import audit_sink.adapters.metrics
    import audit_sink.lag  # noqa: F401
    import broker.adapters.metrics  # noqa: F401 - registers the broker's metrics
    from atb.policy.decision_logs import DecisionLogMetrics

    # The decision-log receiver keeps its metrics in a registry of its own (one per app).
    exported = generate_latest().decode() + generate_latest(DecisionLogMetrics().registry).decode()
    used = set(re.findall(r"atb_[a-z_]+", ALERTS))
    for name in used:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        assert base in exported, name
