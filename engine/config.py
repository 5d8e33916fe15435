"""The configuration file (`--config`): one typed, frozen tree, validated once at start-up.

Unknown keys and bad values are `ConfigError`s located at file:line:col. Credentials are
`${ENV_VAR}` references resolved at load; a missing variable is an error.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, field_validator

from channels.fallback import SmsSettings
from engine.clock import DEFAULT_TIMEZONE, parse_duration, zone
from engine.errors import ConfigError, PlaybookError, Problem
from engine.grammar.addresses import ChannelName
from engine.grammar.loader import read_text
from engine.grammar.policies import Duration, PolicySettings, QuietWindow
from engine.grammar.values import GrammarModel
from engine.grammar.yamlsource import SourceMap, parse_yaml, validation_problems

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class DatabaseSettings(GrammarModel):
    url: str = "sqlite:///demo.db"
    """SQLAlchemy URL: sqlite:///file.db (embedded) or postgresql://user@host/db (production)."""


def _adapter_union() -> Any:
    from channels import ADAPTERS

    members = tuple(cls.Settings for cls in ADAPTERS.values())
    return Annotated[Union[members], Field(discriminator="adapter")]  # noqa: UP007 - built from the registry


if TYPE_CHECKING:
    from channels.base import ChannelSettings as AdapterSettings
else:
    AdapterSettings = _adapter_union()


class DispatchSettings(GrammarModel):
    batch_size: Annotated[int, Field(ge=1, strict=True)] = 500
    """Ledger rows claimed per batch."""
    lease: Duration = timedelta(minutes=5)
    """How long a `sending` row is held before reconciliation asks the vendor what happened."""
    max_attempts: Annotated[int, Field(ge=1, strict=True)] = 5
    """Retryable vendor errors are retried (exponential backoff with jitter) this many times in all."""
    retry_wait: Duration = timedelta(seconds=1)
    """First backoff; it doubles per attempt (with jitter), capped at `lease` / 4."""
    grace: Duration = timedelta(seconds=30)
    """On SIGTERM, in-flight sends get this long to finish."""
    replicas: Annotated[int, Field(ge=1, strict=True)] = 1
    """Daemons sharing one database: each uses 1/replicas of every channel's rate limit."""


class HttpSettings(GrammarModel):
    listen: str | None = "127.0.0.1:8080"
    """host:port where `siyu run` serves the vendors' push callbacks (port 0: any free port; null: off)."""

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError(f"bad listen address {value!r}: write host:port, e.g. 127.0.0.1:8080")
        return value


class LogSettings(GrammarModel):
    format: Literal["json", "console"] = "json"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(GrammarModel):
    """The whole configuration file."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    timezone: str = DEFAULT_TIMEZONE
    """Default timezone of playbooks that name none, and of `--at` values without an offset."""
    playbooks: str = "playbooks/"
    """The playbook directory (relative paths: from the working directory, like the database file)."""
    links: dict[str, str] = Field(default_factory=dict)
    """Shop links by platform, for templates: `{{ links[member.habitual_platform] }}`."""
    misfire_grace: str = "1h"
    """How late a scheduled occurrence or an event may still be evaluated (also dry-run's --window)."""
    channels: dict[ChannelName, AdapterSettings] = Field(default_factory=dict)
    """One entry per channel name used by playbooks (sms, ai_call, wecom, template)."""
    policies: PolicySettings = Field(default_factory=PolicySettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    sms_unsubscribe: list[str] = Field(default_factory=lambda: ["T", "TD", "R", "N", "退订"])
    """SMS replies that unsubscribe (trimmed, case-insensitive): the number gets an SMS suppression at once."""
    poll_interval: Duration = timedelta(seconds=30)
    """How often the daemon looks for due events and deferred touches."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("misfire_grace")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def costs(self) -> dict[str, Decimal]:
        """Cost per touch in yuan, by channel name."""
        return {name: channel.cost for name, channel in self.channels.items()}

    @property
    def vendor_quiet_hours(self) -> dict[str, QuietWindow]:
        """Per channel, the hours its vendor takes no messages (outside the adapter's `send_window`)."""
        return {name: window for name, channel in self.channels.items()
                if (window := channel.vendor_quiet_hours) is not None}

    @property
    def misfire_grace_td(self) -> timedelta:
        return parse_duration(self.misfire_grace)


def _resolve_env(value: Any, path: tuple[Any, ...], source: SourceMap, file: str,
                 problems: list[Problem]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve_env(v, (*path, k), source, file, problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*path, i), source, file, problems) for i, v in enumerate(value)]
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                line, col = source.locate(path) or (None, None)
                problems.append(Problem(file, line, col, f"environment variable {name} is not set"))
                return ""
            return os.environ[name]
        return _ENV.sub(substitute, value)
    return value


def load_config(path: Path | None) -> tuple[Settings, Path]:
    """Load and validate the config (defaults when `path` is None): (settings, its directory)."""
    if path is None:
        return Settings(), Path.cwd()
    file = str(path)
    try:
        text = read_text(path)
    except PlaybookError as exc:  # read_text speaks of playbooks; these are config problems
        raise ConfigError(exc.problems) from None
    data, source = parse_yaml(text, file, ConfigError, what="config")
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, 1, "a config file is a mapping of keys such as database, timezone")])
    problems: list[Problem] = []
    data = _resolve_env(data, (), source, file, problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, data, source, file)
    else:
        problems += _unmapped_by_fallback(settings, source, file)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    return settings, path.parent


def _unmapped_by_fallback(settings: Settings, source: SourceMap, file: str) -> list[Problem]:
    """A template of an SMS channel that its `fallback:` provider cannot send: each is a problem at the
    template's line (the touches that fall back would all fail at the fallback)."""
    problems = []
    for name, channel in settings.channels.items():
        if not isinstance(channel, SmsSettings) or not isinstance(channel.fallback, SmsSettings):
            continue  # no fallback (every fallback is an SMS provider's settings)
        fallback = channel.fallback
        for code in sorted(channel.template_codes()):
            if not fallback.maps_template(code):
                line, col = source.locate(("channels", name, "templates", code), key=True) or (None, None)
                problems.append(Problem(file, line, col,
                                        f"template {code!r} of channel {name!r} cannot be sent by its fallback "
                                        f"({fallback.adapter}): add it to fallback.templates"))
    return problems
