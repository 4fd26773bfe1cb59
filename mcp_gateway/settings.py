"""One typed settings object for the gateway process.

Sources, strongest first: command-line flags, environment variables
(`MCP_GATEWAY_<FIELD>`, nested with `__`), the `gateway:` section of the config file,
then the defaults below. The CLI's flags map one to one onto these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .audit.redact import DEFAULT_REDACT_KEYS
from .config import Config, resolve_refs
from .errors import ConfigError, Problem


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
    session_idle_timeout: float = Field(default=1800.0, gt=0)
    max_sessions: int = Field(default=10_000, gt=0)
    """Handshake sessions in all: a backstop behind the per-principal caps below."""
    max_sessions_per_principal: int = Field(default=256, gt=0)
    """Handshake sessions one principal may hold; past it its `initialize` gets 429."""
    max_streams_per_principal: int = Field(default=64, gt=0)
    """Open GET and `subscriptions/listen` streams one principal may hold."""
    max_subscriptions_per_principal: int = Field(default=4096, gt=0)
    """Resource subscriptions one principal may hold, over its sessions and listen streams."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    database_url: str | None = None
    """SQLAlchemy URL of the store. Default: SQLite file `mcp-gateway.db` beside the config file."""
    migrate: bool = True
    """Upgrade the store's schema on start."""
    auth: Literal["keys", "none"] = "keys"
    """`keys`: agents present an API key. `none`: every request is principal local/local
    (team `local`); refused unless the gateway listens on loopback."""
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
    audit_arguments: Literal["redacted", "digest"] = "redacted"
    audit_redact_keys: list[str] = Field(default_factory=lambda: list(DEFAULT_REDACT_KEYS))
    audit_max_argument_bytes: int = Field(default=4096, gt=0)
    audit_queue_size: int = Field(default=10_000, gt=0)
    replica_id: str | None = None
    """Names this process's audit chain; must be unique among running replicas. Default: unique per process."""

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
            message = "unknown setting" if item["type"] == "extra_forbidden" else item["msg"]
            top = str(item["loc"][0]) if item["loc"] else ""
            if top in data:
                problems.append(Problem(where, (lines or {}).get(top), f"gateway.{name}: {message}"))
            else:
                problems.append(Problem("flags or environment", None, f"{name}: {message}"))
        raise ConfigError(problems) from None


_PATH_SETTINGS = ("policies",)


def settings_for(config: Config, **overrides: Any) -> Settings:
    """Settings for a loaded config file: secret references resolved, relative paths taken
    from the file's directory, and the store defaulting to a SQLite file beside it."""
    base = config.path.parent if config.path is not None else Path.cwd()
    section = resolve_refs(config.gateway, base)
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
    settings = load_settings(section, config.path, config.gateway_lines, **overrides)
    if settings.database_url is None:
        settings.database_url = f"sqlite:///{(base / 'mcp-gateway.db').resolve()}"
    return settings
