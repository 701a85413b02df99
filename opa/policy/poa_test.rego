package atb.poa_test

import rego.v1

import data.atb.poa

# Parameters under every threshold of data.atb_policy.param_tiers, so that each action
# keeps its listed tier (risk_test.rego tests the thresholds).
small := {"amount_cents": 1, "row_count": 1, "employee_count": 1}

req(action) := {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "params": small}

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
	r := poa.requirements with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"], "target_tenant": "globex"}
	r.tier == "critical"
	r.cross_tenant == true
}

test_same_tenant_target_is_not_cross_tenant if {
	r := poa.requirements with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"], "target_tenant": "acme"}
	r.tier == "low"
	r.cross_tenant == false
}

test_allowlist_switch_on_lets_low_risk_pass_without_poa if {
	not poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"], "allow_unmandated_low_risk": true}
}

test_allowlist_switch_off_requires_a_poa if {
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"], "allow_unmandated_low_risk": false}
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"]}
}

test_allowlist_switch_never_frees_higher_tiers if {
	every action in array.concat(data.atb_policy.medium_risk_actions, data.atb_policy.high_risk_actions) {
		poa.poa_required with input as {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "allow_unmandated_low_risk": true}
	}
	poa.poa_required with input as {"action": "made.up.action", "tenant": "acme", "agent_tenants": ["acme"], "allow_unmandated_low_risk": true}
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"], "target_tenant": "globex", "allow_unmandated_low_risk": true}
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

# --- broker decisions -------------------------------------------------------

agent := "spiffe://atb.local/agent/crm-bot"

claims(t, leg_extra) := {"tier": t, "leg": object.union({"accountable_party": {"type": "employee", "id": "emp-100"}}, leg_extra)}

item(action, c) := object.union(bare_item(action, c), {"principals": principals_of(c)}) if c != null

else := bare_item(action, c)

bare_item(action, c) := {"request": {"action": action, "tenant": "acme", "agent_tenants": ["acme"], "params": small}, "claims": c, "agent_id": agent}

# What the broker sends for plain ASCII identities outside the directory: lower case, trimmed.
fold(x) := lower(trim_space(x))

principals_of(c) := {
	"requesters": [fold(agent), fold(c.leg.accountable_party.id)],
	"approvers": array.concat(
		[fold(c.leg.approval.approver_id) | c.leg.approval.approver_id],
		[fold(a.id) | some a in object.get(object.get(c.leg, "dual_control", {}), "approvers", [])],
	),
}

one(i) := d if {
	ds := poa.decisions with input as {"batch": [i]}
	d := ds[0]
}

medium_ok := claims("medium", {"approval": {"approver_id": "alice", "approved_at": "2026-01-01T00:00:00Z"}})

dual(ids) := claims("high", {"dual_control": {"required": true, "approvers": [{"id": id, "type": "manager"} | some id in ids]}})

test_medium_with_an_approver_is_allowed if {
	d := one(item("crm.contact.update", medium_ok))
	d.allow
	d.tier == "medium"
	d.policy_version == data.atb_policy.version
}

test_medium_without_approval_is_denied if {
	d := one(item("crm.contact.update", claims("medium", {})))
	not d.allow
	d.reasons == [{"code": "approval_missing", "detail": "medium risk needs leg.approval.approver_id"}]
}

test_medium_self_approved_by_the_accountable_party_is_denied if {
	c := claims("medium", {"approval": {"approver_id": "EMP-100", "approved_at": "2026-01-01T00:00:00Z"}})
	d := one(item("crm.contact.update", c))
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_medium_self_approved_by_the_agent_is_denied if {
	c := claims("medium", {"approval": {"approver_id": agent, "approved_at": "2026-01-01T00:00:00Z"}})
	not one(item("crm.contact.update", c)).allow
}

test_high_needs_two_distinct_approvers if {
	one(item("sap.vendor.change", dual(["alice", "bob"]))).allow
	d := one(item("sap.vendor.change", dual(["alice", "ALICE"])))
	not d.allow
	d.reasons[0].code == "dual_control_not_distinct"
	not one(item("sap.vendor.change", dual(["alice"]))).allow
	not one(item("sap.vendor.change", claims("high", {}))).allow
}

test_high_approved_by_the_requester_is_denied if {
	d := one(item("sap.vendor.change", dual(["alice", "emp-100"])))
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_a_medium_poa_cannot_run_a_high_action if {
	d := one(item("sap.vendor.change", medium_ok))
	not d.allow
	{"code": "tier_too_low", "detail": "PoA was issued for medium, the action is high"} in d.reasons
}

# Every deny reason is data: exactly a code and a detail, both strings (the broker
# refuses any other shape and fails closed). The codes are checked against
# contracts/reasons.py by tests/unit/test_policy_reason_codes.py.
test_every_deny_reason_is_a_code_and_a_detail if {
	items := [
		item("crm.contact.update", claims("medium", {})),
		item("crm.contact.update", medium_by("emp-100")),
		item("sap.vendor.change", medium_ok),
		item("sap.vendor.change", claims("high", {})),
		item("sap.vendor.change", dual(["alice", "emp-100"])),
		item("sap.vendor.change", dual(["alice", "ALICE"])),
		item("iam.admin.grant", object.union(dual(["alice", "bob"]), {"tier": "critical"})),
		item("crm.contact.update", null),
		bare_item("crm.contact.update", medium_ok),
	]
	ds := poa.decisions with input as {"batch": items}
	count(ds) == count(items)
	codes := {r.code | some d in ds; some r in d.reasons}
	codes == {
		"approval_missing", "self_approval", "tier_too_low", "dual_control_missing",
		"dual_control_not_distinct", "ticket_missing", "poa_required", "principals_missing",
	}
	every d in ds {
		not d.allow
		count(d.reasons) > 0
		every r in d.reasons {
			object.keys(r) == {"code", "detail"}
			regex.match(`^[a-z][a-z0-9_]*$`, r.code)
			r.detail != ""
		}
	}
}

test_critical_needs_a_ticket if {
	c := object.union(dual(["alice", "bob"]), {"tier": "critical"})
	d := one(item("iam.admin.grant", c))
	not d.allow
	d.reasons == [{"code": "ticket_missing", "detail": "critical actions need an external ticket reference"}]
	with_ticket := object.union(c, {"leg": object.union(c.leg, {"ticket_ref": "CHG-1"})})
	one(item("iam.admin.grant", with_ticket)).allow
}

test_cross_tenant_is_critical_for_the_broker_too if {
	i := object.union(item("crm.contact.update", medium_ok), {"request": {"action": "crm.contact.update", "tenant": "acme", "agent_tenants": ["acme"], "target_tenant": "globex"}})
	d := one(i)
	d.tier == "critical"
	not d.allow
}

test_no_poa_is_denied_unless_unmandated_low_risk_is_on if {
	not one(item("crm.contact.read", null)).allow
	one(object.union(item("crm.contact.read", null), {"allow_unmandated_low_risk": true})).allow
	not one(object.union(item("crm.contact.update", null), {"allow_unmandated_low_risk": true})).allow
	not one(object.union(item("not.on.any.list", null), {"allow_unmandated_low_risk": true})).allow
}

test_a_batch_is_answered_in_order if {
	ds := poa.decisions with input as {"batch": [item("crm.contact.update", medium_ok), item("crm.contact.update", null)]}
	count(ds) == 2
	ds[0].allow
	not ds[1].allow
}

# --- identities are principals (normalised and resolved by the broker) ---------

# The principals the broker sends for a requester emp-100 who is also "dave" in the directory.
with_principals(i, requesters, approvers) := object.union(i, {"principals": {"requesters": requesters, "approvers": approvers}})

medium_by(id) := claims("medium", {"approval": {"approver_id": id, "approved_at": "2026-01-01T00:00:00Z"}})

test_self_approval_in_another_case_is_denied if {
	i := with_principals(item("crm.contact.update", medium_by("Emp-100")), [agent, "emp-100"], ["emp-100"])
	d := one(i)
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_self_approval_with_surrounding_whitespace_is_denied if {
	# lower() alone kept " emp-100\t" apart from "emp-100"; the principal is one string.
	i := with_principals(item("crm.contact.update", medium_by(" emp-100\t")), [agent, "emp-100"], ["emp-100"])
	d := one(i)
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_self_approval_in_fullwidth_characters_is_denied if {
	# "ｅｍｐ－１００" is emp-100 after NFKC; lower() leaves it a different string.
	i := with_principals(item("crm.contact.update", medium_by("ｅｍｐ－１００")), [agent, "emp-100"], ["emp-100"])
	d := one(i)
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_self_approval_through_an_alias_is_denied if {
	# The accountable party emp-200 and the approver slack:UDAVE004 are both dave in the directory.
	c := object.union(dual(["alice", "slack:UDAVE004"]), {"leg": object.union(dual(["alice", "slack:UDAVE004"]).leg, {"accountable_party": {"type": "employee", "id": "emp-200"}})})
	d := one(with_principals(item("sap.vendor.change", c), [agent, "dave"], ["alice", "dave"]))
	not d.allow
	d.reasons[0].code == "self_approval"
}

test_two_spellings_of_one_approver_are_not_dual_control if {
	c := dual(["alice", "spiffe://atb.local/user/alice"])
	d := one(with_principals(item("sap.vendor.change", c), [agent, "emp-100"], ["alice", "alice"]))
	not d.allow
	d.reasons[0].code == "dual_control_not_distinct"
}

test_distinct_principals_are_allowed_whatever_the_spelling if {
	c := dual(["ALICE ", "ｂｏｂ"])
	one(with_principals(item("sap.vendor.change", c), [agent, "emp-100"], ["alice", "bob"])).allow
}

test_claims_without_principals_are_refused if {
	d := one(bare_item("crm.contact.update", medium_ok))
	not d.allow
	some r in d.reasons
	r.code == "principals_missing"
	not one(with_principals(item("crm.contact.update", medium_ok), [], ["alice"])).allow
	not one(with_principals(item("crm.contact.update", medium_ok), [agent, "emp-100"], [""])).allow
}

# policy_version: the signed bundle's revision when OPA loaded one (docs/policy.md),
# otherwise the data's version.
test_policy_version_is_the_bundle_revision if {
	bundles := {"atb": {"manifest": {"revision": "0123abc", "roots": [""]}}}
	r := poa.requirements with input as req("crm.contact.read") with data.system.bundles as bundles
	r.policy_version == "0123abc"
	d := one(item("crm.contact.update", medium_ok)) with data.system.bundles as bundles
	d.policy_version == "0123abc"
}

test_policy_version_without_a_bundle_is_the_data_version if {
	r := poa.requirements with input as req("crm.contact.read")
	r.policy_version == data.atb_policy.version
}

test_policy_version_ignores_an_empty_bundle_revision if {
	bundles := {"atb": {"manifest": {"revision": "", "roots": [""]}}}
	r := poa.requirements with input as req("crm.contact.read") with data.system.bundles as bundles
	r.policy_version == data.atb_policy.version
}
