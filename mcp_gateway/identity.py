"""Who is calling: the principal a credential resolves to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    """An agent or a person, acting for one team."""

    id: str
    team: str
    name: str = ""
    kind: str = "agent"
    key_id: str | None = field(default=None, compare=False)
    """The API key this request presented (None when no key: `auth: none`), so revoking
    one key ends what that key opened and nothing of the principal's other keys."""
    subject: str | None = field(default=None, compare=False)
    """An identity provider's `sub` for this caller (None for API keys), audited with `issuer`."""
    issuer: str | None = field(default=None, compare=False)
    expires_at: float | None = field(default=None, compare=False)
    """When the access token this request presented expires (epoch seconds): a stream it
    opened ends then (see killswitch.py); None for API keys."""


LOCAL = Principal(id="local/local", team="local", name="local", kind="agent")
"""The principal of an unauthenticated loopback gateway (`auth: none`), for development only."""
