"""Approvals adapters: the policy client."""
