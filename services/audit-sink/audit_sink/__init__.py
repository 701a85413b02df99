"""The audit sink: every event on every `atb.*` topic, stored once, append-only."""
