"""Broker adapters: verification keys learned from `atb.keys`, and PoA verification."""
