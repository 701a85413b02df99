"""Ask OPA, in one round trip per batch, whether each verified PoA may run its action.

`data.atb.poa.decisions` answers `input.batch` item by item (opa/policy/poa.rego).
Each item's request carries the agent's registered tenants (the agent registry,
docs/tenants.md), from which the policy decides whether it is cross-tenant.
Each item also carries `principals`: the requesters (the agent and its
accountable party) and the approvers named by the PoA, each normalised the way
the issuer does (`contracts.directory.normalize`: NFKC, case fold, trim) and
resolved through the approver directory to its principal, so that the policy's
self-approval and distinctness checks compare people, not spellings (Rego has
no NFKC; the policy refuses an item without them). `principals.dual_control`
lists each dual-control approver as {principal, type, groups}: the group the
PoA says they fill and their groups in the directory, for the policy's check of
the quorum's composition (docs/quorum-and-risk.md). The request carries the
presented parameters, from which the policy re-derives the tier.
The OPA client reuses one keep-alive connection pool; batching amortises the
HTTP and JSON cost over every presentation that arrived together. Anything but a
well-formed answer of the right length is `PolicyUnavailableError`: the caller
denies (fail closed). Well-formed means each deny reason is an object
`{"code", "detail"}` whose code is in `contracts.reasons.ReasonCode`, a deny
has at least one and an allow none: the answer is read as data, never as text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from pydantic import JsonValue

from atb_runtime.opa import OpaClient, PolicyUnavailableError
from broker.domain import PolicyDecision, Presentation
from contracts import PoaClaims, Tier
from contracts.agents import AgentRegistry
from contracts.directory import Directory, normalize
from contracts.reasons import Reason, ReasonCode

__all__ = ["DEFAULT_DIRECTORY", "PolicyDecision", "PolicyGate", "load_directory"]

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[4] / "config" / "approvers.json"
"""The approver directory the issuer and approvals use (ATB_APPROVER_DIRECTORY_PATH)."""


def load_directory(path: Path | None = None) -> Directory:
    """The approver directory (JSON) the policy's principals are resolved through."""
    return Directory.from_mapping(json.loads((path or DEFAULT_DIRECTORY).read_text(encoding="utf-8")))


_TIERS: dict[str, Tier] = {t.value: t for t in Tier}
_CODES: dict[str, ReasonCode] = {c.value: c for c in ReasonCode}


