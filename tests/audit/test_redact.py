"""`ArgumentPolicy`: what of a call's arguments an audit row keeps."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mcp_gateway.audit.redact import ArgumentPolicy

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def _stored(arguments: dict[str, Any], **options: Any) -> Any:
    stored, _ = ArgumentPolicy("redacted", **options).render(arguments)
    assert stored is not None
    return json.loads(stored)


def test_a_name_value_pair_with_a_secret_looking_name_has_its_value_redacted() -> None:
    arguments = {
        "headers": [
            {"name": "Authorization", "value": "Token abc123"},
            {"key": "X-Api-Key", "value": "k-1"},
            {"header": "Cookie", "value": "sid=1"},
            {"Name": "DB_PASSWORD", "Value": "hunter2"},
            {"name": "Accept", "value": "text/plain"},
            {"name": "author", "value": "Ada"},
        ]
    }
    assert _stored(arguments)["headers"] == [
        {"name": "Authorization", "value": "[REDACTED]"},
        {"key": "X-Api-Key", "value": "[REDACTED]"},
        {"header": "Cookie", "value": "[REDACTED]"},
        {"Name": "DB_PASSWORD", "Value": "[REDACTED]"},
        {"name": "Accept", "value": "text/plain"},
        {"name": "author", "value": "Ada"},
    ]


def test_token_shaped_values_are_redacted_under_any_key_at_any_depth() -> None:
    arguments = {"steps": [{"run": f"curl -H 'Authorization: Bearer {JWT}' https://api"}], "n": 1, "ok": True}
    assert _stored(arguments) == {
        "steps": [{"run": "curl -H 'Authorization: Bearer [REDACTED]' https://api"}],
        "n": 1,
        "ok": True,
    }


def test_normalised_key_patterns_redact_every_spelling() -> None:
    arguments = {"pwd": "1", "pass_word": "2", "Pass-Word": "3", "client_secret": "4", "credentials": {"u": "5"}}
    assert set(_stored(arguments).values()) == {"[REDACTED]"}


def test_the_digest_covers_the_stored_bytes_so_a_guessed_token_cannot_be_confirmed() -> None:
    policy = ArgumentPolicy("redacted")
    stored, digest = policy.render({"text": f"Bearer {JWT}"})
    other, other_digest = policy.render({"text": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJndWVzcyJ9.c2ln"})
    assert stored == other == '{"text":"Bearer [REDACTED]"}'
    assert digest == other_digest == hashlib.sha256(stored.encode()).hexdigest()


def test_a_secret_past_the_scan_limit_of_a_huge_string_is_not_looked_for_but_what_is_kept_always_is() -> None:
    text = "AKIAIOSFODNN7EXAMPLE " + "x" * 70_000 + " AKIAIOSFODNN7EXAMPLE"
    stored, _ = ArgumentPolicy("redacted", max_bytes=100).render({"text": text})
    assert stored is not None and "AKIA" not in stored and "[REDACTED]" in stored


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_redacting_again_changes_nothing(arguments: dict[str, Any]) -> None:
    policy = ArgumentPolicy("redacted", max_bytes=1_000_000)
    stored, _ = policy.render(arguments)
    assert stored is not None
    assert policy.render(json.loads(stored))[0] == stored


def test_made_up_long_argument_names_are_judged_but_not_remembered() -> None:
    from mcp_gateway.audit.redact import ArgumentPolicy

    policy = ArgumentPolicy("redacted", max_bytes=1_000_000)
    for i in range(100):
        stored, _ = policy.render({f"password_{i}_" + "x" * 100_000: "hunter2", "short": "x"})
        assert stored is not None and "hunter2" not in stored and "REDACTED" in stored
    assert policy._remembered.cache_info().currsize == 1  # only "short"
