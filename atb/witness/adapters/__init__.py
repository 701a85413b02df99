"""The witness's key and its state file."""
