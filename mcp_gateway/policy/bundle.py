"""Policy files: `policies/*.yaml`, validated, hashed and turned into rules.

```yaml
teams:
  platform:
    description: Platform engineering agents
    rules:
      - id: platform-read                      # unique across the bundle
        allow:
          servers: [files, search]             # glob patterns
          tools: ["read_*", "search"]          # names tools only: no prompts, no resources
      - id: files-public-only
        allow:
          servers: [files]
          tools: [read_file]
          arguments:                           # constraints on the call's arguments
            path: {under: /srv/public}
      - id: docs-everything
        allow: {servers: [docs]}               # names no kind: every tool, prompt, resource
      - id: no-deletes
        deny: {servers: ["*"], tools: ["delete_*"]}
        shadow: true                           # decided and audited, not enforced
tests:
  - principal: platform/ci-bot                 # or `team: platform`
    call: files__read_file                     # SERVER__TOOL; or prompt:/resource:
    arguments: {path: /srv/public/readme.md}
    expect: allow
```

A rule covers the kinds it names: `tools`, `prompts`, `resources`; a rule that names none
of them covers every kind of its servers. Resource patterns are compared with URIs in
their RFC 3986 normal form (see `uris`), so a pattern with a literal scheme must itself be
in normal form.

A file may set `shadow: true` at the top to make all its rules shadow rules. Every problem
is reported with its file and line; a bundle with any problem is never applied.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .. import yamlsrc
from ..errors import ConfigError, Problem
from ..policy_model import Rule
from .arguments import under_problem
from .uris import pattern_problem

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_TEAM = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


KINDS_NOTE = (
    " A rule that names none of tools, prompts and resources covers every kind of its servers;"
    " a rule that names any of them covers only the kinds it names."
)
Patterns = Annotated[list[str], Field(min_length=1)]


def check_resource_patterns(patterns: list[str] | None) -> list[str] | None:
    """A resource pattern with a literal scheme must be in normal form: URIs are matched in it."""
    for pattern in patterns or ():
        problem = pattern_problem(pattern)
        if problem is not None:
            raise ValueError(problem)
    return patterns


class Match(BaseModel):
    """What a rule covers."""

    model_config = ConfigDict(extra="forbid")

    servers: list[str] = Field(min_length=1, description="Upstream server names (glob patterns).")
    tools: Patterns | None = Field(
        default=None, description="Tool names as the upstream knows them (glob patterns)." + KINDS_NOTE
    )
    prompts: Patterns | None = Field(
        default=None, description="Prompt names as the upstream knows them (glob patterns)." + KINDS_NOTE
    )
    resources: Patterns | None = Field(
        default=None,
        description="Resource URIs or URI templates (glob patterns), in RFC 3986 normal form." + KINDS_NOTE,
    )
    arguments: dict[str, ArgumentConstraint] | None = Field(
        default=None, description="Constraints on tool-call arguments (allow rules only)."
    )

    _resources = field_validator("resources")(check_resource_patterns)


class ArgumentConstraint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enum: list[Any] | None = Field(default=None, description="Allowed values.")
    pattern: str | None = Field(default=None, description="A regular expression the value must contain a match of.")
    min: float | None = None
    max: float | None = None
    under: str | None = Field(
        default=None,
        description=(
            "An absolute directory: the value must be a path in its normal form at or below it "
            "('..', '.', '//', backslashes, NUL and percent-encoded separators or dots are refused)."
        ),
    )
    required: bool = Field(default=True, description="Whether a call without this argument is refused.")

    @field_validator("under")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None:
            problem = under_problem(value)
            if problem is not None:
                raise ValueError(f"must be an absolute path in normal form; it has {problem}")
            if value != "/":
                value = value.rstrip("/")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class RuleDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, description="Unique across the bundle; default <team>-<n>.")
    description: str = ""
    allow: Match | None = None
    deny: Match | None = None
    shadow: bool = False

    @model_validator(mode="after")
    def _one_effect(self) -> RuleDoc:
        if (self.allow is None) == (self.deny is None):
            raise ValueError("a rule has exactly one of `allow` or `deny`")
        if self.deny is not None and self.deny.arguments:
            raise ValueError("`arguments` constraints belong on allow rules")
        if self.id is not None and not _ID.fullmatch(self.id):
            raise ValueError("id: letters, digits, '_', '.', ':', '-' (up to 64)")
        return self


class TeamDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    rules: list[RuleDoc] = Field(default_factory=list)


class TestDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    principal: str | None = Field(default=None, description="team/name of a principal.")
    team: str | None = None
    call: str | None = Field(default=None, description="A tool as agents see it: SERVER__TOOL.")
    prompt: str | None = Field(default=None, description="SERVER__PROMPT")
    resource: str | None = Field(default=None, description="SERVER+URI")
    arguments: dict[str, Any] | None = None
    expect: Literal["allow", "deny"]

    @model_validator(mode="after")
    def _shape(self) -> TestDoc:
        if (self.principal is None) == (self.team is None):
            raise ValueError("a test names exactly one of `principal` or `team`")
        if sum(x is not None for x in (self.call, self.prompt, self.resource)) != 1:
            raise ValueError("a test names exactly one of `call`, `prompt` or `resource`")
        return self


class PolicyFile(BaseModel):
    """One file of a policy bundle."""

    model_config = ConfigDict(extra="forbid", title="mcp-gateway policy file")

    shadow: bool = Field(default=False, description="Every rule in this file is a shadow rule.")
    teams: dict[str, TeamDoc] = Field(default_factory=dict)
    tests: list[TestDoc] = Field(default_factory=list)


Match.model_rebuild()


@dataclass(frozen=True)
class PolicyTest:
    file: str
    line: int | None
    doc: TestDoc


@dataclass
class Bundle:
    """A validated set of policy files."""

    rules: list[Rule] = field(default_factory=list)
    teams: dict[str, str] = field(default_factory=dict)
    tests: list[PolicyTest] = field(default_factory=list)
    content_hash: str = ""
    files: list[str] = field(default_factory=list)


def schema() -> dict[str, Any]:
    """The JSON Schema of a policy file, for editors."""
    document = PolicyFile.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return document


def _patterns(named: list[str] | None) -> tuple[str, ...] | None:
    return tuple(named) if named is not None else None


def _hash(files: list[tuple[str, str]]) -> str:
    digest = hashlib.sha256()
    for name, text in files:
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


def _claim_raw_ids(data: Any, path: Path, source: yamlsrc.Source, seen_ids: dict[str, str]) -> list[Problem]:
    """The explicit rule ids of a file that failed validation, checked and recorded as a
    valid file's are."""
    problems: list[Problem] = []
    teams = data.get("teams") if isinstance(data, dict) else None
    for team, team_raw in teams.items() if isinstance(teams, dict) else ():
        rules = team_raw.get("rules") if isinstance(team_raw, dict) else None
        for index, rule in enumerate(rules if isinstance(rules, list) else ()):
            rule_id = rule.get("id") if isinstance(rule, dict) else None
            if not isinstance(rule_id, str):
                continue
            loc = ("teams", team, "rules", index)
            if rule_id in seen_ids:
                message = f"rule id {rule_id!r} is already used in {seen_ids[rule_id]}"
                problems.append(Problem(str(path), source.line_of((*loc, "id")), message))
            else:
                seen_ids[rule_id] = f"{path.name}:{source.line_of(loc)}"
    return problems


