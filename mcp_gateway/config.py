"""The gateway's configuration file: which upstream MCP servers sit behind it.

```yaml
upstreams:
  files:                        # stdio: the gateway spawns and supervises the process
    command: python
    args: [-m, my_server]
    env: {API_TOKEN: {$env: FILES_TOKEN}}
  search:                       # Streamable HTTP
    url: https://search.internal/mcp
    headers: {Authorization: {$env: SEARCH_AUTH}}
    namespace: web              # tools appear as web__<tool>; "" for none
gateway:                        # optional: any `Settings` field (see settings.py)
  port: 8000
```

Secrets are references (`{$env: NAME}` or `{$file: PATH}`), resolved when a connection
is opened, never literals in the file: a literal value for a header or variable whose
name looks secret is refused at load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import yamlsrc
from .errors import ConfigError, Problem

SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,47}$")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_SECRET_NAME = re.compile(r"auth|token|secret|password|passwd|api[-_]?key|cookie|credential", re.I)


class EnvRef(BaseModel):
    """`{$env: NAME}`: the value of an environment variable of the gateway process."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    env: str = Field(alias="$env", min_length=1)

    def resolve(self) -> str:
        value = os.environ.get(self.env)
        if value is None:
            raise ConfigError([Problem("environment", None, f"variable {self.env} is not set")])
        return value


class FileRef(BaseModel):
    """`{$file: PATH}`: the contents of a file (trailing newline stripped), e.g. a mounted secret."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    file: str = Field(alias="$file", min_length=1)

    def resolve(self) -> str:
        try:
            return Path(self.file).read_text(encoding="utf-8").rstrip("\n")
        except OSError as exc:
            raise ConfigError([Problem(self.file, None, f"cannot read secret: {exc.strerror}")]) from None


Value = str | EnvRef | FileRef


def resolve(value: Value) -> str:
    """A configured value with its secret reference resolved."""
    return value if isinstance(value, str) else value.resolve()


def resolve_refs(section: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """A settings section with `{$env: ...}` / `{$file: ...}` values resolved (files relative to `base`)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, dict) and set(value) == {"$env"}:
            out[key] = EnvRef.model_validate(value).resolve()
        elif isinstance(value, dict) and set(value) == {"$file"}:
            ref = FileRef.model_validate(value)
            if base is not None:
                ref.file = str((base / ref.file).resolve())
            out[key] = ref.resolve()
        elif isinstance(value, dict):
            out[key] = resolve_refs(value, base)  # e.g. oauth.introspection.client_secret
        else:
            out[key] = value
    return out


def _check_values(values: Any) -> Any:
    """One clear message for a value that is neither a string nor a secret reference."""
    if isinstance(values, dict):
        for name, value in values.items():
            if isinstance(value, str) or (isinstance(value, dict) and set(value) in ({"$env"}, {"$file"})):
                continue
            raise ValueError(f"{name}: must be a string or a reference {{$env: NAME}} / {{$file: PATH}}")
    return values


def _no_secret_literals(values: dict[str, Value], what: str) -> dict[str, Value]:
    for name, value in values.items():
        if isinstance(value, str) and _SECRET_NAME.search(name):
            raise ValueError(
                f"{what} {name!r} looks like a secret: write a reference such as "
                f'{{"$env": "NAME"}} or {{"$file": "/path"}}, not a literal'
            )
    return values


class _Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str | None = None
    """Prefix for this server's tool and prompt names (`<namespace>__<name>`) and resource
    URIs (`<namespace>+<uri>`). Defaults to the server's name; `""` exposes names as they are."""
    timeout: float = Field(default=300.0, gt=0)
    """Seconds a single request may take before the gateway answers with a timeout error."""
    connect_timeout: float = Field(default=30.0, gt=0)
    """Seconds to connect, negotiate the protocol and read the catalog; `/readyz` waits at
    most this long for the first attempt."""
    health_interval: float = Field(default=5.0, gt=0)
    """Seconds between liveness checks (ping, or server/discover at 2026-07-28), both kinds."""
    health_timeout: float = Field(default=5.0, gt=0)
    """Seconds a liveness check has to be answered before the connection is given up."""
    protocol: Literal["auto", "handshake", "modern"] = "auto"
    """Which protocol era the gateway speaks upstream. `auto` tries 2026-07-28 first."""
    enabled: bool = True

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value and not SERVER_NAME.fullmatch(value):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter (or empty)")
        return value


class StdioUpstream(_Upstream):
    """A local MCP server the gateway spawns, speaking JSON-RPC on its stdin/stdout."""

    command: str = Field(min_length=1)
    """The executable. `python` means the gateway's own interpreter, so example and in-house
    servers run with the packages the gateway was installed with."""
    args: list[str] = Field(default_factory=list)
    env: dict[str, Value] = Field(default_factory=dict)
    cwd: str | None = None
    """Working directory; relative paths are relative to the config file, the default."""

    _env_shape = field_validator("env", mode="before")(_check_values)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, Value]) -> dict[str, Value]:
        return _no_secret_literals(value, "variable")


class HttpUpstream(_Upstream):
    """A remote MCP server reached over Streamable HTTP."""

    url: Annotated[str, Field(pattern=r"^https?://")]
    headers: dict[str, Value] = Field(default_factory=dict)
    identity_header: str | None = Field(default=None, pattern=r"^[A-Za-z0-9-]{1,64}$")
    """A header that carries the caller's identity to this upstream on each request, as a
    short-lived JWT the gateway signs (`identity_signing_key`); never the caller's own token."""

    _headers_shape = field_validator("headers", mode="before")(_check_values)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, Value]) -> dict[str, Value]:
        for name, item in value.items():
            # One header line each: a name that is a token, a value with no CR, LF or NUL
            # (which would end the line and start another header). References are checked
            # when resolved, by the HTTP client.
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not an HTTP token")
            if isinstance(item, str) and ("\r" in item or "\n" in item or "\0" in item):
                raise ValueError(f"header {name!r} has a CR, LF or NUL in its value")
        return _no_secret_literals(value, "header")


