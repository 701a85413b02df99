"""Shared runtime of the ATB services: Kafka plumbing, OPA client, ops endpoints.

Adapters only: this package is what `adapters/` and `main.py` of each service use
to talk to Kafka and OPA. Domain code never imports it (import-linter enforces).
"""

from atb_runtime.eos import Handler, ProcessorConfig, TransactionalProcessor
from atb_runtime.opa import OpaClient, PolicyUnavailableError
from atb_runtime.publisher import Publisher
from atb_runtime.records import Incoming, Outgoing, audit, dead_letter, outgoing, outgoing_envelope

__all__ = [
    "Handler",
    "Incoming",
    "OpaClient",
    "Outgoing",
    "PolicyUnavailableError",
    "ProcessorConfig",
    "Publisher",
    "TransactionalProcessor",
    "audit",
    "dead_letter",
    "outgoing",
    "outgoing_envelope",
]
