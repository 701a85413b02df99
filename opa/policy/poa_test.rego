package atb.poa_test

import rego.v1

import data.atb.poa

req(action) := {"action": action, "tenant": "acme"}

test_allowlisted_read_is_low if {
	r := poa.requirements with input as req("crm.contact.read")
	r.tier == "low"
	r.approvals == 0
	r.ticket_required == false
}

test_every_medium_action_needs_one_approver if {
	every action in data.atb_policy.medium_risk_actions {
		r := poa.requirements with input as req(action)
		r.tier == "medium"
		r.approvals == 1
	}
}

test_every_high_action_needs_two_approvers if {
	every action in data.atb_policy.high_risk_actions {
		r := poa.requirements with input as req(action)
		r.tier == "high"
		r.approvals == 2
		r.poa_ttl_seconds < 300
	}
}

test_every_critical_action_needs_a_ticket if {
	every action in data.atb_policy.critical_actions {
		r := poa.requirements with input as req(action)
		r.tier == "critical"
		r.approvals == 2
		r.ticket_required == true
	}
}

test_unknown_action_is_high_not_low if {
	r := poa.requirements with input as req("made.up.action")
	r.tier == "high"
	r.approvals == 2
}

test_cross_tenant_read_is_critical if {
	r := poa.requirements with input as {"action": "crm.contact.read", "tenant": "acme", "target_tenant": "globex"}
	r.tier == "critical"
	r.cross_tenant == true
}

test_same_tenant_target_is_not_cross_tenant if {
	r := poa.requirements with input as {"action": "crm.contact.read", "tenant": "acme", "target_tenant": "acme"}
	r.tier == "low"
	r.cross_tenant == false
}

test_allowlist_switch_on_lets_low_risk_pass_without_poa if {
	not poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "allow_unmandated_low_risk": true}
}

test_allowlist_switch_off_requires_a_poa if {
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "allow_unmandated_low_risk": false}
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme"}
}

test_allowlist_switch_never_frees_higher_tiers if {
	every action in array.concat(data.atb_policy.medium_risk_actions, data.atb_policy.high_risk_actions) {
		poa.poa_required with input as {"action": action, "tenant": "acme", "allow_unmandated_low_risk": true}
	}
	poa.poa_required with input as {"action": "made.up.action", "tenant": "acme", "allow_unmandated_low_risk": true}
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "target_tenant": "globex", "allow_unmandated_low_risk": true}
}

test_eligible_groups_and_ttl_per_tier if {
	low := poa.requirements with input as req("crm.contact.read")
	low.eligible_groups == []
	medium := poa.requirements with input as req("crm.contact.update")
	"manager" in medium.eligible_groups
	high := poa.requirements with input as req("sap.payment.execute")
	high.poa_ttl_seconds == 120
	critical := poa.requirements with input as req("iam.admin.grant")
	critical.eligible_groups == ["security", "compliance"]
	critical.poa_ttl_seconds == 60
	critical.pending_seconds > 0
}
