# METADATA
# title: ATB PoA policy
# description: |
#   Risk tiers and approval requirements (docs/architecture.md §2.5). This package is
#   the single source of truth for which action needs what: services ask it and
#   duplicate no action list. Data: data.atb_policy (data.json next to this file).
package atb.poa

import rego.v1

policy := data.atb_policy

# Cross-tenant, hence critical: the request is made for, or targets, a tenant the
# agent is not registered for. The agent's tenants are not the agent's word: the
# caller passes them from the agent registry (config/agents.json) as
# req.agent_tenants; absent, the agent has none and every request is cross-tenant
# (fail closed). A target among the agent's own tenants is not cross-tenant: the
# agent could have asked for that tenant directly. See docs/tenants.md.
registered_tenants(req) := {t | some t in object.get(req, "agent_tenants", [])}

cross_tenant_of(req) if not req.tenant in registered_tenants(req)

cross_tenant_of(req) if {
	target := object.get(req, "target_tenant", null)
	target != null
	not target in registered_tenants(req)
}

cross_tenant if cross_tenant_of(input)

# Fail safe: an action on no list is high, never low (docs/architecture.md §2.5).
tier_of(req) := "critical" if cross_tenant_of(req)

else := "critical" if req.action in policy.critical_actions

else := "high" if req.action in policy.high_risk_actions

else := "medium" if req.action in policy.medium_risk_actions

else := "low" if req.action in policy.low_risk_allowlist

else := "high"

tier := tier_of(input)

# The revision every answer names (`policy_version`): the signed bundle's when OPA
# loaded this policy from one (`atb policy build` sets it to the policy's git
# commit, or to its content hash; OPA keeps each bundle's manifest under
# data.system.bundles, and the bundle is named "atb" in the configuration
# `atb policy opa-config` writes), otherwise the data's `version` (a policy read
# from files: `opa run --watch` in development, `opa test`). See docs/policy.md.
policy_version := rev if {
	rev := data.system.bundles.atb.manifest.revision
	is_string(rev)
	rev != ""
} else := policy.version

# What does this request need? Answered for the approvals service and the issuer.
requirements := {
	"tier": tier,
	"approvals": params.approvals,
	"ticket_required": params.ticket_required,
	"eligible_groups": params.eligible_groups,
	"pending_seconds": params.pending_seconds,
	"poa_ttl_seconds": params.poa_ttl_seconds,
	"policy_version": policy_version,
	"cross_tenant": cross_tenant_flag,
} if {
	params := policy.tiers[tier]
}

cross_tenant_flag if cross_tenant

else := false

# docs/architecture.md §2.5: with ALLOW_UNMANDATED_LOW_RISK=true (passed by the caller as
# input.allow_unmandated_low_risk), an allowlisted low-risk action needs no PoA;
# otherwise every action needs one.
default poa_required := true

poa_required := false if {
	tier == "low"
	object.get(input, "allow_unmandated_low_risk", false) == true
}

# ---------------------------------------------------------------------------
# The broker's question: may this (already signature-checked) PoA run this
# action? Asked in batches: input.batch is a list of items
#   {"request": {action, tenant, target_tenant, agent_tenants},
#    "claims": <verified PoA claims> | null,
#    "agent_id": <SPIFFE ID proven by mTLS or the event proof>,
#    "principals": {"requesters": [...], "approvers": [...]}  (with claims),
#    "allow_unmandated_low_risk": bool}
# and `decisions` answers each, in order, with {allow, reasons, tier, policy_version}.
# One HTTP round trip per batch keeps OPA off the broker's critical path.
#
# Each deny reason is data, {"code": ..., "detail": ...}: `code` is one of the
# codes of contracts/reasons.py (ReasonCode; tests/unit/test_policy_reason_codes.py
# checks every code literal below is in it), `detail` is for humans. Callers
# compare codes, never the wording.

tier_rank := {"low": 0, "medium": 1, "high": 2, "critical": 3}

# One deny reason. Every code is a string literal at its call, so that the test of
# contracts/reasons.py can read them all from this file.
reason(code, detail) := {"code": code, "detail": detail}

decisions := [broker_decision(item) | some item in input.batch]

broker_decision(item) := {
	"allow": count(reasons) == 0,
	"reasons": sort(reasons),
	"tier": t,
	"policy_version": policy_version,
} if {
	t := tier_of(item.request)
	reasons := denials(item, t)
}

# Identities are compared as principals, never as strings from the token. The
# caller (broker/adapters/policy.py) normalises each identity as the issuer does
# (NFKC, case fold, trim: contracts/directory.py) and resolves aliases through
# the approver directory: `principals.requesters` are the agent and the human it
# acts for, `principals.approvers` the PoA's approvers in order. Rego has no
# NFKC, so an item with claims but without principals is refused (fail closed).
requesters(item) := {p | some p in item.principals.requesters}

approver_principals(item) := [p | some p in item.principals.approvers]

principal_denials(item) := set() if {
	is_array(item.principals.requesters)
	is_array(item.principals.approvers)
	count(item.principals.requesters) > 0
	every p in array.concat(item.principals.requesters, item.principals.approvers) {
		is_string(p)
		p != ""
	}
}

else := {reason("principals_missing", "the caller must send normalised, directory-resolved identities")}

denials(item, t) := {r | some r in no_poa_denials(item, t)} if item.claims == null

else := {r | some r in poa_denials(item, t)}

no_poa_denials(item, t) := set() if {
	t == "low"
	object.get(item, "allow_unmandated_low_risk", false) == true
}

else := {reason("poa_required", "this action needs a PoA")}

poa_denials(item, t) := ((tier_denials(item, t) | approval_denials(item, t)) | ticket_denials(item, t)) | principal_denials(item)

tier_denials(item, t) := {reason("tier_too_low", sprintf("PoA was issued for %s, the action is %s", [item.claims.tier, t]))} if {
	tier_rank[item.claims.tier] < tier_rank[t]
}

else := set()

# Medium: one approver, not the requester (docs/architecture.md §2.2).
approval_denials(item, "medium") := {reason("approval_missing", "medium risk needs leg.approval.approver_id")} if {
	not item.claims.leg.approval.approver_id
}

else := {reason("self_approval", "the approver is the requester")} if {
	some p in approver_principals(item)
	p in requesters(item)
}

else := set()

# High and critical: at least two distinct approvers, none of them the requester.
approval_denials(item, t) := dual_control_denials(item) if t in {"high", "critical"}

approval_denials(item, "low") := set()

dual_control_denials(item) := {reason("dual_control_missing", "high risk needs leg.dual_control.approvers")} if {
	not item.claims.leg.dual_control.approvers
}

else := {reason("self_approval", "an approver is the requester")} if {
	some p in approver_principals(item)
	p in requesters(item)
}

else := {reason("dual_control_not_distinct", "fewer than 2 distinct approvers")} if {
	count({p | some p in approver_principals(item)}) < 2
}

else := set()

# Critical: plus an external ticket reference.
ticket_denials(item, "critical") := {reason("ticket_missing", "critical actions need an external ticket reference")} if {
	object.get(item.claims.leg, "ticket_ref", "") in {"", null}
}

else := set()

ticket_denials(item, t) := set() if t != "critical"
