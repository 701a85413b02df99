"""ATB: Agent Trust Broker — the `atb` command, the local launcher and the agent SDK."""
