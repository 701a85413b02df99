# METADATA
# title: ATB PoA policy
# description: |
#   Risk tiers and approval requirements of the seed's §3 table. This package is
#   the single source of truth for which action needs what: services ask it and
#   duplicate no action list. Data: data.atb_policy (data.json next to this file).
package atb.poa

import rego.v1

policy := data.atb_policy

# A request whose target tenant differs from the agent's tenant is critical.
cross_tenant if {
	target := object.get(input, "target_tenant", null)
	target != null
	target != input.tenant
}

# Fail safe: an action on no list is high, never low (DESIGN.md §2).
tier := "critical" if cross_tenant

else := "critical" if input.action in policy.critical_actions

else := "high" if input.action in policy.high_risk_actions

else := "medium" if input.action in policy.medium_risk_actions

else := "low" if input.action in policy.low_risk_allowlist

else := "high"

# What does this request need? Answered for the approvals service and the issuer.
requirements := {
	"tier": tier,
	"approvals": params.approvals,
	"ticket_required": params.ticket_required,
	"eligible_groups": params.eligible_groups,
	"pending_seconds": params.pending_seconds,
	"poa_ttl_seconds": params.poa_ttl_seconds,
	"policy_version": policy.version,
	"cross_tenant": cross_tenant_flag,
} if {
	params := policy.tiers[tier]
}

cross_tenant_flag if cross_tenant

else := false

# Seed §3: with ALLOW_UNMANDATED_LOW_RISK=true (passed by the caller as
# input.allow_unmandated_low_risk), an allowlisted low-risk action needs no PoA;
# otherwise every action needs one.
default poa_required := true

poa_required := false if {
	tier == "low"
	object.get(input, "allow_unmandated_low_risk", false) == true
}
