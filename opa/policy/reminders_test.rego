package atb.reminders_test

# Reminders and escalation (contracts/reminders.py): per tier, when the approvals
# service reminds the approvers of a pending request and whom it escalates to.

import rego.v1

import data.atb.poa

req(action) := {"action": action, "tenant": "acme", "agent_tenants": ["acme"]}

test_the_shipped_data_reminds_at_50_and_80_percent_and_escalates_high_to_security if {
	high := poa.requirements with input as req("sap.payment.execute")
	high.reminders == {"remind_at": [50, 80], "escalate_at": 80, "escalate_to": ["security"]}
	medium := poa.requirements with input as req("crm.contact.update")
	medium.reminders == {"remind_at": [50, 80]}
}

test_a_tier_the_data_does_not_name_has_no_reminders if {
	low := poa.requirements with input as req("crm.contact.read")
	low.reminders == {}
	only_high := {"high": {"remind_at": [50]}}
	changed := object.union(object.remove(data.atb_policy, ["reminders"]), {"reminders": only_high})
	r := poa.requirements with input as req("crm.contact.update") with data.atb_policy as changed
	r.reminders == {}
}
