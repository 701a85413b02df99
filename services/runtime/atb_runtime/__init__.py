"""Shared runtime of the ATB services: Kafka plumbing, OPA client, ops endpoints.

Adapters only: this package is what `adapters/` and `main.py` of each service use
to talk to Kafka and OPA. Domain code never imports it (import-linter enforces).
"""

from atb_runtime.eos import Handler, ProcessorConfig, TransactionalProcessor, TransientError, each_record
from atb_runtime.opa import OpaClient, PolicyUnavailableError
from atb_runtime.publisher import Publisher
from atb_runtime.records import (
    DeadLetters,
    Incoming,
    Outgoing,
    audit,
    dead_letter,
    outgoing,
    outgoing_envelope,
    request_id_hint,
    with_after_commit,
)

__all__ = [
    "DeadLetters",
    "Handler",
    "Incoming",
    "OpaClient",
    "Outgoing",
    "PolicyUnavailableError",
    "ProcessorConfig",
    "Publisher",
    "TransactionalProcessor",
    "TransientError",
    "audit",
    "dead_letter",
    "each_record",
    "outgoing",
    "outgoing_envelope",
    "request_id_hint",
    "with_after_commit",
]
