"""The operator dashboard at `/admin`: server-rendered pages over the admin API's own code.

login.py   the session: an admin token exchanged for an encrypted, expiring cookie,
           re-checked on every request (a revoked token logs its sessions out), with a
           CSRF token every form must return
pages.py   the page, its live parts, and the actions (engage and release a kill switch,
           reload the policy directory), each through the same function and audit as
           the REST route, and each checked against the operator's role
"""

from __future__ import annotations

from .pages import dashboard_routes

__all__ = ["dashboard_routes"]
