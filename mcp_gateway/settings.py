"""One typed settings object for the gateway process.

Sources, strongest first: command-line flags, environment variables
(`MCP_GATEWAY_<FIELD>`, nested with `__`), the `gateway:` section of the config file,
then the defaults below. The CLI's flags map one to one onto these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .config import Config, resolve_refs
from .errors import ConfigError, Problem
from .oauth.config import OAuthSettings
from .sensitive import DEFAULT_REDACT_KEYS


class Settings(BaseSettings):
    """How the gateway process runs. Upstreams live in the config file, not here."""

    model_config = SettingsConfigDict(env_prefix="MCP_GATEWAY_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    """Address to listen on. Loopback by default: exposing the gateway is a decision."""
    port: int = Field(default=8000, ge=0, le=65535)
    allowed_hosts: list[str] = Field(default_factory=list)
    """Host header values accepted besides loopback (`name`, `name:port`, `name:*`), for DNS-rebinding protection."""
    allowed_origins: list[str] = Field(default_factory=list)
    """Origin header values accepted besides loopback ones."""
    dns_rebinding_protection: bool = True
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    # What a connection may cost before the app sees its request (transport/server.py `ConnectionLimits`).
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    """Request line and headers together; a larger head gets 431 and the connection closes."""
    max_headers: int = Field(default=100, gt=0)
    header_timeout: float = Field(default=10.0, gt=0)
    """Seconds a connection has to send a request head (from opening, or from a later request's first byte)."""
    body_timeout: float = Field(default=30.0, gt=0)
    """Seconds from a request's head to the end of its body; past it, 408 and the app sees a disconnect."""
    max_connections: int = Field(default=1024, gt=0)
    """Open HTTP connections; a connection beyond them gets 503 and is closed at once."""
    session_idle_timeout: float = Field(default=1800.0, gt=0)
    session_handshake_timeout: float = Field(default=10.0, gt=0)
    """Seconds a handshake session may stay silent after `initialize` (every client sends
    `notifications/initialized` at once); one that sends nothing is closed then, and counts
    against `max_sessions_per_principal` until it is."""
    max_sessions: int = Field(default=10_000, gt=0)
    """Handshake sessions in all: a backstop behind the per-principal caps below."""
    sse_replay_events: int = Field(default=256, ge=0)
    """Events kept per handshake session for clients resuming a stream with Last-Event-ID
    (2025-11-25 SSE resumability); 0 turns resumability off."""
    sse_replay_bytes: int = Field(default=64 * 1024, ge=0)
    """Bytes of events kept per handshake session for Last-Event-ID (besides the newest event)."""
    sse_replay_seconds: float = Field(default=60.0, gt=0)
    """How long an event stays available for Last-Event-ID."""
    sse_retry_ms: int = Field(default=1000, ge=0)
    """The `retry` field of a stream's priming event: how long a client waits to reconnect."""
    sse_poll_after: float | None = Field(default=None, gt=0)
    """Seconds after which the gateway ends a handshake POST stream whose call still runs; the
    client resumes it with Last-Event-ID (SSE polling). Unset: streams stay open until the answer."""
    sse_detached_calls: int = Field(default=16, ge=0)
    """Calls one handshake session may have running with no client connection (hung up, or
    let go by `sse_poll_after`); past it a hang-up cancels the call."""
    max_sessions_per_principal: int = Field(default=256, gt=0)
    """Handshake sessions one principal may hold; past it its `initialize` gets 429."""
    max_streams_per_principal: int = Field(default=64, gt=0)
    """Open GET and `subscriptions/listen` streams one principal may hold."""
    max_subscriptions_per_principal: int = Field(default=4096, gt=0)
    """Resource subscriptions one principal may hold, over its sessions and listen streams."""
    max_parked_calls_per_principal: int = Field(default=32, gt=0)
    """Calls one principal may have waiting for its input at once (a 2026-07-28 client in front
    of a handshake-era upstream); beyond it, a call that would wait is refused."""
    max_tasks_per_principal: int = Field(default=32, gt=0)
    """Tasks (the tasks extension) one principal may have running at once through the gateway;
    beyond it, a call that may become a task is refused. Also the records kept per principal."""
    task_record_ttl: float = Field(default=3600.0, gt=0)
    """Seconds a finished task's record is kept (its owner may still read it); then dropped."""
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    """Largest upstream answer (or event of an answer's stream) the gateway holds; a larger
    one is refused with a JSON-RPC error (-32053) and audited `upstream_error`."""
    response_buffer_bytes: int = Field(default=128 * 1024 * 1024, ge=64 * 1024)
    """Upstream answer bytes the gateway holds at once, for all clients; an answer that
    would go past it is refused like one over `max_response_bytes`. One principal's answers
    may hold at most half of it (or one `max_response_bytes` answer, if more)."""
    response_write_timeout: float = Field(default=60.0, gt=0)
    """Seconds a client may take none of a large answer before its connection is dropped."""
    notification_rate: float = Field(default=1000.0, gt=0)
    """Notifications per second one upstream connection may send on to clients (with a
    burst of as many); past it progress is coalesced per call and log messages are dropped,
    counted."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    """`json`: one JSON object a line (time, level, logger, message, and a request's fields)."""
    access_log: bool = False
    """One line per MCP request on logger `mcp_gateway.access` at INFO."""
    metrics: bool = True
    """Prometheus metrics at `/metrics` (admin token with at least `viewer`, or `metrics_token`)."""
    metrics_token: SecretStr | None = None
    """A bearer token that may read `/metrics` and nothing else. Without it or an admin
    token, `/metrics` answers only loopback callers."""
    otlp_endpoint: str | None = None
    """OTLP/HTTP collector for traces (base URL, `/v1/traces` added; default: the standard
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT). Unset: no spans are made."""

    database_url: str | None = None
    """SQLAlchemy URL of the store. Default: SQLite file `mcp-gateway.db` beside the config file."""
    migrate: bool = True
    """Upgrade the store's schema on start."""
    auth: Literal["keys", "none", "oauth", "keys+oauth"] = "keys"
    """`keys`: agents present an API key. `oauth`: agents and people present an access token
    from the identity provider in `oauth` (see mcp_gateway/oauth). `keys+oauth`: either.
    `none`: every request is principal local/local (team `local`); refused unless the
    gateway listens on loopback."""
    oauth: OAuthSettings | None = None
    """The identity provider trusted with `auth: oauth` / `keys+oauth` (and for operators)."""
    identity_signing_key: SecretStr | None = None
    """PEM private key (RSA, EC P-256 or Ed25519) the gateway signs the caller's identity with,
    for upstreams that set `identity_header`; its public key is at `/.well-known/jwks.json`."""
    identity_issuer: str = "mcp-gateway"
    """The `iss` of those identity assertions."""
    admin_api: bool = True
    admin_token: SecretStr | None = None
    """An admin token accepted besides those created with `mcp-gateway admin-token create`."""
    policies: Path | None = None
    """A directory of policy files applied on start (when changed)."""
    watch_policies: bool = False
    """Re-apply the policy directory when its files change."""
    snapshot_poll_interval: float = Field(default=1.0, gt=0)
    snapshot_max_age: float = Field(default=30.0, gt=0)
    """Past this age without reaching the store, the snapshot is stale and every call is denied."""
    store_timeout: float = Field(default=3.0, gt=0, le=60)
    """Bound on one store operation (PostgreSQL: connect, statement, commit; the server is
    told to end the gateway's sessions idle in a transaction this long). A call whose audit
    row is not committed within it is denied (`audit unavailable`) and never forwarded later."""
    audit_arguments: Literal["redacted", "digest"] = "redacted"
    audit_redact_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_KEYS))
    """Secret-looking name patterns, compared without case, `_`, `-`, `.` (`mcp_gateway.sensitive`)."""
    audit_max_argument_bytes: int = Field(default=4096, gt=0)
    audit_queue_size: int = Field(default=10_000, gt=0)
    audit_probe_interval: float = Field(default=10.0, ge=0.1, le=3600)
    """Seconds without an audit write after which the writer probes the store (a row written
    and taken out again), so an idle gateway is not ready within this long of its store
    ceasing to take rows. A gateway with calls to audit never probes: its commits tell."""
    audit_retention: str | None = None
    """Keep this long (`30d`, `12h`, ...; a whole number and s, m, h, d or w): older rows are
    pruned every `audit_prune_interval`, each chain keeping a checkpoint so it still
    verifies. Off (nothing pruned) by default."""
    audit_prune_interval: float = Field(default=3600.0, gt=0)
    """Seconds between prunes when `audit_retention` is set (the first one this long after start)."""
    audit_retention_export: Path | None = None
    """A directory: each periodic prune first writes the rows it prunes there, one JSON-lines
    file a prune (`audit-<UTC time>-<chain>.jsonl`); if that fails, nothing is pruned."""
    replica_id: str | None = None
    """Names this process's audit chain; must be unique among running replicas. Default: unique per process."""

    @model_validator(mode="after")
    def _oauth_configured(self) -> Settings:
        if "oauth" in self.auth and self.oauth is None:
            raise ValueError(f"auth: {self.auth} needs an `oauth:` section (issuer, audience)")
        return self

    @field_validator("database_url")
    @classmethod
    def _supported_store(cls, value: str | None) -> str | None:
        """Only SQLite and PostgreSQL: any other URL would fail later, deep in SQLAlchemy."""
        if value is None:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except ArgumentError:
            raise ValueError("not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)") from None
        if backend not in ("sqlite", "postgresql"):
            raise ValueError(f"{backend} is not supported: the store is SQLite (sqlite:///PATH) or PostgreSQL")
        return value

    @field_validator("audit_retention")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            from .when import parse_duration

            parse_duration(value)  # its ValueError names the forms
        return value

    @property
    def audit_retention_seconds(self) -> float | None:
        from .when import parse_duration

        return parse_duration(self.audit_retention) if self.audit_retention is not None else None

    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")


