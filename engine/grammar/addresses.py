"""The channel vocabulary: the channels' names, the member fields that address a member on each,
who is reachable where, the name of the column that says so, and the one phone normaliser.

Reachability is data here, not SQL: a member is reachable on a channel when every field of
its address is present (not null, not empty) and each of its flags holds (`sms` and `ai_call`:
a phone that is a bare mainland mobile number and no opt-out of that channel; `wecom`: the
external user id and the staff member who owns the friendship; `template`: a subscribed official-account openid). The store renders it
as SQL (`engine.store.reachability`), since SQL lives only in the store, the compiler and the
ledger; kept as data, it stays importable by the adapters, which may import the grammar but
not the store, and which must never re-decide it.

Statements that compute reachability for each channel name the column `reach_column(ch)`;
whoever reads such a row reads it by the same name.

Phones: `mainland_mobile` is the single entry point. Every spelling of a mainland mobile
number (a `+86`, `0086` or `86` prefix, spaces, dashes, full-width digits) becomes the bare
11 digits members are stored with; anything else is None. `e164` is the spelling vendors
such as Tencent need. The importer stores phones normalised, and migration 0006 normalised the
phones stored before; a stored phone that is still not a bare mainland number (one the migration
could not normalise) leaves its member unreachable on `sms` and `ai_call`: `MOBILE_SHAPE` is the
bare number's shape, character by character, for the store to render as SQL. `masked` hides the
digits of a phone anywhere it is shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from engine.grammar.values import MEMBER_FIELDS

CHANNEL_NAMES = ("sms", "ai_call", "wecom", "template")
ChannelName = Literal["sms", "ai_call", "wecom", "template"]


@dataclass(frozen=True)
class Reach:
    """What a member needs to be reachable on one channel."""

    address: tuple[str, ...]  #: member fields that must be present; a touch carries them as `Touch.address`
    flags: dict[str, bool] = field(default_factory=dict)  #: member flags that must have these values
    mobile: tuple[str, ...] = ()  #: address fields that must hold a bare mainland mobile number (`MOBILE_SHAPE`)


REACH: dict[str, Reach] = {
    "sms": Reach(("phone",), {"sms_opt_out": False}, mobile=("phone",)),
    "ai_call": Reach(("phone",), {"call_opt_out": False}, mobile=("phone",)),
    "wecom": Reach(("wecom_external_userid", "wecom_staff_userid")),
    "template": Reach(("oa_openid",), {"oa_subscribed": True}),
}
assert tuple(REACH) == CHANNEL_NAMES
assert all(f in MEMBER_FIELDS for r in REACH.values() for f in (*r.address, *r.flags))
assert all(f in r.address for r in REACH.values() for f in r.mobile)

ADDRESS_FIELDS: dict[str, tuple[str, ...]] = {channel: reach.address for channel, reach in REACH.items()}
"""Per channel, the member fields a touch on it carries as its address."""


def reach_column(channel: str) -> str:
    """The name of the column (1 or 0) that says whether a row's member is reachable on `channel`."""
    return f"reach_{channel}"


# --------------------------------------------------------------------------- phones

_FULL_WIDTH = str.maketrans({**{chr(0xFF10 + d): str(d) for d in range(10)},  # ０–９
                             "＋": "+", "－": "-", "\u3000": " "})
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—]")
_MAINLAND = re.compile(r"1[3-9][0-9]{9}")
_PREFIXES = ("+86", "0086", "86")
_DIGIT_RUN = re.compile(r"[0-9０-９]{7,}")

MOBILE_SHAPE: tuple[str, ...] = ("1", "3456789", *["0123456789"] * 9)
"""The characters allowed at each position of a bare mainland mobile number; its length is the length."""
assert len(MOBILE_SHAPE) == 11


def mainland_mobile(phone: str) -> str | None:
    """The bare 11-digit mainland mobile number (`1[3-9]` and 9 more digits) that `phone` spells, else None.

    Accepts a `+86`, `0086` or `86` prefix, spaces and dashes anywhere, and full-width digits,
    plus and dash. The result normalises to itself.
    """
    digits = _SEPARATORS.sub("", phone.translate(_FULL_WIDTH))
    for prefix in _PREFIXES:
        if digits.startswith(prefix) and len(digits) == len(prefix) + 11:
            digits = digits[len(prefix):]
            break
    return digits if _MAINLAND.fullmatch(digits) else None


def e164(phone: str) -> str | None:
    """`+86` and the bare number for a mainland mobile number in any spelling `mainland_mobile` takes, else None."""
    number = mainland_mobile(phone)
    return None if number is None else f"+86{number}"


def masked(text: str) -> str:
    """`text` with every run of 7 or more digits shown as its first 3 and last 4 ('138****5678'), for
    messages and logs that echo a phone, whether or not it normalises."""
    return _DIGIT_RUN.sub(lambda m: f"{m[0][:3]}****{m[0][-4:]}", text)
