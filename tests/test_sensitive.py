"""What looks secret: name patterns, token shapes in values, URL credentials."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.sensitive import NamePatterns, mask_urls, scrub

SECRET_NAMES = [
    "password", "pwd", "PWD", "pass_word", "Pass-Word", "passwd", "db_pass", "passphrase", "x-api-key", "apiKey",
    "API_KEY", "client_secret", "private_key", "privateKey", "access_token", "refreshToken", "session", "sessionId",
    "credentials", "auth", "Auth", "basicAuth", "X-Auth-Token", "AUTH_HEADER", "authorization", "Cookie",
    "set-cookie", "aws.secret.access.key",
]  # fmt: skip
PLAIN_NAMES = ["author", "Authors", "authority", "oauth_provider", "compass", "bypass", "passenger", "path", "text",
               "name", "value", "keyword", "description"]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_looking_names_match_however_they_are_spelled(name: str) -> None:
    assert NamePatterns()(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_a_short_pattern_must_be_a_whole_word_so_author_is_not_a_secret(name: str) -> None:
    assert not NamePatterns()(name)


def test_configured_patterns_are_normalised_like_the_names() -> None:
    names = NamePatterns(["Tenant_ID", "pin"])
    assert names("tenant-id") and names("TENANTID") and names("card_pin")
    assert not names("password") and not names("spinner")


AWS = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"
SHAPES = [
    (f"key {AWS} here", "key [REDACTED] here"),
    ("ASIAY34FZKBOKMUTVV7A", "[REDACTED]"),
    (f"token={JWT}", "token=[REDACTED]"),
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer [REDACTED]"),
    ("bearer 4f1c2a9e-77", "bearer [REDACTED]"),
    ("Basic dXNlcjpodW50ZXIy", "Basic [REDACTED]"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----\ntail",
        "-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]-----END OPENSSH PRIVATE KEY-----\ntail",
    ),
    (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE (cut off)",
        "-----BEGIN EC PRIVATE KEY-----[REDACTED]-----END EC PRIVATE KEY-----",
    ),
    ("ghp_" + "a" * 36, "[REDACTED]"),
    ("gho_" + "B1" * 18, "[REDACTED]"),
    ("github_pat_" + "11ABC" * 12, "[REDACTED]"),
    ("xoxb-1234567890-abcdefghij", "[REDACTED]"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "[REDACTED]"),
    ("mgw_0123456789ab_" + "Zz9-" * 10, "mgw_0123456789ab_[REDACTED]"),
    ("mgwa_0123456789ab_" + "Zz9-" * 10, "mgwa_0123456789ab_[REDACTED]"),
    ("clone https://bot:s3cr3t@git.example/r.git", "clone https://bot:[REDACTED]@git.example/r.git"),
    ("postgresql://gw:p/w@db/x?password=two", "postgresql://gw:[REDACTED]@db/x?password=[REDACTED]"),
    ("/hook?api_key=abc123&page=2&X-Sig=zz", "/hook?api_key=[REDACTED]&page=2&X-Sig=[REDACTED]"),
]
PLAIN = [
    "Basic information about the project",
    "bearer instruments",
    "http://host:8080/path?page=2",
    "disk_test_results_2024_archive",
    "the AKIA prefix alone",
    "x = 1\ny = x + 2",
    "mailto:someone@example.org",
]


@pytest.mark.parametrize(("text", "scrubbed"), SHAPES)
def test_token_shapes_are_replaced_keeping_what_names_their_kind(text: str, scrubbed: str) -> None:
    assert scrub(text) == scrubbed


@pytest.mark.parametrize("text", PLAIN)
def test_text_that_only_resembles_a_token_is_kept(text: str) -> None:
    assert scrub(text) == text


def test_only_the_first_scan_limit_characters_of_a_string_are_looked_through() -> None:
    text = f"{AWS} " + "x" * 100 + f" {AWS}"
    assert scrub(text, limit=50) == "[REDACTED] " + "x" * 100 + f" {AWS}"


@given(st.text())
def test_scrubbing_never_fails_and_is_stable(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


def test_a_store_url_is_shown_with_its_password_masked() -> None:
    assert mask_urls("postgresql://gateway:Passw0rd@host/db") == "postgresql://gateway:***@host/db"
    assert mask_urls("postgresql+asyncpg://gateway:p:w@host:5432/db") == "postgresql+asyncpg://gateway:***@host:5432/db"
    assert (
        mask_urls("postgresql://gateway@host/db?password=x&ssl=on")
        == "postgresql://gateway@host/db?password=***&ssl=on"
    )
    assert mask_urls("sqlite:////var/lib/gw.db") == "sqlite:////var/lib/gw.db"


def test_an_upstream_url_is_shown_without_userinfo_password_or_secret_query_values() -> None:
    assert mask_urls("https://u:pw@mcp.example/mcp?token=abc&v=1") == "https://u:***@mcp.example/mcp?token=***&v=1"
    assert mask_urls("cannot reach http://mcp.example:8080/mcp") == "cannot reach http://mcp.example:8080/mcp"
