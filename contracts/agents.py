"""Which tenants each agent acts for: the agent registry (docs/tenants.md).

An agent's tenant is never its own word. The registry (`config/agents.json`,
`ATB_AGENT_REGISTRY_PATH`) binds each agent's SPIFFE ID to the tenant or tenants
it may act for; the gateway, approvals, the policy, the issuer's re-check and
the broker all read it. An agent that is not registered acts for no tenant: every
request and every presentation of it is refused (`tenant_not_allowed`), and the
policy finds any request of it cross-tenant (critical).

SPIFFE IDs are compared after `contracts.directory.normalize` (NFKC, case
folding), as the approver directory compares them; two entries that normalise to
one ID are refused. Tenant names are stored and compared exactly, and must be
written in their normal form already (lowercase, NFKC, no surrounding space):
a request for `ACME` is not a request for `acme`, it is refused.

Pure: no I/O. `AgentRegistry.from_mapping` takes the already-parsed JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from contracts.directory import normalize
from contracts.errors import AgentRegistryError
from contracts.reasons import Reason, ReasonCode

__all__ = ["AgentRegistry", "AgentRegistryError", "RegisteredAgent"]

MAX_TENANT = 64
"""As `IssuanceRequested.tenant`: a longer name could never be requested."""
MAX_TENANTS_PER_AGENT = 64
_MAX_SPIFFE_ID_BYTES = 2048
_AGENT_KEYS = frozenset({"agent", "tenants"})
# The SPIFFE ID syntax atb_identity.SpiffeId enforces (contracts may not import it):
# lowercase trust domain, a non-empty path of segments of letters, digits, '.', '-', '_'.
_SPIFFE_ID = re.compile(r"spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)+")
_DOT_SEGMENT = re.compile(r"/\.{1,2}(?=/|$)")
_TENANT = re.compile(r"[^\s\x00-\x1f\x7f]+")


def _check_spiffe_id(agent: str) -> None:
    if len(agent.encode()) > _MAX_SPIFFE_ID_BYTES:
        raise AgentRegistryError(f"agent {agent[:40]!r}...: longer than {_MAX_SPIFFE_ID_BYTES} bytes")
    if not _SPIFFE_ID.fullmatch(agent) or _DOT_SEGMENT.search(agent[len("spiffe://") :]):
        raise AgentRegistryError(f"agent {agent!r}: not a SPIFFE ID (spiffe://<trust domain>/<path>)")


def _check_tenant(agent: str, tenant: object) -> None:
    if not isinstance(tenant, str):
        raise AgentRegistryError(f"agent {agent!r}: tenants: must be strings, not {type(tenant).__name__}")
    if not 1 <= len(tenant) <= MAX_TENANT or not _TENANT.fullmatch(tenant):
        raise AgentRegistryError(
            f"agent {agent!r}: tenant {tenant!r}: must be 1 to {MAX_TENANT} characters, no spaces or controls"
        )
    if normalize(tenant) != tenant:
        raise AgentRegistryError(
            f"agent {agent!r}: tenant {tenant!r}: write it in normal form ({normalize(tenant)!r}); "
            "tenants are compared exactly"
        )


@dataclass(frozen=True)
class RegisteredAgent:
    """One agent and the tenants it acts for.

    `agent` is kept as configured (for messages); `key` is its normalised form, the
    one lookups use. The constructor rejects an entry that could never match a
    presented SVID or that names no tenant.
    """

    agent: str
    tenants: frozenset[str]

    def __post_init__(self) -> None:
        if not isinstance(self.agent, str):
            raise AgentRegistryError(f"agent: must be a string, not {type(self.agent).__name__}")
        _check_spiffe_id(self.agent)
        # A bare string is iterable: "acme" must not become {"a", "c", "m", "e"}.
        if isinstance(self.tenants, str) or not isinstance(self.tenants, Iterable):
            raise AgentRegistryError(f"agent {self.agent!r}: tenants: must be a set, not {type(self.tenants).__name__}")
        tenants = tuple(self.tenants)
        for tenant in tenants:
            _check_tenant(self.agent, tenant)
        if not tenants:
            raise AgentRegistryError(f"agent {self.agent!r}: tenants: needs at least one (or leave the agent out)")
        if len(set(tenants)) > MAX_TENANTS_PER_AGENT:
            raise AgentRegistryError(f"agent {self.agent!r}: tenants: more than {MAX_TENANTS_PER_AGENT}")
        object.__setattr__(self, "tenants", frozenset(tenants))

    @property
    def key(self) -> str:
        return normalize(self.agent)


@dataclass(frozen=True)
class AgentRegistry:
    """Every registered agent, indexed by its normalised SPIFFE ID.

    The constructor rejects two entries for one agent (after normalisation): an
    agent's tenants are listed in one place, never merged from several.
    """

    agents: tuple[RegisteredAgent, ...]
    _index: Mapping[str, RegisteredAgent] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.agents, str | bytes) or not isinstance(self.agents, Iterable):
            raise AgentRegistryError(f"agents: must be a sequence, not {type(self.agents).__name__}")
        object.__setattr__(self, "agents", tuple(self.agents))
        index: dict[str, RegisteredAgent] = {}
        for entry in self.agents:
            if not isinstance(entry, RegisteredAgent):
                raise AgentRegistryError(f"agents: entries must be RegisteredAgent values, not {type(entry).__name__}")
            other = index.get(entry.key)
            if other is not None:
                raise AgentRegistryError(f"agents {other.agent!r} and {entry.agent!r} are one agent; list it once")
            index[entry.key] = entry
        object.__setattr__(self, "_index", index)

    def tenants_of(self, agent_id: str) -> frozenset[str]:
        """The tenants `agent_id` acts for; empty for an agent that is not registered (fail closed)."""
        entry = self._index.get(normalize(agent_id))
        return entry.tenants if entry is not None else frozenset()

    def is_registered(self, agent_id: str) -> bool:
        return normalize(agent_id) in self._index

    def allows(self, agent_id: str, tenant: str) -> bool:
        """Whether `agent_id` may act for `tenant` (compared exactly)."""
        return tenant in self.tenants_of(agent_id)

    def refusal_reason(self, agent_id: str, tenant: str) -> Reason | None:
        """Why `agent_id` may not act for `tenant` (code `tenant_not_allowed`), or None if it may."""
        if self.allows(agent_id, tenant):
            return None
        shown = agent_id if len(agent_id) <= 256 else agent_id[:256] + "..."
        if not self.is_registered(agent_id):
            return Reason(
                ReasonCode.TENANT_NOT_ALLOWED, f"agent {shown} is not in the agent registry, it acts for no tenant"
            )
        return Reason(ReasonCode.TENANT_NOT_ALLOWED, f"agent {shown} does not act for tenant {tenant!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> AgentRegistry:
        """Parse ``{"agents": [{"agent": "spiffe://...", "tenants": ["acme"]}]}``."""
        if not isinstance(data, Mapping):
            raise AgentRegistryError("agent registry must be a JSON object with an 'agents' list")
        unknown = sorted(str(k) for k in data if k != "agents")
        if unknown:
            raise AgentRegistryError(f"agent registry: unknown field(s) {', '.join(unknown)}")
        entries = data.get("agents")
        if not isinstance(entries, list):
            raise AgentRegistryError("agent registry: 'agents' must be a list")
        return cls(tuple(_parse_entry(i, entry) for i, entry in enumerate(entries)))


def _parse_entry(position: int, entry: object) -> RegisteredAgent:
    where = f"agents[{position}]"
    if not isinstance(entry, Mapping):
        raise AgentRegistryError(f"{where}: must be an object, not {type(entry).__name__}")
    missing = sorted(_AGENT_KEYS - set(entry))
    if missing:
        raise AgentRegistryError(f"{where}: missing field(s) {', '.join(missing)}")
    unknown = sorted(str(k) for k in set(entry) - _AGENT_KEYS)
    if unknown:
        raise AgentRegistryError(f"{where}: unknown field(s) {', '.join(unknown)}")
    agent, tenants = entry["agent"], entry["tenants"]
    if not isinstance(agent, str):
        raise AgentRegistryError(f"{where}.agent: must be a string, not {type(agent).__name__}")
    if not isinstance(tenants, list):
        raise AgentRegistryError(f"{where}.tenants: must be a list of strings, not {type(tenants).__name__}")
    for i, tenant in enumerate(tenants):
        if not isinstance(tenant, str):
            raise AgentRegistryError(f"{where}.tenants[{i}]: must be a string, not {type(tenant).__name__}")
    if len(tenants) != len(set(tenants)):
        raise AgentRegistryError(f"{where}.tenants: lists a tenant twice")
    try:
        return RegisteredAgent(agent=agent, tenants=frozenset(tenants))
    except AgentRegistryError as exc:
        raise AgentRegistryError(f"{where}: {exc}") from exc
