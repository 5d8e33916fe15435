"""The configuration file (`--config`): one typed, frozen tree, validated once at start-up.

Unknown keys and bad values are `ConfigError`s located at file:line:col. Credentials are
`${ENV_VAR}` references resolved at load; a missing variable is an error.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from engine.clock import DEFAULT_TIMEZONE, parse_duration, zone
from engine.errors import ConfigError, PlaybookError, Problem
from engine.grammar import GrammarModel
from engine.loader import read_text
from engine.yamlsource import SourceMap, parse_yaml, validation_problems

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class DatabaseSettings(GrammarModel):
    url: str = "sqlite:///demo.db"
    """SQLAlchemy URL: sqlite:///file.db (embedded) or postgresql://user@host/db (production)."""


class Settings(GrammarModel):
    """The whole configuration file."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    timezone: str = DEFAULT_TIMEZONE
    """Default timezone of playbooks that name none, and of `--at` values without an offset."""
    playbooks: str = "playbooks/"
    """The playbook directory, relative to the config file."""
    links: dict[str, str] = Field(default_factory=dict)
    """Shop links by platform, for templates: `{{ links[member.habitual_platform] }}`."""
    misfire_grace: str = "1h"
    """How late a scheduled occurrence or an event may still be evaluated (also dry-run's --window)."""

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
    if problems:
        raise ConfigError(problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, data, source, file)) from None
    return settings, path.parent
