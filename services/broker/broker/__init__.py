"""The broker: where authority is spent. Verifies the PoA of every agent action and decides."""
