"""Shared building blocks of the playbook grammar: strict models, text values, and key checks.

Every grammar model derives from `GrammarModel`: unknown keys are refused (with a
"did you mean"), values are immutable, and text-valued fields refuse YAML numbers and
booleans so that `sku: 012345` is an error that says to quote it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator
from pydantic_core import PydanticCustomError

Text = Annotated[StrictStr, Field(min_length=1)]
"""A text value: must be a YAML string (quoted if it looks like a number)."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class GrammarModel(BaseModel):
    """Base of every playbook-grammar model: forbid unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            allowed = {info.alias or name for name, info in cls.model_fields.items()}
            for key in value:
                if not isinstance(key, str):
                    raise PydanticCustomError(
                        "unknown_key", "key {key} must be text", {"key": key})
                if key not in allowed:
                    raise PydanticCustomError(
                        "unknown_key", "unknown key '{key}'{hint}; expected one of: {allowed}",
                        {"key": key, "hint": did_you_mean(key, allowed),
                         "allowed": ", ".join(sorted(allowed))})
        return value
