"""Pure audit rules: what a stored row holds and how long it is kept."""

from audit_sink.domain.retention import RetentionPolicy
from audit_sink.domain.rows import AuditRow, RecordMeta, row_for

__all__ = ["AuditRow", "RecordMeta", "RetentionPolicy", "row_for"]