class _Section(PydanticBaseSettingsSource):
    """The config file's `gateway:` section as the weakest settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def load_settings(
    section: dict[str, Any] | None = None,
    file: Path | None = None,
    lines: dict[str, int] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from flags (`overrides`), the environment and a config file section."""
    data = dict(section or {})

    class _Settings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _Section(settings_cls, data))

    try:
        return _Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where = str(file) if file is not None else "settings"
        problems = []
        for item in exc.errors(include_url=False):
            name = ".".join(str(p) for p in item["loc"])
            message = (
                "unknown setting" if item["type"] == "extra_forbidden" else item["msg"].removeprefix("Value error, ")
            )
            top = str(item["loc"][0]) if item["loc"] else ""
            if top in data:
                problems.append(Problem(where, (lines or {}).get(top), f"gateway.{name}: {message}"))
            else:
                problems.append(Problem("flags or environment", None, f"{name}: {message}"))
        raise ConfigError(problems) from None


_PATH_SETTINGS = ("policies", "audit_retention_export")


def settings_for(config: Config, **overrides: Any) -> Settings:
    """Settings for a loaded config file: secret references resolved, relative paths taken
    from the file's directory, and the store defaulting to a SQLite file beside it."""
    base = config.path.parent if config.path is not None else Path.cwd()
    section, unresolved = _resolved(config, base)
    for name in _PATH_SETTINGS:
        if isinstance(section.get(name), str):
            section[name] = str((base / section[name]).resolve())
    url = section.get("database_url")
    if (
        isinstance(url, str)
        and url.startswith("sqlite")
        and ":///" in url
        and not url.split(":///", 1)[1].startswith("/")
    ):
        section["database_url"] = url.split(":///", 1)[0] + ":///" + str((base / url.split(":///", 1)[1]).resolve())
    try:
        settings = load_settings(section, config.path, config.gateway_lines, **overrides)
    except ConfigError as exc:
        raise ConfigError(sorted([*unresolved, *exc.problems], key=lambda p: p.line or 0)) from None
    if unresolved:
        raise ConfigError(unresolved)
    if settings.database_url is None:
        settings.database_url = f"sqlite:///{(base / 'mcp-gateway.db').resolve()}"
    export = settings.audit_retention_export
    if export is not None and not export.is_dir():
        line = config.gateway_lines.get("audit_retention_export")
        where = str(config.path) if line is not None else "flags or environment"
        raise ConfigError([Problem(where, line, f"audit_retention_export: {export} is not a directory")])
    if settings.policies is not None and not settings.policies.is_dir():
        from_file = section.get("policies") is not None and Path(section["policies"]) == settings.policies
        if from_file:
            line = config.gateway_lines.get("policies")
            problem = Problem(str(config.path), line, f"gateway.policies: {settings.policies} is not a directory")
        else:
            problem = Problem("flags or environment", None, f"policies: {settings.policies} is not a directory")
        raise ConfigError([problem])
    return settings


def _resolved(config: Config, base: Path) -> tuple[dict[str, Any], list[Problem]]:
    """The `gateway:` section with its references resolved, and a problem at its own line
    for each one that cannot be (left out, so the other settings are still checked)."""
    section: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in config.gateway.items():
        try:
            section.update(resolve_refs({key: value}, base))
        except ConfigError as exc:
            where = str(config.path) if config.path is not None else "settings"
            line = config.gateway_lines.get(key)
            problems.extend(Problem(where, line, f"gateway.{key}: {p.message}") for p in exc.problems)
    return section, problems
