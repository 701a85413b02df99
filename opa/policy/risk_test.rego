package atb.risk_test

# Risk from parameters (docs/quorum-and-risk.md): each threshold of
# data.atb_policy.param_tiers at, below and above its boundary, and every way a
# parameter can be missing, malformed or out of range (the action's highest tier).

import rego.v1

import data.atb.poa

with_params(action, params) := {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "params": params}

tier_for(action, params) := t if {
	r := poa.requirements with input as with_params(action, params)
	t := r.tier
}

# The broker derives the same tier from the parameters it is presented.
broker_tier_for(action, params) := t if {
	ds := poa.decisions with input as {"batch": [{"request": with_params(action, params), "claims": null, "agent_id": "spiffe://atb.local/agent/x"}]}
	t := ds[0].tier
}

# [action, parameter, value, expected tier]
boundaries := [
	["sap.payment.execute", "amount_cents", 999999, "high"],
	["sap.payment.execute", "amount_cents", 1000000, "critical"],
	["sap.payment.execute", "amount_cents", 1000001, "critical"],
	["sap.payment.execute", "amount_cents", 0, "high"],
	["salesforce.bulk.export", "row_count", 10000, "high"],
	["salesforce.bulk.export", "row_count", 10001, "critical"],
	["salesforce.bulk.export", "row_count", 10002, "critical"],
	["customer.data.export", "row_count", 10000, "high"],
	["customer.data.export", "row_count", 10001, "critical"],
	["customer.data.export", "row_count", 10002, "critical"],
	["hr.employee.view_limited", "employee_count", 10, "medium"],
	["hr.employee.view_limited", "employee_count", 11, "high"],
	["hr.employee.view_limited", "employee_count", 12, "high"],
	["hr.employee.view_limited", "employee_count", 0, "medium"],
]

test_each_threshold_at_below_and_above_its_boundary if {
	every row in boundaries {
		[action, param, value, expected] := row
		tier_for(action, {param: value}) == expected
		broker_tier_for(action, {param: value}) == expected
	}
}

# [action, parameters, expected tier]: missing, malformed or out of range → the action's highest tier.
fail_closed := [
	["sap.payment.execute", {}, "critical"],
	["sap.payment.execute", {"amount_cents": "500"}, "critical"],
	["sap.payment.execute", {"amount_cents": 12.5}, "critical"],
	["sap.payment.execute", {"amount_cents": -1}, "critical"],
	["sap.payment.execute", {"amount_cents": null}, "critical"],
	["sap.payment.execute", {"amount_cents": true}, "critical"],
	["sap.payment.execute", {"amount_cents": [1]}, "critical"],
	["sap.payment.execute", {"amount_cents": 100000000000001}, "critical"],
	["sap.payment.execute", {"amount": 5}, "critical"],
	["salesforce.bulk.export", {}, "critical"],
	["salesforce.bulk.export", {"row_count": -5}, "critical"],
	["salesforce.bulk.export", {"row_count": 1000000001}, "critical"],
	["customer.data.export", {"row_count": "10"}, "critical"],
	["hr.employee.view_limited", {}, "high"],
	["hr.employee.view_limited", {"employee_count": 1.5}, "high"],
	["hr.employee.view_limited", {"employee_count": 1000001}, "high"],
]

test_missing_malformed_or_out_of_range_is_the_highest_tier if {
	every row in fail_closed {
		[action, params, expected] := row
		tier_for(action, params) == expected
		broker_tier_for(action, params) == expected
	}
}

test_the_largest_valid_value_is_in_range if {
	tier_for("sap.payment.execute", {"amount_cents": 100000000000000}) == "critical"
	tier_for("hr.employee.view_limited", {"employee_count": 1000000}) == "high"
}

test_params_that_are_not_an_object_fail_closed if {
	tier_for("sap.payment.execute", "amount_cents=5") == "critical"
	tier_for("hr.employee.view_limited", [1]) == "high"
	r := poa.requirements with input as {"action": "sap.payment.execute", "tenant": "acme", "agent_tenants": ["acme"]}
	r.tier == "critical"
}

test_an_action_without_thresholds_ignores_parameters if {
	tier_for("sap.vendor.change", {}) == "high"
	tier_for("crm.contact.read", {"amount_cents": 999999999}) == "low"
	tier_for("crm.contact.update", {"row_count": "lots"}) == "medium"
}

test_thresholds_never_lower_a_tier if {
	# A cross-tenant payment stays critical, however small.
	r := poa.requirements with input as {"action": "sap.payment.execute", "tenant": "acme", "agent_tenants": ["acme"], "target_tenant": "globex", "params": {"amount_cents": 1}}
	r.tier == "critical"
}

test_requirements_name_the_listed_tier_and_the_raised_one if {
	r := poa.requirements with input as with_params("sap.payment.execute", {"amount_cents": 5000000})
	r.listed_tier == "high"
	r.tier == "critical"
	r.ticket_required == true
}

# The broker re-derives the tier from the presented (digest-bound) parameters: a PoA
# approved as high cannot run a payment the parameters make critical.
high_poa := {"tier": "high", "leg": {"accountable_party": {"type": "employee", "id": "emp-100"}, "dual_control": {"required": true, "approvers": [{"id": "alice", "type": "manager"}, {"id": "bob", "type": "compliance"}]}}}

payment_item(params) := {
	"request": with_params("sap.payment.execute", params),
	"claims": high_poa,
	"agent_id": "spiffe://atb.local/agent/x",
	"principals": {
		"requesters": ["spiffe://atb.local/agent/x", "emp-100"],
		"approvers": ["alice", "bob"],
		"dual_control": [
			{"principal": "alice", "type": "manager", "groups": ["manager"]},
			{"principal": "bob", "type": "compliance", "groups": ["compliance"]},
		],
	},
}

test_the_broker_denies_a_high_poa_for_a_critical_amount if {
	ds := poa.decisions with input as {"batch": [payment_item({"amount_cents": 999999}), payment_item({"amount_cents": 1000000}), payment_item({})]}
	ds[0].allow
	ds[0].tier == "high"
	not ds[1].allow
	ds[1].tier == "critical"
	some r in ds[1].reasons
	r.code == "tier_too_low"
	not ds[2].allow
	ds[2].tier == "critical"
}
