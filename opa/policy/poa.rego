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

# The tier of a request: its action's listed tier, raised by thresholds on its
# parameters (docs/quorum-and-risk.md). Rank 0..3 is low..critical.
tier_of(req) := tier_names[max({tier_rank[listed_tier_of(req)]} | param_ranks(req))]

tier_names := ["low", "medium", "high", "critical"]

# Fail safe: an action on no list is high, never low (docs/architecture.md §2.5).
listed_tier_of(req) := "critical" if cross_tenant_of(req)

else := "critical" if req.action in policy.critical_actions

else := "high" if req.action in policy.high_risk_actions

else := "medium" if req.action in policy.medium_risk_actions

else := "low" if req.action in policy.low_risk_allowlist

else := "high"

# Risk from parameters: data.atb_policy.param_tiers lists, per action, rules
# {param, at_least, max, tier}: a parameter at or above `at_least` raises the
# request to `tier`. A parameter is read only as an integer from 0 to `max`;
# missing, malformed (not an integer, params not an object) or out of range, it
# raises the request to the highest tier any of the action's rules gives (fail
# closed). Amounts are compared whatever their currency: there is no FX yet.
param_rules(req) := object.get(object.get(policy, "param_tiers", {}), req.action, [])

param_valid(req, rule) if {
	v := object.get(object.get(req, "params", {}), rule.param, null)
	is_number(v)
	floor(v) == v
	v >= 0
	v <= rule.max
}

param_invalid(req) if {
	some rule in param_rules(req)
	not param_valid(req, rule)
}

param_ranks(req) := {tier_rank[rule.tier] | some rule in param_rules(req)} if param_invalid(req)

else := {tier_rank[rule.tier] |
	some rule in param_rules(req)
	req.params[rule.param] >= rule.at_least
}

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
	"listed_tier": listed_tier_of(input),
	"composition": composition_of(input.action, tier),
	"justification": justification_of(tier),
	"reminders": reminders_of(tier),
} if {
	params := policy.tiers[tier]
}

# Justification (contracts/justification.py): which votes on a request of this
# tier need a written reason: "none", "approve", "deny" or "both"
# (data.atb_policy.justification, per tier; a tier it does not name: "none").
# The approvals service refuses a vote without the reason it needs (reason_required);
# a value it does not know makes the answer malformed: the request is denied.
justification_of(t) := j if {
	j := policy.justification[t]
} else := "none"

# Reminders and escalation (contracts/reminders.py): when to remind the approvers of a
# pending request, in percent of its pending window, and whom to escalate to if the
# quorum is still missing at a point (data.atb_policy.reminders, per tier; a tier it
# does not name: none). The approvals service's timer sends each exactly once.
reminders_of(t) := r if {
	r := policy.reminders[t]
} else := {}

# Quorum by groups (docs/quorum-and-risk.md): which groups the distinct approvers
# must come from, besides the count: per action and tier
# (data.atb_policy.action_compositions), else per tier (tiers.<tier>.composition),
# else none. {"all_of": [{group, count}], "any_of": [{group, count}]}; one person
# fills one entry only (contracts/quorum.py assigns them).
empty_composition := {"all_of": [], "any_of": []}

composition_of(action, t) := c if {
	c := policy.action_compositions[action][t]
} else := c if {
	c := policy.tiers[t].composition
} else := empty_composition

default cross_tenant_flag := false

cross_tenant_flag if cross_tenant

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

# High and critical: at least two distinct approvers, none of them the requester,
# making the composition the policy asks for.
approval_denials(item, t) := dual_control_denials(item) | composition_denials(item, t) if t in {"high", "critical"}

approval_denials(_, "low") := set()

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

# The composition, checked on the PoA's evidence: each dual-control approver's
# `type` is the group the issuer assigned them to, and must be one of their groups
# in the approver directory; the caller sends principals.dual_control as
# [{principal, type, groups}] (broker/adapters/policy.py). With each person
# listed once, counting distinct principals per type checks the assignment.
dual_control_entries(item) := object.get(object.get(item, "principals", {}), "dual_control", [])

composition_required(c) if count(object.get(c, "all_of", [])) + count(object.get(c, "any_of", [])) > 0

composition_denials(item, t) := set() if {
	not composition_required(composition_of(item.request.action, t))
} else := {reason("approver_group_mismatch", "a dual-control approver's type is not one of their groups")} if {
	some e in dual_control_entries(item)
	not e.type in {g | some g in e.groups}
} else := {reason("dual_control_not_distinct", "an approver is listed twice")} if {
	ps := [e.principal | some e in dual_control_entries(item)]
	count({p | some p in ps}) != count(ps)
} else := {reason("composition_not_met", sprintf("the approvers do not make %v", [composition_of(item.request.action, t)]))} if {
	not composition_met(item, composition_of(item.request.action, t))
} else := set()

composition_met(item, c) if {
	count(object.get(c, "any_of", [])) == 0
	groups_met(item, object.get(c, "all_of", []))
}

composition_met(item, c) if {
	some alternative in object.get(c, "any_of", [])
	groups_met(item, array.concat(object.get(c, "all_of", []), [alternative]))
}

groups_met(item, needs) if {
	every g in {n.group | some n in needs} {
		count({e.principal | some e in dual_control_entries(item); e.type == g}) >= sum([n.count | some n in needs; n.group == g])
	}
}

# Critical: plus an external ticket reference.
ticket_denials(item, "critical") := {reason("ticket_missing", "critical actions need an external ticket reference")} if {
	object.get(item.claims.leg, "ticket_ref", "") in {"", null}
}

else := set()

ticket_denials(_, t) := set() if t != "critical"