def load(directory: Path) -> Bundle:
    """Read and validate every `*.yaml` / `*.yml` file in `directory`; all problems at once."""
    if not directory.is_dir():
        raise ConfigError([Problem(str(directory), None, "not a directory of policy files")])
    paths = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    problems: list[Problem] = []
    bundle = Bundle()
    texts: list[tuple[str, str]] = []
    seen_ids: dict[str, str] = {}
    positions: dict[str, int] = {}
    for path in paths:
        try:
            text = yamlsrc.read_text(path)
            texts.append((path.name, text))
            data, source = yamlsrc.loads(text, str(path))
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        if data is None:
            continue
        try:
            doc = PolicyFile.model_validate(data)
        except ValidationError as exc:
            problems.extend(source.problems(exc))
            # Still claim the file's explicit ids, so a clash is reported in this pass too.
            problems.extend(_claim_raw_ids(data, path, source, seen_ids))
            continue
        bundle.files.append(str(path))
        for team, team_doc in doc.teams.items():
            where = source.line_of(("teams", team))
            if not _TEAM.fullmatch(team):
                problems.append(Problem(str(path), where, f"teams.{team}: lowercase letters, digits, '_' and '-'"))
                continue
            if team in bundle.teams and team_doc.description:
                problems.append(Problem(str(path), where, f"teams.{team}: described in more than one file"))
            bundle.teams[team] = team_doc.description or bundle.teams.get(team, "")
            for index, rule_doc in enumerate(team_doc.rules):
                loc = ("teams", team, "rules", index)
                rule_id = rule_doc.id or f"{team}-{positions.get(team, 0) + 1}"
                if rule_id in seen_ids:
                    problems.append(
                        Problem(
                            str(path),
                            source.line_of((*loc, "id")),
                            f"rule id {rule_id!r} is already used in {seen_ids[rule_id]}",
                        )
                    )
                    continue
                seen_ids[rule_id] = f"{path.name}:{source.line_of(loc)}"
                positions[team] = positions.get(team, 0) + 1
                match = rule_doc.allow or rule_doc.deny
                assert match is not None
                bundle.rules.append(
                    Rule(
                        id=rule_id,
                        team=team,
                        effect="allow" if rule_doc.allow is not None else "deny",
                        servers=tuple(match.servers),
                        tools=_patterns(match.tools),
                        prompts=_patterns(match.prompts),
                        resources=_patterns(match.resources),
                        arguments={k: v.model_dump(exclude_none=True) for k, v in match.arguments.items()}
                        if match.arguments
                        else None,
                        shadow=rule_doc.shadow or doc.shadow,
                        position=positions[team],
                        description=rule_doc.description,
                    )
                )
        for index, test in enumerate(doc.tests):
            bundle.tests.append(PolicyTest(str(path), source.line_of(("tests", index)), test))
    if problems:
        raise ConfigError(yamlsrc.merge_problems([problems]))
    if not paths:
        raise ConfigError([Problem(str(directory), None, "no policy files (*.yaml) here")])
    bundle.content_hash = _hash(texts)
    return bundle
