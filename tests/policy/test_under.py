"""`under`: a path constraint that means what it says (issue 11, break 5). A regular
expression over the raw string let `/srv/public/../secret.txt` through; `under` accepts
only absolute paths in normal form at or below its directory, and refuses every spelling
with more than one reading instead of guessing how the upstream resolves it."""

from __future__ import annotations

import posixpath
import string
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcp_gateway.errors import ConfigError
from mcp_gateway.identity import Principal
from mcp_gateway.policy import PolicyState, Rule, Target, decide
from mcp_gateway.policy import bundle as policy_bundle
from mcp_gateway.policy.arguments import argument_violation

PUBLIC = {"path": {"under": "/srv/public"}}
ALICE = Principal(id="platform/alice", team="platform", name="alice")


def violation(value: Any, constraint: dict[str, Any] = PUBLIC) -> str | None:
    return argument_violation(constraint, {"path": value})


@pytest.mark.parametrize(
    "path", ["/srv/public", "/srv/public/", "/srv/public/readme.md", "/srv/public/a/b.txt", "/srv/public/dir/"]
)
def test_a_path_at_or_below_the_directory_is_allowed(path: str) -> None:
    assert violation(path) is None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/srv/public/../secret.txt", "a '..' segment"),  # the bypass of `pattern: ^/srv/public/`
        ("/srv/public/a/../../secret.txt", "a '..' segment"),
        ("/srv/public/a/..", "a '..' segment"),
        ("/srv/public/./a", "a '.' segment"),
        ("/srv//public/a", "an empty segment ('//')"),
        ("//srv/public/a", "an empty segment ('//')"),  # normpath keeps a leading `//`
        ("/srv/public//", "an empty segment ('//')"),
        ("/srv/public/%2e%2e/secret.txt", "a percent-encoded separator, dot, '%' or NUL (%2e)"),
        ("/srv/public/..%2Fsecret.txt", "a percent-encoded separator, dot, '%' or NUL (%2F)"),
        ("/srv/public/..%5csecret.txt", "a percent-encoded separator, dot, '%' or NUL (%5c)"),
        ("/srv/public/%252e%252e/x", "a percent-encoded separator, dot, '%' or NUL (%25)"),
        ("/srv/public/a%00.txt", "a percent-encoded separator, dot, '%' or NUL (%00)"),
        ("/srv/public/a\x00.txt", "a NUL byte"),
        ("/srv/public\\..\\secret.txt", "a backslash"),
        ("srv/public/a", "no leading '/' (not an absolute path)"),
        ("./srv/public/a", "no leading '/' (not an absolute path)"),
        ("", "no leading '/' (not an absolute path)"),
    ],
)
def test_an_ambiguous_spelling_is_refused_naming_what_is_wrong(path: str, problem: str) -> None:
    assert violation(path) == f"argument 'path' must be a path under /srv/public in normal form; it has {problem}"


@pytest.mark.parametrize("path", ["/srv/publicity/a", "/srv/secret.txt", "/", "/srv"])
def test_a_path_outside_the_directory_is_refused(path: str) -> None:
    assert violation(path) == "argument 'path' must be under /srv/public"


@pytest.mark.parametrize("value", [42, None, ["/srv/public/a"], {"path": "/srv/public/a"}])
def test_a_value_that_is_not_a_string_is_refused(value: Any) -> None:
    assert violation(value) == "argument 'path' must be a path under /srv/public (a string)"


def test_under_the_root_allows_any_absolute_path_in_normal_form() -> None:
    assert violation("/etc/passwd", {"path": {"under": "/"}}) is None
    assert violation("/etc/../etc/passwd", {"path": {"under": "/"}}) is not None


def test_a_rule_with_under_decides_a_call_through_decide() -> None:
    rules = [Rule(id="files-public-only", team="platform", effect="allow", servers=("files",),
                  tools=("read_file",), arguments=PUBLIC)]  # fmt: skip
    state = PolicyState.build(rules)
    target = Target("files", "tool", "read_file")
    now = 1_800_000_000.0
    assert decide(state, ALICE, target, now, arguments={"path": "/srv/public/a"}).allowed
    denied = decide(state, ALICE, target, now, arguments={"path": "/srv/public/../secret.txt"})
    assert (denied.effect, denied.rule_id) == ("deny", "files-public-only")


# -- in policy files ---------------------------------------------------------------------------


def _bundle(tmp_path: Path, under: str) -> Path:
    (tmp_path / "p.yaml").write_text(
        dedent(f"""\
        teams:
          platform:
            rules:
              - id: files-public-only
                allow: {{servers: [files], tools: [read_file], arguments: {{path: {{under: "{under}"}}}}}}
        """)
    )
    return tmp_path


def test_a_policy_file_states_under_and_a_trailing_slash_is_dropped(tmp_path: Path) -> None:
    bundle = policy_bundle.load(_bundle(tmp_path, "/srv/public/"))
    assert bundle.rules[0].arguments == {"path": {"under": "/srv/public", "required": True}}


@pytest.mark.parametrize(
    ("under", "problem"),
    [("srv/public", "no leading '/' (not an absolute path)"), ("/srv/../etc", "a '..' segment"),
     ("/srv//public", "an empty segment ('//')")],
)  # fmt: skip
def test_a_policy_file_with_an_under_that_is_not_a_normal_absolute_path_is_refused(
    tmp_path: Path, under: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        policy_bundle.load(_bundle(tmp_path, under))
    message = refused.value.problems[0].message
    assert message.endswith(f"Value error, must be an absolute path in normal form; it has {problem}"), message


def test_the_published_schema_describes_under() -> None:
    constraint = policy_bundle.schema()["$defs"]["ArgumentConstraint"]["properties"]
    assert "under" in constraint and "normal form" in constraint["under"]["description"]


# -- property: what `under` lets through is what it says --------------------------------------

PIECES = st.sampled_from(["srv", "public", "secret.txt", "..", ".", "", "%2e", "%2F", "a\\b", "publicx", "%41"])
paths = st.builds(
    lambda lead, parts, tail: lead + "/".join(parts) + tail,
    st.sampled_from(["/", "//", "", "./"]),
    st.lists(PIECES, max_size=6),
    st.sampled_from(["", "/"]),
) | st.text(alphabet=string.printable, max_size=20)


@settings(max_examples=1000, deadline=None)
@given(paths)
def test_every_path_under_lets_through_resolves_under_the_directory_and_is_its_own_normal_form(path: str) -> None:
    if violation(path) is not None:
        return
    resolved = posixpath.normpath(path)
    assert resolved == "/srv/public" or resolved.startswith("/srv/public/")
    assert resolved == path.removesuffix("/")
    assert "%" not in path.replace("%41", "") and "\\" not in path
