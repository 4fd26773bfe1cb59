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


LOCAL = Principal(id="local/local", team="local", name="local", kind="agent")
"""The principal of an unauthenticated loopback gateway (`auth: none`), for development only."""
