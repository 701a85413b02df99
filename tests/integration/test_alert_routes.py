"""Every alert rule reaches the receiver its severity names (deploy/alertmanager/alertmanager.yml).

The routing is checked by Alertmanager's own `amtool config routes test` (pinned, built from the
Go module proxy by `atb dev tools`), with each rule's labels from deploy/prometheus/alerts.yml.
The expected receivers come from the operating model's severities, written here once:
P1 pages on-call (and a security alert also reaches the Security Lead), P2 the team lead,
P3 the ticket queue, P4 the backlog; an unknown severity is treated as P2.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from atb.dev.config import DevConfig
from atb.dev.toolchain import AMTOOL

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"


def expected(labels: dict[str, str]) -> str:
    severity = labels.get("severity")
    if severity == "P1":
        return "p1-oncall-pager,p1-security-lead" if labels.get("team") == "security" else "p1-oncall-pager"
    return {"P3": "p3-ticket-queue", "P4": "p4-backlog"}.get(severity or "", "p2-team-lead")


@pytest.fixture(scope="module")
def amtool() -> Path:
    return asyncio.run(AMTOOL.build(DevConfig.from_env()))


def route(amtool: Path, labels: dict[str, str]) -> str:
    out = subprocess.run(
        [str(amtool), "config", "routes", "test", f"--config.file={CONFIG}", *(f"{k}={v}" for k, v in labels.items())],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def rules() -> list[dict[str, str]]:
    document = yaml.safe_load(RULES.read_text())
    found = [
        {"alertname": rule["alert"], **rule.get("labels", {})}
        for group in document["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]
    assert found, f"no alert rules in {RULES}"
    return found


@pytest.mark.parametrize("labels", rules(), ids=lambda labels: labels["alertname"])
def test_every_alert_rule_reaches_the_receivers_of_its_severity(amtool: Path, labels: dict[str, str]) -> None:
    assert labels.get("severity") in {"P1", "P2", "P3", "P4"}, f"{labels['alertname']} has no P1-P4 severity"
    assert route(amtool, labels) == expected(labels)


@pytest.mark.parametrize(
    "labels",
    [
        {"alertname": "X", "severity": "P4", "team": "platform-ops"},
        {"alertname": "X", "severity": "P1", "team": "platform-ops"},
        {"alertname": "X"},
        {"alertname": "X", "severity": "P9"},
    ],
    ids=["p4", "p1-not-security", "no-severity", "unknown-severity"],
)
def test_severities_no_rule_uses_yet_route_as_documented(amtool: Path, labels: dict[str, str]) -> None:
    assert route(amtool, labels) == expected(labels)


def test_the_config_is_valid_and_every_receiver_is_a_documented_placeholder(amtool: Path) -> None:
    out = subprocess.run([str(amtool), "check-config", str(CONFIG)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    config = yaml.safe_load(CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            assert ".invalid/replace-with-" in hook["url"], receiver["name"]
