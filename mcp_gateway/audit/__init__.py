"""The audit log: a hash-chained, append-only record of every decision and call."""

from .writer import AuditUnavailable, AuditWriter

__all__ = ["AuditUnavailable", "AuditWriter"]
