# Tenants are bound to identity (docs/tenants.md): the agent's registered tenants
# (config/agents.json, passed as agent_tenants) decide cross-tenant, never the
# two fields the agent writes itself.
package atb.tenants_test

import rego.v1

import data.atb.poa

acme_agent(extra) := object.union({"action": "crm.contact.read", "tenant": "acme", "agent_tenants": ["acme"]}, extra)

test_own_tenant_keeps_the_action_tier if {
	r := poa.requirements with input as acme_agent({})
	r.tier == "low"
	r.cross_tenant == false
	own_target := poa.requirements with input as acme_agent({"target_tenant": "acme"})
	own_target.tier == "low"

	# The same words from an agent registered for another tenant: cross-tenant.
	other := poa.requirements with input as acme_agent({"agent_tenants": ["globex"]})
	other.tier == "critical"
}

# The finding of issue 14: an agent of acme declares tenant globex and no target.
test_declared_foreign_tenant_is_critical if {
	r := poa.requirements with input as acme_agent({"tenant": "globex"})
	r.tier == "critical"
	r.cross_tenant == true
	r.ticket_required == true
}

test_target_tenant_outside_the_registry_is_critical if {
	r := poa.requirements with input as acme_agent({"target_tenant": "globex"})
	r.tier == "critical"
	r.cross_tenant == true

	# The agent writes both fields alike: they agree with each other, not with the registry.
	same := poa.requirements with input as acme_agent({"tenant": "globex", "target_tenant": "globex"})
	same.tier == "critical"
	same.cross_tenant == true
}

two := ["acme", "globex"]

test_an_agent_with_two_tenants_acts_for_either if {
	acme := poa.requirements with input as acme_agent({"agent_tenants": two})
	acme.tier == "low"
	globex := poa.requirements with input as acme_agent({"tenant": "globex", "agent_tenants": two})
	globex.tier == "low"
	globex.cross_tenant == false

	# ... which an agent of acme alone may not.
	single := poa.requirements with input as acme_agent({"tenant": "globex"})
	single.tier == "critical"
}

test_an_agent_with_two_tenants_may_target_its_other_tenant if {
	r := poa.requirements with input as acme_agent({"target_tenant": "globex", "agent_tenants": two})
	r.tier == "low"
}

test_an_agent_with_two_tenants_targeting_a_third_is_critical if {
	r := poa.requirements with input as acme_agent({"target_tenant": "initech", "agent_tenants": two})
	r.tier == "critical"
	d := poa.requirements with input as acme_agent({"tenant": "initech", "agent_tenants": two})
	d.tier == "critical"
}

# Fail closed: a caller that passes no registered tenants (an unregistered agent) gets critical.
test_an_agent_without_registered_tenants_is_cross_tenant if {
	r := poa.requirements with input as {"action": "crm.contact.read", "tenant": "acme"}
	r.tier == "critical"
	e := poa.requirements with input as acme_agent({"agent_tenants": []})
	e.tier == "critical"
}

test_unregistered_agent_is_never_unmandated if {
	poa.poa_required with input as {"action": "crm.contact.read", "tenant": "acme", "allow_unmandated_low_risk": true}
}

# --- the broker: the same rule on a presentation ------------------------------

medium_poa := {"tier": "medium", "leg": {
	"accountable_party": {"type": "employee", "id": "emp-100"},
	"approval": {"approver_id": "alice", "approved_at": "2026-01-01T00:00:00Z"},
}}

presentation(request) := {
	"request": object.union({"action": "crm.contact.update", "tenant": "acme", "agent_tenants": ["acme"]}, request),
	"claims": medium_poa,
	"agent_id": "spiffe://atb.local/agent/crm-bot",
	"principals": {"requesters": ["spiffe://atb.local/agent/crm-bot", "emp-100"], "approvers": ["alice"]},
}

decide(request) := d if {
	ds := poa.decisions with input as {"batch": [presentation(request)]}
	d := ds[0]
}

test_broker_own_tenant_is_allowed if {
	d := decide({})
	d.allow
	d.tier == "medium"
	not decide({"agent_tenants": ["globex"]}).allow
}

test_broker_declared_foreign_tenant_is_critical if {
	d := decide({"tenant": "globex"})
	d.tier == "critical"
	not d.allow
	some r in d.reasons
	r.code == "tier_too_low"
}

test_broker_target_outside_the_registry_is_critical if {
	d := decide({"target_tenant": "globex"})
	d.tier == "critical"
	not d.allow
	same := decide({"tenant": "globex", "target_tenant": "globex"})
	same.tier == "critical"
	not same.allow
}

test_broker_agent_with_two_tenants if {
	decide({"tenant": "globex", "agent_tenants": two}).allow
	decide({"target_tenant": "globex", "agent_tenants": two}).allow
	not decide({"target_tenant": "initech", "agent_tenants": two}).allow
}
