"""Load the agent registry (which tenants each agent acts for; docs/tenants.md).

The model and its validation are `contracts.agents.AgentRegistry`; this is only
the file read. Gateway, approvals, issuer and broker load the same file
(`ATB_AGENT_REGISTRY_PATH`, default config/agents.json) at start: a malformed
registry stops the service instead of running with a guess.
"""

from __future__ import annotations

import json
from pathlib import Path

from contracts.agents import AgentRegistry

__all__ = ["DEFAULT_AGENT_REGISTRY", "load_agent_registry"]

DEFAULT_AGENT_REGISTRY = Path(__file__).resolve().parents[3] / "config" / "agents.json"


def load_agent_registry(path: Path | None = None) -> AgentRegistry:
    """The registry at `path` (default config/agents.json); raises on a missing or malformed file."""
    data = json.loads((path or DEFAULT_AGENT_REGISTRY).read_text(encoding="utf-8"))
    return AgentRegistry.from_mapping(data)