class PolicyGate:
    """Batched OPA decisions, with a short cache keyed by the exact policy input.

    The answer is a pure function of the input and the policy, so identical inputs
    (same action and tenants, same tier and approvers, same agent) within
    `cache_seconds` reuse it: a policy change is in force everywhere after at
    most that long. The resource is not part of the input: no rule reads it.
    """

    PATH = "atb/poa/decisions"
    MAX_CACHED = 10_000

    def __init__(
        self,
        opa: OpaClient,
        *,
        agents: AgentRegistry,
        allow_unmandated_low_risk: bool,
        cache_seconds: float = 1.0,
        directory: Directory | None = None,
    ) -> None:
        self._opa = opa
        self._agents = agents
        self._directory = directory if directory is not None else Directory(())
        self._unmandated = allow_unmandated_low_risk
        self._ttl = cache_seconds
        self._cache: dict[bytes, tuple[float, PolicyDecision]] = {}
        self.opa_items = 0
        """Items actually sent to OPA (the rest came from the cache)."""

    def _item(self, presentation: Presentation, claims: PoaClaims | None) -> dict[str, JsonValue]:
        action = presentation.action
        # The presented parameters (bound into the PoA's digest, check_bindings): the policy
        # re-derives the tier from them and denies a PoA issued for a lower one.
        request: dict[str, JsonValue] = {"action": action.action, "tenant": action.tenant, "params": action.params}
        if action.target_tenant is not None:
            request["target_tenant"] = action.target_tenant
        # The registry's word on the proven agent, never the presentation's.
        request["agent_tenants"] = list[JsonValue](sorted(self._agents.tenants_of(presentation.agent_id)))
        item: dict[str, JsonValue] = {
            "request": request,
            "claims": None if claims is None else _policy_claims(claims),
            "agent_id": presentation.agent_id,
            "allow_unmandated_low_risk": self._unmandated,
        }
        if claims is not None:
            item["principals"] = self._principals(presentation.agent_id, claims)
        return item

    def principal(self, identity: str) -> str:
        """One person, one string: the directory's principal for a known identity, else the normalised identity."""
        approver = self._directory.resolve(identity)
        return normalize(approver.principal if approver is not None else identity)

    def _principals(self, agent_id: str, claims: PoaClaims) -> dict[str, JsonValue]:
        leg = claims.leg
        approvers: list[JsonValue] = []
        if leg.approval is not None:
            approvers.append(self.principal(leg.approval.approver_id))
        if leg.dual_control is not None:
            approvers.extend(self.principal(a.id) for a in leg.dual_control.approvers)
        requesters = sorted({self.principal(agent_id), self.principal(leg.accountable_party.id)})
        dual_control: list[JsonValue] = []
        if leg.dual_control is not None:
            dual_control.extend(self._dual_control_entry(a.id, a.type) for a in leg.dual_control.approvers)
        return {"requesters": list[JsonValue](requesters), "approvers": approvers, "dual_control": dual_control}

    def _dual_control_entry(self, identity: str, group: str) -> JsonValue:
        """One dual-control approver for the composition check: the group the PoA puts them in, and their groups."""
        approver = self._directory.resolve(identity)
        groups = sorted(approver.groups) if approver is not None else []
        return {"principal": self.principal(identity), "type": group, "groups": list[JsonValue](groups)}

    async def decide(self, items: Sequence[tuple[Presentation, PoaClaims | None]]) -> list[PolicyDecision]:
        if not items:
            return []
        now = time.monotonic()
        docs = [self._item(p, c) for p, c in items]
        keys = [orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) for doc in docs]
        answers: dict[bytes, PolicyDecision] = {}
        for key in keys:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                answers[key] = hit[1]
        missing = list(dict.fromkeys(k for k in keys if k not in answers))
        if missing:
            by_key = dict(zip(keys, docs, strict=True))
            result = await self._opa.evaluate(self.PATH, {"batch": [by_key[k] for k in missing]})
            if not isinstance(result, list) or len(result) != len(missing):
                raise PolicyUnavailableError(f"OPA answered {self.PATH} with no decision per item")
            self.opa_items += len(missing)
            if len(self._cache) > self.MAX_CACHED:
                self._cache.clear()
            for key, entry in zip(missing, result, strict=True):
                answers[key] = _parse(entry)
                if self._ttl > 0:
                    self._cache[key] = (now + self._ttl, answers[key])
        return [answers[k] for k in keys]


def _policy_claims(claims: PoaClaims) -> dict[str, JsonValue]:
    """The claims the policy reads (tier and approval evidence), in the PoA's own shape: less to encode and parse."""
    leg = claims.leg
    slim: dict[str, JsonValue] = {
        "accountable_party": {"type": leg.accountable_party.type, "id": leg.accountable_party.id}
    }
    if leg.approval is not None:
        slim["approval"] = {"approver_id": leg.approval.approver_id}
    if leg.dual_control is not None:
        slim["dual_control"] = {"approvers": [{"id": a.id, "type": a.type} for a in leg.dual_control.approvers]}
    if leg.ticket_ref is not None:
        slim["ticket_ref"] = leg.ticket_ref
    return {"tier": claims.tier.value, "leg": slim}


def _parse(entry: JsonValue) -> PolicyDecision:
    if not isinstance(entry, dict):
        raise PolicyUnavailableError("OPA decision is not an object")
    allow, reasons, tier, version = (entry.get(k) for k in ("allow", "reasons", "tier", "policy_version"))
    if not isinstance(allow, bool) or not isinstance(reasons, list) or not isinstance(version, str):
        raise PolicyUnavailableError("OPA decision lacks allow/reasons/policy_version")
    if not isinstance(tier, str) or tier not in _TIERS:
        raise PolicyUnavailableError(f"OPA decision has an unknown tier {tier!r}")
    parsed = tuple(_reason(r) for r in reasons)
    if allow == bool(parsed):
        raise PolicyUnavailableError("OPA decision must deny with reasons and allow without")
    return PolicyDecision(allow, parsed, _TIERS[tier], version)


def _reason(entry: JsonValue) -> Reason:
    """One deny reason, `{"code": <ReasonCode>, "detail": <text>}`; anything else fails closed."""
    if not isinstance(entry, dict) or set(entry) != {"code", "detail"}:
        raise PolicyUnavailableError(f"OPA reason is not {{code, detail}}: {str(entry)[:200]}")
    code, detail = entry["code"], entry["detail"]
    if not isinstance(code, str) or code not in _CODES or not isinstance(detail, str):
        raise PolicyUnavailableError(f"OPA reason has an unknown code {str(code)[:64]!r}")
    return Reason(_CODES[code], detail)
