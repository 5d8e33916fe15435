"""Message templates: sandboxed Jinja2, undefined names fail loudly, None is empty, Chinese is fine."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from jinja2 import UndefinedError
from jinja2.exceptions import SecurityError

from engine.grammar.templates import check_template, render_value

CONTEXT: dict[str, Any] = {
    "member": {"member_id": "M0000123", "nickname": "小明", "city": None, "habitual_platform": "tmall",
               "avg_order_value": Decimal("199.99")},
    "offer": {"coupon": {"threshold": Decimal(250), "discount": Decimal(50), "valid_days": 7}},
    "playbook": {"id": "pet-milk-refill", "name": "宠物奶粉第21天复购提醒"},
    "now": datetime(2026, 11, 22, 2, 0, tzinfo=UTC),
    "links": {"tmall": "https://shop.example/tmall", "jd": "https://shop.example/jd"},
}
ALLOWED = {"member", "offer", "playbook", "now", "links"}


def render(text: str, context: dict[str, Any] | None = None) -> Any:
    return render_value(text, CONTEXT if context is None else context)


# --------------------------------------------------------------------------- the sandbox


@pytest.mark.parametrize("text", [
    "{{ member.__class__ }}",
    "{{ member.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ member.nickname.__class__.__base__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ now.__class__.__init__.__globals__ }}",
])
def test_sandbox__dunder_access_is_blocked(text: str) -> None:
    """Reaching Python internals through a template fails (SecurityError or undefined), never renders."""
    with pytest.raises((SecurityError, UndefinedError)):
        render(text)


@pytest.mark.parametrize("text", ["{{ member.update({'nickname': 'x'}) }}", "{{ member.pop('nickname') }}",
                                  "{{ links.clear() }}"])
def test_sandbox__context_cannot_be_modified(text: str) -> None:
    """The immutable sandbox refuses mutating methods: one member's render cannot leak into the next."""
    context = {**CONTEXT, "member": dict(CONTEXT["member"]), "links": dict(CONTEXT["links"])}
    with pytest.raises(SecurityError):
        render(text, context)
    assert context["member"]["nickname"] == "小明" and context["links"]


def test_sandbox__dunder_rejected_at_load() -> None:
    """`siyu check` already refuses `member.__class__`: it is not a member field."""
    assert check_template("{{ member.__class__ }}", ALLOWED) == ["`member.__class__` does not exist"]


# --------------------------------------------------------------------------- undefined names


def test_undefined_name__raises_at_render() -> None:
    """A name missing from the context is an error, not an empty string."""
    with pytest.raises(UndefinedError, match="foo"):
        render("您好 {{ foo }}")


def test_undefined_attribute__raises_at_render() -> None:
    """An attribute missing from a context mapping is an error too."""
    with pytest.raises(UndefinedError, match="nope"):
        render("{{ member.nope }}")


def test_undefined_name__caught_at_load() -> None:
    """The same template fails `siyu check`, with a suggestion when one is close."""
    (message,) = check_template("{{ membr.nickname }}", ALLOWED)
    assert "unknown name `membr`" in message and "did you mean 'member'?" in message


def test_default_filter__handles_a_missing_key() -> None:
    """`default` is the way to write an optional value."""
    assert render("{{ member.nope | default('朋友') }}") == "朋友"


# --------------------------------------------------------------------------- values


def test_none__renders_empty() -> None:
    """An empty member field (None) renders as nothing, not 'None'."""
    assert render("城市：{{ member.city }}。") == "城市：。"


def test_chinese__renders() -> None:
    """Chinese text and Chinese values render unchanged."""
    text = "{{ member.nickname }}，毛孩子的奶粉快喝完了吧～送您满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}券"
    assert render(text) == "小明，毛孩子的奶粉快喝完了吧～送您满250减50券"


def test_decimal__renders_as_written() -> None:
    """Money renders exactly (199.99, not 199.98999…)."""
    assert render("¥{{ member.avg_order_value }}") == "¥199.99"


def test_links__by_habitual_platform() -> None:
    """`links[member.habitual_platform]` gives the member's shop link."""
    assert render("{{ links[member.habitual_platform] }}") == "https://shop.example/tmall"


def test_no_autoescape__messages_are_plain_text() -> None:
    """SMS and WeCom text is not HTML: `<`, `&` and quotes stay as they are."""
    context = {**CONTEXT, "member": {**CONTEXT["member"], "nickname": "<Tom & \"Jerry\">"}}
    assert render("{{ member.nickname }}", context) == "<Tom & \"Jerry\">"


def test_render_value__keeps_the_payload_shape() -> None:
    """Every string in a payload is rendered; other values and the shape are kept."""
    payload = {"template_code": "SMS_1", "params": {"name": "{{ member.nickname }}", "n": 3},
               "list": ["{{ playbook.id }}", None]}
    assert render_value(payload, CONTEXT) == {"template_code": "SMS_1", "params": {"name": "小明", "n": 3},
                                              "list": ["pet-milk-refill", None]}


def test_trailing_newline__kept() -> None:
    """A message ending in a newline keeps it."""
    assert render("{{ member.nickname }}\n") == "小明\n"


# --------------------------------------------------------------------------- load-time checks


@pytest.mark.parametrize(("text", "expected"), [
    ("{{ member.nickname }}", []),
    ("{% set x = member.nickname %}{{ x }}", []),
    ("{% for k, v in links.items() %}{{ k }}={{ v }}{% endfor %}", []),
    ("{{ now }}", []),
    ("{{ member.nickname ", ["template syntax error"]),
    ("{% if member.city %}", ["template syntax error"]),
    ("{{ 0|offer.coupon.threshold }}", ["template syntax error: No filter named 'offer.coupon.threshold'"]),
    ("{% if member.city is shanghai %}x{% endif %}", ["unknown test `shanghai`"]),
    ("{{ member.nicknam }}", ["`member.nicknam` does not exist (did you mean 'nickname'?)"]),
    ("{{ playbook.nmae }}", ["`playbook.nmae` does not exist (did you mean 'name'?)"]),
    ("{{ offer.coupon.discont }}", ["`offer.coupon.discont` does not exist (did you mean 'discount'?)"]),
])
def test_check_template(text: str, expected: list[str]) -> None:
    """Syntax errors and unknown names/attributes are found before anything is rendered."""
    messages = check_template(text, ALLOWED)
    assert len(messages) == len(expected)
    for message, substance in zip(messages, expected, strict=True):
        assert substance in message


def test_check_template__offer_and_event_need_their_context() -> None:
    """`offer` without an offer and `event` outside event playbooks say why they are unavailable."""
    allowed = {"member", "playbook", "now", "links"}
    assert check_template("{{ offer.coupon.discount }}", allowed) == [
        "`offer` is used but the playbook has no `offer`"]
    assert check_template("{{ event.type }}", allowed) == [
        "`event` is only available to event-triggered playbooks"]
