"""The SQL store: the only package that issues SQL."""

from .engine import current_revision, is_sqlite, normalize_url, open_engine, upgrade

__all__ = ["current_revision", "is_sqlite", "normalize_url", "open_engine", "upgrade"]
