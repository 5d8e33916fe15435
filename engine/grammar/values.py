"""Shared building blocks of the playbook and config grammar: strict models, text values, key checks.

Every grammar model derives from `GrammarModel`: unknown keys are refused (with a "did
you mean"), values are immutable, and text-valued fields refuse YAML numbers and
booleans so that `sku: 012345` is an error that says to quote it.

Unknown keys are moved aside before validation and reported by a field validator, so
they are reported together with every other problem of the same mapping, not instead
of them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

Text = Annotated[StrictStr, Field(min_length=1)]
"""A text value: must be a YAML string (quoted if it looks like a number)."""

UNKNOWN = "__unknown_keys__"

MEMBER_FIELDS: tuple[str, ...] = (
    "member_id", "nickname", "phone", "origin_platform", "tier", "points", "points_expiring",
    "points_expire_at", "city", "joined_at", "wecom_external_userid", "wecom_staff_userid", "oa_openid",
    "oa_subscribed", "sms_opt_out", "call_opt_out",
)
"""A member's stored fields, as templates see them (`member.nickname`); the store's `members` table
has exactly these columns."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class GrammarModel(BaseModel):
    """Base of every grammar model: forbid unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"unknown_keys__"})

    unknown_keys__: tuple[Any, ...] | None = Field(None, alias=UNKNOWN, exclude=True, repr=False)

    @classmethod
    def grammar_fields(cls) -> list[str]:
        """The field names a document may use (in declaration order)."""
        return [name for name in cls.model_fields if name not in cls.INTERNAL]

    @classmethod
    def grammar_keys(cls) -> set[str]:
        return {cls.model_fields[name].alias or name for name in cls.grammar_fields()}

    @model_validator(mode="before")
    @classmethod
    def _set_unknown_keys_aside(cls, value: Any) -> Any:
        if isinstance(value, dict):
            allowed = cls.grammar_keys()
            unknown = [key for key in value if key not in allowed]
            if unknown:
                value = {k: v for k, v in value.items() if k in allowed}
                value[UNKNOWN] = tuple(unknown)
        return value

    @field_validator("unknown_keys__")
    @classmethod
    def _refuse_unknown_keys(cls, keys: tuple[Any, ...] | None) -> None:
        if keys:
            allowed = sorted(cls.grammar_keys())
            key = keys[0]
            hint = did_you_mean(str(key), allowed) if isinstance(key, str) else ""
            raise PydanticCustomError(
                "unknown_key", "unknown key '{key}'{hint}; expected one of: {allowed}",
                {"key": key, "keys": keys, "hint": hint, "allowed": ", ".join(allowed)})
