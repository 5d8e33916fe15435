"""The project's own errors: each carries where it happened, and the CLI prints it once.

Every error a person may cause (a broken playbook, a bad CSV row, a bad flag) is a
`SiyuError` with a `location` ("file:line:col" or "file:line") so the CLI can print
`location: message` and exit non-zero without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

QUOTE_LIMIT = 40
"""A message quotes at most this many characters of the text at fault: a file that is no playbook or
config at all (a secret file linked by mistake) is never echoed back line by line."""


def quote(text: object) -> str:
    """`text` quoted for a message, cut after QUOTE_LIMIT characters with an ellipsis: 'root:$6$…'
    (text is quoted as Python quotes it; any other value is shown as its repr, cut the same way)."""
    if isinstance(text, str):
        return repr(text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "…")
    shown = repr(text)
    return shown if len(shown) <= QUOTE_LIMIT else shown[:QUOTE_LIMIT] + "…"


@dataclass(frozen=True)
class Problem:
    """One located problem: `file:line:col: message`, or `file:line:col: warning: message`.

    An error stops what found it (a playbook that does not load, a refused row); a warning is
    shown and lets the work go on (`siyu check --strict` treats warnings as errors).
    """

    file: str
    line: int | None
    column: int | None
    message: str
    severity: Literal["error", "warning"] = "error"

    @property
    def is_warning(self) -> bool:
        return self.severity == "warning"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: warning: {self.message}" if self.is_warning else f"{where}: {self.message}"


class SiyuError(Exception):
    """Something went wrong in Siyu."""

    def __init__(self, message: str | None = None, location: str | None = None) -> None:
        self.message = message or (self.__doc__ or "error").strip()
        self.location = location
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ProblemsError(SiyuError):
    """Several located problems, reported together."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class PlaybookError(ProblemsError):
    """A playbook is invalid."""


class ConfigError(ProblemsError):
    """The configuration is invalid."""


class CsvError(ProblemsError):
    """A CSV file has bad rows; nothing of that file was imported."""


class DatabaseError(SiyuError):
    """The database cannot be used."""


class UsageError(SiyuError):
    """A command-line argument is invalid."""
