"""The channel vocabulary without a database: phones in every spelling, addresses and reachability as data."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import column, create_engine, literal, select, table
from sqlalchemy.dialects import postgresql, sqlite

from engine.grammar.addresses import (
    ADDRESS_FIELDS,
    CHANNEL_NAMES,
    REACH,
    e164,
    mainland_mobile,
    masked,
    reach_column,
)
from engine.grammar.values import MEMBER_FIELDS

MAINLAND = "13812345678"


@pytest.mark.parametrize("spelling", [
    "13812345678", "+8613812345678", "008613812345678", "8613812345678",
    "138 1234 5678", "138-1234-5678", "+86 138-1234-5678", " 0086 138 1234 5678 ", "+86\t138\u00a01234\u30005678",
    "１３８１２３４５６７８", "＋８６ １３８－１２３４－５６７８", "138‐1234‐5678",
])
def test_mainland_mobile__every_accepted_spelling_is_the_bare_number(spelling: str) -> None:
    """Prefixes +86, 0086 and 86, spaces, dashes and full-width characters all give the bare 11 digits."""
    assert mainland_mobile(spelling) == MAINLAND
    assert e164(spelling) == f"+86{MAINLAND}"


@pytest.mark.parametrize("spelling", [
    "", "12812345678", "10012345678", "1381234567", "138123456789", "+8513812345678", "+86+8613812345678",
    "0013812345678", "(138)12345678", "138.1234.5678", "+1 415 555 0100", "86138123456", "١٣٨١٢٣٤٥٦٧٨",
    "¹³⁸¹²³⁴⁵⁶⁷⁸", "x13812345678",
])
def test_mainland_mobile__anything_else_is_none(spelling: str) -> None:
    """Other countries, wrong lengths, a second prefix, other separators and non-ASCII digits other than
    full-width ones are not mainland mobile numbers."""
    assert mainland_mobile(spelling) is None
    assert e164(spelling) is None


PHONE_ALPHABET = st.sampled_from("0123456789１３８０８６+＋- －\u3000\t")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), st.text(PHONE_ALPHABET, max_size=20)))
@example("+86 138 1234 5678")
@example("8613812345678")
def test_mainland_mobile__any_string_gives_a_valid_number_or_none_and_normalising_twice_changes_nothing(
        text: str) -> None:
    """For any text the result is None or 11 ASCII digits 1[3-9]…, and it is its own normal form."""
    number = mainland_mobile(text)
    if number is not None:
        assert len(number) == 11 and number.isascii() and number.isdigit()
        assert number[0] == "1" and number[1] in "3456789"
        assert mainland_mobile(number) == number
        assert e164(text) == f"+86{number}" and mainland_mobile(f"+86{number}") == number
    else:
        assert e164(text) is None


def test_reach__every_channel_has_its_rule_over_member_fields() -> None:
    """Each channel names its address fields and flags, all of them stored member fields."""
    assert tuple(REACH) == CHANNEL_NAMES == tuple(ADDRESS_FIELDS)
    assert ADDRESS_FIELDS == {"sms": ("phone",), "ai_call": ("phone",),
                              "wecom": ("wecom_external_userid", "wecom_staff_userid"), "template": ("oa_openid",)}
    assert {ch: r.flags for ch, r in REACH.items()} == {
        "sms": {"sms_opt_out": False}, "ai_call": {"call_opt_out": False}, "wecom": {},
        "template": {"oa_subscribed": True}}
    assert all(f in MEMBER_FIELDS for r in REACH.values() for f in (*r.address, *r.flags))


def test_reach_column__one_name_per_channel() -> None:
    """The reach column of each channel is distinct and says which channel it is about."""
    names = [reach_column(ch) for ch in CHANNEL_NAMES]
    assert names == ["reach_sms", "reach_ai_call", "reach_wecom", "reach_template"]


def test_reach__sms_and_ai_call_need_a_bare_mainland_number() -> None:
    """Only the phone channels ask their address to be a mainland mobile number."""
    assert {ch: r.mobile for ch, r in REACH.items()} == {"sms": ("phone",), "ai_call": ("phone",), "wecom": (),
                                                        "template": ()}


_SQLITE = create_engine("sqlite://")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=14), st.text(PHONE_ALPHABET, max_size=14),
                 st.builds(lambda a, b: f"1{a}{b}", st.sampled_from("0123456789.a"),
                           st.text("0123456789E+.", max_size=10))))
@example("13812345678")
@example("1.38001E+10")
@example("+8613812345678")
def test_mobile_shape__the_sql_accepts_exactly_what_is_its_own_normal_form(text: str) -> None:
    """The reachability SQL (run on SQLite) passes a stored phone exactly when `mainland_mobile` gives it back
    unchanged: the store and the normaliser agree on what a reachable phone is."""
    from engine.store.reachability import mobile_shaped

    with _SQLITE.connect() as conn:
        shaped = bool(conn.scalar(select(mobile_shaped(literal(text)))))
    assert shaped == (mainland_mobile(text) == text)


def test_mobile_shape__the_same_sql_on_both_dialects() -> None:
    """The phone rule renders the same text on SQLite and PostgreSQL (no regex, no collation-dependent range)."""
    from engine.store.reachability import mobile_shaped

    members = table("members", column("phone"))
    rendered = [str(mobile_shaped(members.c.phone).compile(dialect=d(), compile_kwargs={"literal_binds": True}))
                for d in (sqlite.dialect, postgresql.dialect)]
    assert rendered[0] == rendered[1]
    assert "length(members.phone) = 11" in rendered[0] and "substr(members.phone, 2, 1) IN" in rendered[0]


@pytest.mark.parametrize(("text", "shown"), [
    ("13812345678", "138****5678"), ("+1 4155550100", "+1 415****0100"), ("1.38001E+10", "1.38001E+10"),
    ("abc", "abc"), ("+86 138 1234 5678", "+86 138 1234 5678"), ("１３８１２３４５６７８", "１３８****５６７８"),
])
def test_masked__runs_of_seven_or_more_digits_are_hidden(text: str, shown: str) -> None:
    """Any phone echoed in a message or log shows at most its first 3 and last 4 digits."""
    assert masked(text) == shown
