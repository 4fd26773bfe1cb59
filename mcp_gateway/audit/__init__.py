"""The audit log: a hash-chained, append-only record of every decision and call."""

from ..errors import AuditUnavailable
from .writer import AuditWriter

__all__ = ["AuditUnavailable", "AuditWriter"]
