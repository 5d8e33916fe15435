"""Logging: structlog as JSON lines (journald) or console, with phones and secrets masked.

Every touch logs a stable event name (`touch.sent`, `touch.failed`, …) with playbook,
member id, channel, state and touch id. The redaction processor masks anything that
looks like a mainland mobile number (138****5678) and the values of secret-looking keys,
whatever the event, so no log line carries a full phone number or a token.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_PHONE = re.compile(r"(?:(?<=86)|(?<!\d))(1[3-9]\d)(\d{4})(\d{4})(?!\d)")  # also after +86 / 0086
_SECRET_KEYS = re.compile(r"(token|secret|password|signature|access_key|authorization|sign)", re.IGNORECASE)


def mask_phone(text: str) -> str:
    """'13812345678' → '138****5678' wherever it appears in `text`."""
    return _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def mask_secret(value: str) -> str:
    return "****" if len(value) <= 8 else f"{value[:2]}****{value[-2:]}"


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        return mask_secret(value) if _SECRET_KEYS.search(key) else mask_phone(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, key) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers everywhere and secrets under secret-looking keys."""
    for key in list(event_dict):
        event_dict[key] = _redact(event_dict[key], key)
    return event_dict


def configure(fmt: str = "json", level: str = "info") -> None:
    """Set up structlog once for the process."""
    renderer: Any = structlog.processors.JSONRenderer(ensure_ascii=False) if fmt == "json" \
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )


log = structlog.get_logger("siyu")
