"""One typed settings object for the gateway process.

Sources, strongest first: command-line flags, environment variables
(`MCP_GATEWAY_<FIELD>`, nested with `__`), the `gateway:` section of the config file,
then the defaults below. The CLI's flags map one to one onto these fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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
    log_level: Literal["debug", "info", "warning", "error"] = "info"


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
