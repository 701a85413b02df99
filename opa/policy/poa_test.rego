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