UpstreamConfig = StdioUpstream | HttpUpstream


class ConfigFile(BaseModel):
    """The whole file: upstreams plus optional gateway settings."""

    model_config = ConfigDict(extra="forbid")

    upstreams: dict[str, dict[str, Any]] = Field(default_factory=dict)
    gateway: dict[str, Any] = Field(default_factory=dict)


class Config(BaseModel):
    """A loaded, validated configuration."""

    path: Path | None = None
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    gateway: dict[str, Any] = Field(default_factory=dict)
    gateway_lines: dict[str, int] = Field(default_factory=dict)
    """Line of each `gateway:` key, for errors found when settings are built."""


_PASSWORD_IN_URL = re.compile(r"://[^/@:]+:[^/@]+@")


def _gateway_secret_problems(section: dict[str, Any], source: yamlsrc.Source) -> list[Problem]:
    """Settings that carry secrets must be references in the file, like upstream credentials."""
    problems = []
    oauth = section.get("oauth")
    introspection = oauth.get("introspection") if isinstance(oauth, dict) else None
    if isinstance(introspection, dict) and isinstance(introspection.get("client_secret"), str):
        problems.append(
            Problem(
                source.file,
                source.line_of(("gateway", "oauth", "introspection", "client_secret")),
                "gateway.oauth.introspection.client_secret holds a secret: write a reference such as {$env: NAME}",
            )
        )
    for key, value in section.items():
        secret = key in ("admin_token", "identity_signing_key") or (
            key == "database_url" and isinstance(value, str) and _PASSWORD_IN_URL.search(value)
        )
        if secret and isinstance(value, str):
            problems.append(
                Problem(
                    source.file,
                    source.line_of(("gateway", key)),
                    f"gateway.{key} holds a secret: write a reference such as {{$env: NAME}} or {{$file: PATH}}",
                )
            )
    return problems


_FIELDS = {*StdioUpstream.model_fields, *HttpUpstream.model_fields}


def _upstream(name: str, raw: Any, source: yamlsrc.Source) -> UpstreamConfig | list[Problem]:
    loc: yamlsrc.Loc = ("upstreams", name)
    if not SERVER_NAME.fullmatch(name):
        return [
            Problem(
                source.file,
                source.line_of(loc),
                f"upstreams.{name}: a name is lowercase letters, digits and '-', starting with a letter",
            )
        ]
    if not isinstance(raw, dict):
        return [Problem(source.file, source.line_of(loc), f"upstreams.{name}: must be a mapping")]
    has_command, has_url = "command" in raw, "url" in raw
    if not has_command and not has_url:
        # `comand:` is a misspelt field before it is a missing one.
        unknown = [
            Problem(
                source.file,
                source.line_of((*loc, key)),
                f"upstreams.{name}.{key}: {yamlsrc.unknown_field(key, _FIELDS)}",
            )
            for key in raw
            if isinstance(key, str) and key not in _FIELDS
        ]
        if unknown:
            return unknown
    if has_command == has_url:
        return [
            Problem(
                source.file,
                source.line_of(loc),
                f"upstreams.{name}: give either `command` (stdio) or `url` (HTTP)",
            )
        ]
    model: type[UpstreamConfig] = StdioUpstream if has_command else HttpUpstream
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        return source.problems(exc, loc, known=model.model_fields)


def parse(text: str, file: str, base: Path | None = None) -> Config:
    """Validate a configuration document; every problem is reported with its line."""
    data, source = yamlsrc.loads(text, file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "the file must be a mapping with `upstreams:`")])
    try:
        top = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source.problems(exc, known=ConfigFile.model_fields)) from None
    problems: list[Problem] = []
    upstreams: dict[str, UpstreamConfig] = {}
    for name, raw in top.upstreams.items():
        result = _upstream(name, raw, source)
        if isinstance(result, list):
            problems.extend(result)
        else:
            if base is not None:
                # Paths in a config file are relative to the file, not to wherever the gateway starts.
                if isinstance(result, StdioUpstream):
                    result.cwd = str((base / (result.cwd or ".")).resolve())
                values = result.env if isinstance(result, StdioUpstream) else result.headers
                for value in values.values():
                    if isinstance(value, FileRef):
                        value.file = str((base / value.file).resolve())
            upstreams[name] = result
    problems.extend(_gateway_secret_problems(top.gateway, source))
    seen: dict[str, str] = {}
    for name, upstream in upstreams.items():
        namespace = name if upstream.namespace is None else upstream.namespace
        if namespace and namespace in seen:
            problems.append(
                Problem(
                    file,
                    source.line_of(("upstreams", name)),
                    f"upstreams.{name}: namespace {namespace!r} is already used by {seen[namespace]!r}",
                )
            )
        seen.setdefault(namespace, name)
    if problems:
        raise ConfigError(problems)
    lines = {k: line for k in top.gateway if (line := source.line_of(("gateway", k))) is not None}
    return Config(path=Path(file), upstreams=upstreams, gateway=top.gateway, gateway_lines=lines)


def load(path: Path) -> Config:
    """Read and validate a configuration file."""
    return parse(yamlsrc.read_text(path), str(path), base=path.parent)
