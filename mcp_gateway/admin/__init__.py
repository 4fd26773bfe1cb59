"""The admin REST API under /admin/api: kill switches, status, audit, teams, principals,
keys and rules, with its OpenAPI document at /admin/api/openapi.json."""

from .routes import EXCEPTION_HANDLERS, admin_routes, openapi

__all__ = ["EXCEPTION_HANDLERS", "admin_routes", "openapi"]
