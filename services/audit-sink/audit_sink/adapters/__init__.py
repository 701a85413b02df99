"""Audit sink adapters: the database and the Kafka consumer."""
