"""Pure approval rules: no Kafka, no database, no HTTP, no crypto."""

from approvals.domain.intake import IntakeResult, Requirements, decide_intake

__all__ = ["IntakeResult", "Requirements", "decide_intake"]
