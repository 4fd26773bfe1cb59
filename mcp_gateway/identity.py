"""Who is calling: the principal a credential resolves to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    """An agent or a person, acting for one team."""

    id: str
    team: str
    name: str = ""
    kind: str = "agent"


LOCAL = Principal(id="local/local", team="local", name="local", kind="agent")
"""The principal of an unauthenticated loopback gateway (`auth: none`), for development only."""
