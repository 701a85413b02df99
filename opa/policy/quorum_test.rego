package atb.quorum_test

# Quorum by groups (docs/quorum-and-risk.md): the requirements name the composition,
# and the broker checks the PoA's dual-control approvers (their `type`, their
# directory groups, distinct people) against it.

import rego.v1

import data.atb.poa

agent := "spiffe://atb.local/agent/x"

small := {"amount_cents": 120000}

test_payments_need_a_manager_and_compliance_at_high if {
	every action in ["sap.payment.execute", "erp.payment.process"] {
		r := poa.requirements with input as {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "params": small}
		r.tier == "high"
		r.approvals == 2
		r.composition == {"all_of": [{"group": "manager", "count": 1}, {"group": "compliance", "count": 1}], "any_of": []}
	}
}

test_other_actions_have_no_composition if {
	r := poa.requirements with input as {"action": "sap.vendor.change", "tenant": "acme", "agent_tenants": ["acme"]}
	r.composition == {"all_of": [], "any_of": []}

	# A large payment is critical: the critical tier's rules, no payment composition.
	big := poa.requirements with input as {"action": "sap.payment.execute", "tenant": "acme", "agent_tenants": ["acme"], "params": {"amount_cents": 2000000}}
	big.tier == "critical"
	big.composition == {"all_of": [], "any_of": []}
}

# Every composition in the data fits its tier: eligible groups only, and no more people than the tier's approvals.
test_every_composition_fits_its_tier if {
	every action, per_tier in data.atb_policy.action_compositions {
		every t, c in per_tier {
			tier := data.atb_policy.tiers[t]
			every e in array.concat(c.all_of, c.any_of) {
				e.group in tier.eligible_groups
				e.count >= 1
			}
			least := sum([e.count | some e in c.all_of]) + min(array.concat([0 | count(c.any_of) == 0], [e.count | some e in c.any_of]))
			least <= tier.approvals
			action != ""
		}
	}
}

entry(p, t, groups) := {"principal": p, "type": t, "groups": groups}

item(action, entries) := {
	"request": {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "params": small},
	"claims": {"tier": "high", "leg": {"accountable_party": {"type": "employee", "id": "emp-100"}, "dual_control": {"required": true, "approvers": [{"id": e.principal, "type": e.type} | some e in entries]}}},
	"agent_id": agent,
	"principals": {"requesters": [agent, "emp-100"], "approvers": [e.principal | some e in entries], "dual_control": entries},
}

decide(i) := d if {
	ds := poa.decisions with input as {"batch": [i]}
	d := ds[0]
}

codes(i) := {r.code | some r in decide(i).reasons}

test_manager_and_compliance_is_allowed if {
	decide(item("sap.payment.execute", [entry("alice", "manager", ["manager"]), entry("bob", "compliance", ["compliance"])])).allow

	# A person in both groups may fill either, once.
	decide(item("sap.payment.execute", [entry("erin", "compliance", ["compliance", "manager"]), entry("dave", "manager", ["manager"])])).allow
}

test_two_managers_are_not_enough if {
	i := item("sap.payment.execute", [entry("alice", "manager", ["manager"]), entry("dave", "manager", ["manager"])])
	not decide(i).allow
	codes(i) == {"composition_not_met"}

	# The same two managers can run an action without a composition.
	decide(item("sap.vendor.change", [entry("alice", "manager", ["manager"]), entry("dave", "manager", ["manager"])])).allow
}

test_a_type_outside_the_approvers_groups_is_refused if {
	i := item("sap.payment.execute", [entry("alice", "manager", ["manager"]), entry("dave", "compliance", ["manager"])])
	not decide(i).allow
	codes(i) == {"approver_group_mismatch"}

	# Unknown to the broker's directory: no groups, refused.
	j := item("sap.payment.execute", [entry("alice", "manager", ["manager"]), entry("zed", "compliance", [])])
	codes(j) == {"approver_group_mismatch"}
}

test_one_person_in_two_groups_fills_one_only if {
	i := item("sap.payment.execute", [entry("erin", "manager", ["compliance", "manager"]), entry("erin", "compliance", ["compliance", "manager"])])
	not decide(i).allow
	"dual_control_not_distinct" in codes(i)

	# A third entry does not help a repeated person.
	j := item("sap.payment.execute", [entry("erin", "manager", ["compliance", "manager"]), entry("erin", "compliance", ["compliance", "manager"]), entry("carol", "security", ["security"])])
	"dual_control_not_distinct" in codes(j)
}

test_without_the_dual_control_principals_the_composition_fails_closed if {
	full := item("sap.payment.execute", [entry("alice", "manager", ["manager"]), entry("bob", "compliance", ["compliance"])])
	i := json.remove(full, ["principals/dual_control"])
	not decide(i).allow
	codes(i) == {"composition_not_met"}
}

# any_of, and all_of with any_of, over a composition given in the data.
with_composition(c) := {"atb_policy": object.union(data.atb_policy, {"action_compositions": {"sap.vendor.change": {"high": c}}})}

any_of := {"all_of": [{"group": "security", "count": 1}], "any_of": [{"group": "compliance", "count": 1}, {"group": "manager", "count": 1}]}

test_any_of_needs_one_alternative_besides_all_of if {
	ok := item("sap.vendor.change", [entry("carol", "security", ["security"]), entry("alice", "manager", ["manager"])])
	decide(ok).allow with data.atb_policy as with_composition(any_of).atb_policy
	ok2 := item("sap.vendor.change", [entry("carol", "security", ["security"]), entry("bob", "compliance", ["compliance"])])
	decide(ok2).allow with data.atb_policy as with_composition(any_of).atb_policy
	short := item("sap.vendor.change", [entry("carol", "security", ["security"]), entry("sam", "security", ["security"])])
	not decide(short).allow with data.atb_policy as with_composition(any_of).atb_policy
	no_security := item("sap.vendor.change", [entry("alice", "manager", ["manager"]), entry("bob", "compliance", ["compliance"])])
	not decide(no_security).allow with data.atb_policy as with_composition(any_of).atb_policy
}

test_counts_above_one if {
	c := {"all_of": [{"group": "manager", "count": 2}], "any_of": []}
	two := item("sap.vendor.change", [entry("alice", "manager", ["manager"]), entry("dave", "manager", ["manager"])])
	decide(two).allow with data.atb_policy as with_composition(c).atb_policy
	one := item("sap.vendor.change", [entry("alice", "manager", ["manager"]), entry("bob", "compliance", ["compliance"])])
	not decide(one).allow with data.atb_policy as with_composition(c).atb_policy
}
