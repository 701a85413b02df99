"""Adapters: Slack Web API, request signatures, SQLite state, Kafka, HTTP."""
