"""Issuer adapters: signing keys and the JWT signer."""
