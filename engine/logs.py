"""Logging: structlog as JSON lines (journald) or console, with phones and secrets masked.

Every touch logs a stable event name (`touch.sent`, `touch.failed`, …) with playbook,
member id, channel, state and touch id. The redaction processor masks anything that
looks like a mainland mobile number (138****5678), the password of any URL, and the values of
secret-looking keys, whatever the event, so no log line carries a full phone number or a token.
An exception is logged (and shown by the CLI) as `summarise(exc)`: its type and first line, never
a statement's rows or parameters.
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
_URL_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^@/\n]*@")
"""The password of a URL (`scheme://user:password@host`), for masking: `://user:***@`."""
SUMMARY_LIMIT = 200
"""An exception's summary is cut after this many characters."""


def mask_phone(text: str) -> str:
    """'13812345678' → '138****5678' wherever it appears in `text`."""
    return _PHONE.sub(lambda m: f"{m.group(1)}****{m.group(3)}", text)


def mask_url_password(text: str) -> str:
    """'postgresql://siyu:pw@db/siyu' → 'postgresql://siyu:***@db/siyu' wherever a URL appears in `text`."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def mask_text(text: str) -> str:
    """Free text (a message, a traceback) with its phone numbers and URL passwords masked."""
    return mask_phone(mask_url_password(text))


def summarise(exc: BaseException) -> str:
    """One line about `exc` for people and logs: its type and the first line of its message, masked
    (`mask_text`), at most SUMMARY_LIMIT characters. A database error's first line is the driver's
    message: never the statement, its parameters or the rows it carried."""
    lines = str(exc).strip().splitlines()
    text = mask_text(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)
    return text if len(text) <= SUMMARY_LIMIT else text[:SUMMARY_LIMIT] + "…"


def mask_secret(value: str) -> str:
    return "****" if len(value) <= 8 else f"{value[:2]}****{value[-2:]}"


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        return mask_secret(value) if _SECRET_KEYS.search(key) else mask_text(value)
    if isinstance(value, dict):
        return {k: _redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v, key) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask phone numbers and URL passwords everywhere, secrets under secret-looking keys."""
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
