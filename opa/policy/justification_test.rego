package atb.justification_test

# Justification (contracts/justification.py): per tier, which votes need a written
# reason; the approvals service enforces it (reason_required).

import rego.v1

import data.atb.poa

req(action) := {"action": action, "tenant": "acme", "agent_tenants": ["acme"]}

test_the_shipped_data_asks_a_reason_to_deny_high_and_critical if {
	poa.requirements.justification == "none" with input as req("crm.contact.update")
	poa.requirements.justification == "deny" with input as req("sap.vendor.change")
	poa.requirements.justification == "deny" with input as req("iam.admin.grant")
}

test_a_value_is_passed_as_written_for_the_services_to_judge if {
	# contracts.requirements refuses a value it does not know: the request is denied, never waved through.
	r := poa.requirements with input as req("iam.admin.grant")
		with data.atb_policy.justification as {"critical": "sometimes"}
	r.justification == "sometimes"
}
