"""The configuration file (`--config`): one typed, frozen tree, validated once at start-up.

Unknown keys and bad values are `ConfigError`s located at file:line:col. Credentials are
`${ENV_VAR}` references resolved at load; a missing variable is an error.

Secrets: each key of SECRET_KEYS under `channels:` (a `fallback:` too) and a password in
`database.url` must be exactly one `${VAR}`. A secret written in the file is an error for
`siyu run` and a warning for every other command, unless `allow_literal_secrets: true` (a local
trial with the fakes' own credentials). No message ever shows a secret's value, nor a value
taken from the environment.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union
from urllib.parse import parse_qs

from pydantic import Field, ValidationError, field_validator

from channels.fallback import SmsSettings
from engine.clock import DEFAULT_TIMEZONE, parse_duration, zone
from engine.errors import ConfigError, PlaybookError, Problem
from engine.grammar.addresses import ChannelName
from engine.grammar.loader import read_text
from engine.grammar.policies import Duration, PolicySettings, QuietWindow
from engine.grammar.values import GrammarModel
from engine.grammar.yamlsource import PathKey, SourceMap, parse_yaml, validation_problems

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

SECRET_KEYS = frozenset({"access_key_secret", "app_secret", "secret", "secret_key", "token", "encoding_aes_key",
                         "callback_secret"})
"""Keys whose value is a credential, wherever they sit under `channels:`: each must be one `${VAR}`."""
ROTATING_SECRETS = frozenset({"callback_secret"})
"""Secret keys that may hold a list of two during a rotation (the old and the new): each must be one `${VAR}`."""


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

    allow_literal_secrets: Annotated[bool, Field(strict=True)] = False
    """Secrets written in the file itself are allowed (a local trial with the fakes' own credentials):
    no error in `siyu run`, no warning elsewhere. Otherwise each must be one `${VAR}` reference."""
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


def _resolve_env(value: Any, path: PathKey, source: SourceMap, file: str, problems: list[Problem],
                 resolved: set[PathKey]) -> Any:
    """`value` with every `${VAR}` replaced by the variable's value; the paths of the values that had
    one are added to `resolved` (their values are not shown in messages)."""
    if isinstance(value, dict):
        return {k: _resolve_env(v, (*path, k), source, file, problems, resolved) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, (*path, i), source, file, problems, resolved) for i, v in enumerate(value)]
    if isinstance(value, str) and _ENV.search(value):
        resolved.add(path)

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                line, col = source.locate(path) or (None, None)
                problems.append(Problem(file, line, col, f"environment variable {name} is not set"))
                return ""
            return os.environ[name]
        return _ENV.sub(substitute, value)
    return value


def _is_reference(value: Any) -> bool:
    return isinstance(value, str) and _ENV.fullmatch(value) is not None


def _secret_paths(data: dict[Any, Any]) -> list[PathKey]:
    """The path of every secret in the (unresolved) config: each SECRET_KEYS value under `channels:`
    (each element of a rotating secret's list) and `database.url`."""
    found: list[PathKey] = []

    def visit(value: Any, path: PathKey) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in SECRET_KEYS and isinstance(item, list) and key in ROTATING_SECRETS:
                    found.extend((*path, key, i) for i in range(len(item)))
                elif key in SECRET_KEYS:
                    found.append((*path, key))
                else:
                    visit(item, (*path, key))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, (*path, i))

    channels = data.get("channels")
    for name, channel in channels.items() if isinstance(channels, dict) else ():
        visit(channel, ("channels", name))
    database = data.get("database")
    if isinstance(database, dict) and "url" in database:
        found.append(("database", "url"))
    return found


def _url_passwords(url: str) -> list[str]:
    """The passwords written in a database URL: after `user:` (scheme://user:password@host) and any
    `password=` of its query."""
    _, scheme, rest = url.partition("://")
    if not scheme:
        return []
    userinfo, at, _ = rest.rpartition("@")
    passwords = [userinfo.partition(":")[2]] if at and ":" in userinfo else []
    return passwords + parse_qs(rest.partition("?")[2]).get("password", [])


def _dotted(path: PathKey) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


def _literal_secrets(data: dict[Any, Any], paths: list[PathKey], source: SourceMap, file: str,
                     strict: bool) -> list[Problem]:
    """A problem for each secret written in the file rather than as one `${VAR}`: an error when `strict`
    (`siyu run`), else a warning. The message names the key, never the value."""
    problems = []
    for path in paths:
        value: Any = data
        for part in path:
            value = value[part]
        if path == ("database", "url"):
            if not isinstance(value, str) or _is_reference(value) \
                    or all(_is_reference(p) for p in _url_passwords(value)):
                continue
            message = ("database.url has its password written in the file: write the password as one ${VAR} "
                       "(postgresql://siyu:${SIYU_DB_PASSWORD}@host/db) and set it in the environment")
        else:
            if value is None or _is_reference(value):
                continue
            name = "SIYU_" + "_".join(str(p) for p in path[1:] if isinstance(p, str)).upper()
            message = (f"{_dotted(path)} is a secret written in the file: write it as one ${{VAR}} (e.g. "
                       f"\"${{{name}}}\") and set it in the environment")
        line, col = source.locate(path) or (None, None)
        problems.append(Problem(file, line, col, message + (" (allow_literal_secrets: true allows secrets in the "
                                                            "file, for a local trial)"),
                                severity="error" if strict else "warning"))
    return problems


def load_config(path: Path | None, *, strict_secrets: bool = False) -> tuple[Settings, list[Problem]]:
    """Load and validate the config (defaults when `path` is None): (settings, warnings to show).

    A secret written in the file rather than as one `${VAR}` is an error with `strict_secrets`
    (`siyu run`), else one of the warnings; `allow_literal_secrets: true` allows them. Other problems
    are a ConfigError (with the warnings among them)."""
    if path is None:
        return Settings(), []
    file = str(path)
    try:
        text = read_text(path)
    except PlaybookError as exc:  # read_text speaks of playbooks; these are config problems
        raise ConfigError(exc.problems) from None
    data, source = parse_yaml(text, file, ConfigError, what="config")
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, 1, "a config file is a mapping of keys such as database, timezone")])
    problems: list[Problem] = []
    secrets = _secret_paths(data)
    if data.get("allow_literal_secrets") is not True:
        problems += _literal_secrets(data, secrets, source, file, strict_secrets)
    resolved: set[PathKey] = set()
    data = _resolve_env(data, (), source, file, problems, resolved)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems += validation_problems(exc, data, source, file, hidden=[*secrets, *resolved])
    else:
        problems += _unmapped_by_fallback(settings, source, file)
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    if any(not p.is_warning for p in problems):
        raise ConfigError(problems)
    return settings, problems


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
