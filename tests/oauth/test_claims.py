"""Claims -> principal, team and role, by configuration (in process)."""

from __future__ import annotations

import pytest

from mcp_gateway.errors import ConfigError
from mcp_gateway.oauth.claims import NoTeam, principal_of, role_of
from mcp_gateway.oauth.config import OAuthSettings
from mcp_gateway.oauth.verified import Verified
from mcp_gateway.roles import Role
from mcp_gateway.settings import load_settings

BASE = {"issuer": "https://idp.example.com", "audience": "https://mcp.example.com/mcp"}


def settings(**extra: object) -> OAuthSettings:
    return OAuthSettings.model_validate({**BASE, **extra})


def token(**claims: object) -> Verified:
    return Verified({"iss": BASE["issuer"], "aud": BASE["audience"], "exp": 2_000_000_000, **claims})


def test_the_first_configured_group_the_token_holds_names_its_team() -> None:
    config = settings(teams={"eng-sales": "sales", "eng-platform": "platform"})
    who = principal_of(token(sub="u1", groups=["eng-platform", "eng-sales"]), config)
    assert (who.id, who.team, who.subject, who.issuer) == ("sales/u1", "sales", "u1", BASE["issuer"])


def test_a_client_with_a_fixed_team_gets_it_whatever_its_groups() -> None:
    config = settings(teams={"eng-sales": "sales"}, client_teams={"0oa-bot": "platform"})
    who = principal_of(token(sub="0oa-bot", cid="0oa-bot", groups=["eng-sales"]), config)
    assert who.id == "platform/0oa-bot" and who.kind == "agent"


def test_the_principal_can_be_named_by_email() -> None:
    config = settings(principal_claim="email", teams={"eng": "eng"})
    who = principal_of(token(sub="00u1", email="alice@example.com", groups="eng"), config)
    assert who.id == "eng/alice@example.com" and who.subject == "00u1" and who.kind == "person"


@pytest.mark.parametrize(
    "claims",
    [{"sub": "u1", "groups": ["marketing"]}, {"sub": "u1"}, {"groups": ["eng"], "email": "x\ny@example.com"}],
)
def test_a_token_that_names_no_team_or_no_caller_is_refused_with_a_reason(claims: dict[str, object]) -> None:
    config = settings(principal_claim="email" if "email" in claims else "sub", teams={"eng": "eng"})
    with pytest.raises(NoTeam) as refused:
        principal_of(token(**claims), config)
    assert refused.value.reason


def test_the_highest_role_a_token_carries_counts_and_unknown_roles_count_for_nothing() -> None:
    config = settings(roles={"mcp-ops": "operator", "mcp-view": "viewer"})
    assert role_of(token(roles=["mcp-view", "mcp-ops", "root"]), config) is Role.operator
    assert role_of(token(roles=["root"]), config) is None
    assert role_of(token(roles="mcp-view"), config) is Role.viewer


@pytest.mark.parametrize("algorithms", [["HS256"], ["none"], []])
def test_symmetric_or_no_algorithms_are_refused_in_the_settings(algorithms: list[str]) -> None:
    with pytest.raises(ConfigError, match="asymmetric"):
        load_settings({"auth": "oauth", "oauth": {**BASE, "algorithms": algorithms}})


def test_auth_oauth_without_an_oauth_section_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match="needs an `oauth:` section"):
        load_settings({"auth": "oauth"})


def test_a_long_subject_is_cut_to_what_the_audit_holds_while_the_email_names_the_caller() -> None:
    config = settings(principal_claim="email", teams={"eng": "eng"})
    who = principal_of(token(sub="s" * 5000, email="alice@example.com", groups=["eng"]), config)
    assert who.subject == "s" * 256 and who.id == "eng/alice@example.com"
