"""What an operator may do through the admin API: three roles, each including the one below.

    viewer    read: upstreams, kill switches, audit, keys, rules, policy versions
    operator  viewer, and act on traffic: kill switches, policy reloads
    admin     operator, and change who may do what: keys, admin tokens, rules

Every way an operator authenticates (the configured `admin_token`, tokens made with
`mcp-gateway admin-token create`, an identity provider's access token) ends in one `Role`;
every admin route names the least role it needs.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        """Whether this role may do what `needed` may."""
        return self.rank >= needed.rank


_RANK = {Role.viewer: 0, Role.operator: 1, Role.admin: 2}
