"""Decisions of the dry-run (offer tier, channel, holdout, max_per_run, templates) on SQLite and PostgreSQL.

Scenarios are evaluated as of `AT`, Sunday 2026-11-22 10:00 Shanghai; "day 21" is 2026-11-01.
"""

from __future__ import annotations

import hashlib

from scenario import (
    AT,
    PHONE,
    add_member,
    add_order,
    by_member,
    days_ago,
    decide,
    playbook,
)
from sqlalchemy import Connection, Engine

MILK = ("pet_milk", "milk-800g", False)
WECOM = {"wecom_external_userid": "wmEXT", "wecom_staff_userid": "staff-li"}

PET_MILK_REFILL = """
id: pet-milk-refill
name: 宠物奶粉第21天复购提醒
timezone: Asia/Shanghai
trigger: {schedule: "0 10 * * *"}
audience:
  all:
    - last_purchase: {category: pet_milk, days_ago: 21}
  none:
    - tag: do_not_disturb
offer:
  by: avg_order_value
  tiers:
    - {min: 200, coupon: {threshold: 250, discount: 50, valid_days: 7}}
    - {min: 100, coupon: {threshold: 150, discount: 20, valid_days: 7}}
channels:
  - wecom:
      text: "{{ member.nickname }}，毛孩子的奶粉快喝完了吧～送您满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}券"
  - sms:
      template_code: SMS_4820931
      params: {name: "{{ member.nickname }}", discount: "{{ offer.coupon.discount }}"}
limits:
  cooldown_days: 28
"""


def expected_draw(playbook_id: str, member_id: str) -> int:
    """The contract's holdout draw, computed here independently of the engine."""
    return int(hashlib.sha256(f"{playbook_id}:{member_id}".encode()).hexdigest()[:8], 16) % 100


def refill_buyer(conn: Connection, member_id: str, *amounts_yuan: str, **fields: object) -> str:
    """A member whose last order (pet milk) was paid 21 days ago; earlier orders are 30, 40, … days ago."""
    add_member(conn, member_id, **fields)
    *earlier, last = amounts_yuan
    for n, amount in enumerate(earlier):
        add_order(conn, member_id, paid_at=days_ago(30 + 10 * n), amount_yuan=amount, items=[MILK])
    add_order(conn, member_id, paid_at=days_ago(21), amount_yuan=last, items=[MILK])
    return member_id


def simple_playbook(*, holdout: int = 0, max_per_run: int | None = None, playbook_id: str = "spring-recall",
                    audience: str = "all: [tag: recall]") -> str:
    limits = f"limits: {{max_per_run: {max_per_run}}}\n" if max_per_run is not None else ""
    return (f"id: {playbook_id}\nname: 春季召回\ntrigger: {{schedule: \"0 10 * * *\"}}\n"
            f"audience: {{{audience}}}\nchannels:\n  - sms: {{template_code: SMS_1}}\n"
            f"holdout: {holdout}\n{limits}")


# --------------------------------------------------------------------------- offer tiers

def test_offer__coupon_tiers_by_average_order_value(db: Engine) -> None:
    """A ¥200-average member gets 250−50, a ¥120 member gets 150−20, and a ¥50 member is suppressed with no_offer."""
    with db.begin() as conn:
        refill_buyer(conn, "AVG200", "150", "250", nickname="阿明", **WECOM)
        refill_buyer(conn, "AVG120", "120", nickname="小红", phone=PHONE)
        refill_buyer(conn, "AVG50", "50", nickname="小刚", phone=PHONE, **WECOM)
    decisions = by_member(decide(db, playbook(PET_MILK_REFILL)))
    assert set(decisions) == {"AVG200", "AVG120", "AVG50"}

    top = decisions["AVG200"]
    assert (top.decision, top.reason, top.channel) == ("send", None, "wecom")
    assert top.offer == {"coupon": {"threshold": 250, "discount": 50, "valid_days": 7},
                         "by": "avg_order_value", "tier": 1, "min": 200}
    assert top.message == {"text": "阿明，毛孩子的奶粉快喝完了吧～送您满250减50券"}
    assert top.occurrence == "2026-11-22T10:00:00+08:00"
    assert top.why["avg_order_value"] == "200.00"
    assert top.why["last_purchase_at"] == "2026-11-01T12:00:00+08:00"

    middle = decisions["AVG120"]
    assert (middle.decision, middle.reason, middle.channel) == ("send", None, "sms")
    assert middle.offer is not None and middle.offer["coupon"] == {"threshold": 150, "discount": 20, "valid_days": 7}
    assert middle.message == {"template_code": "SMS_4820931", "params": {"name": "小红", "discount": "20"}}

    low = decisions["AVG50"]
    assert (low.decision, low.reason, low.channel, low.offer, low.message) == (
        "suppressed", "no_offer", None, None, None)


def test_offer__199_99_average_gets_the_150_tier_not_the_250_one(db: Engine) -> None:
    """Averages are exact: ¥199.99 (and ¥199.9966…, which rounds to ¥200.00) stay below the ¥200 tier."""
    with db.begin() as conn:
        refill_buyer(conn, "AVG199_99", "199.98", "200", phone=PHONE)
        refill_buyer(conn, "AVG199_9966", "200", "200", "199.99", phone=PHONE)
        refill_buyer(conn, "AVG200", "200", phone=PHONE)
    tiers = {member: (d.offer or {}).get("tier") for member, d in by_member(
        decide(db, playbook(PET_MILK_REFILL))).items()}
    assert tiers == {"AVG199_99": 2, "AVG199_9966": 2, "AVG200": 1}


def test_offer__metrics_count_only_orders_paid_up_to_at(db: Engine) -> None:
    """A ¥1000 order refunded, unpaid or paid after `at` does not lift a ¥120 member into the top tier."""
    with db.begin() as conn:
        for member in ("REFUNDED_1000", "UNPAID_1000", "LATER_1000"):
            refill_buyer(conn, member, "120", phone=PHONE)
        add_order(conn, "REFUNDED_1000", paid_at=days_ago(25), amount_yuan="1000", status="refunded")
        add_order(conn, "UNPAID_1000", paid_at=None, amount_yuan="1000", status="created")
        add_order(conn, "LATER_1000", paid_at=days_ago(0, "10:30"), amount_yuan="1000", items=[MILK])
    tiers = {member: (d.offer or {}).get("tier") for member, d in by_member(
        decide(db, playbook(PET_MILK_REFILL))).items()}
    assert tiers == {"REFUNDED_1000": 2, "UNPAID_1000": 2, "LATER_1000": 2}


def test_offer__tiers_by_total_spend_or_order_count(db: Engine) -> None:
    """`by: total_spend` compares the exact sum and `by: order_count` the number of paid orders with each tier's min."""
    with db.begin() as conn:
        refill_buyer(conn, "THREE_ORDERS_299_99", "100", "100", "99.99", phone=PHONE)
        refill_buyer(conn, "ONE_ORDER_300", "300", phone=PHONE)
        refill_buyer(conn, "TWO_ORDERS_60", "30", "30", phone=PHONE)

    def tiers(by: str, top: int, second: int) -> dict[str, int | None]:
        book = playbook(PET_MILK_REFILL.replace("by: avg_order_value", f"by: {by}")
                        .replace("min: 200", f"min: {top}").replace("min: 100", f"min: {second}"))
        return {m: (d.offer or {}).get("tier") for m, d in by_member(decide(db, book)).items()}

    assert tiers("total_spend", 300, 100) == {"THREE_ORDERS_299_99": 2, "ONE_ORDER_300": 1, "TWO_ORDERS_60": None}
    assert tiers("order_count", 3, 2) == {"THREE_ORDERS_299_99": 1, "ONE_ORDER_300": None, "TWO_ORDERS_60": 2}


# --------------------------------------------------------------------------- channels

def test_channel__first_reachable_in_preference_order_else_unreachable(db: Engine) -> None:
    """The first channel of the playbook the member is reachable on wins; none reachable → suppressed/unreachable."""
    with db.begin() as conn:
        refill_buyer(conn, "WECOM_AND_SMS", "250", phone=PHONE, nickname="甲", **WECOM)
        refill_buyer(conn, "SMS_ONLY", "250", phone=PHONE, nickname="乙")
        refill_buyer(conn, "SMS_OPTED_OUT", "250", phone=PHONE, sms_opt_out=True, nickname="丙")
        refill_buyer(conn, "TEMPLATE_ONLY", "250", oa_openid="oOPEN", oa_subscribed=True, nickname="丁")
        refill_buyer(conn, "LOW_AND_UNREACHABLE", "50", nickname="戊")
    decisions = by_member(decide(db, playbook(PET_MILK_REFILL)))
    assert {m: (d.decision, d.reason, d.channel) for m, d in decisions.items()} == {
        "WECOM_AND_SMS": ("send", None, "wecom"),
        "SMS_ONLY": ("send", None, "sms"),
        "SMS_OPTED_OUT": ("suppressed", "unreachable", None),
        "TEMPLATE_ONLY": ("suppressed", "unreachable", None),
        "LOW_AND_UNREACHABLE": ("suppressed", "no_offer", None),
    }


# --------------------------------------------------------------------------- holdout and max_per_run

def test_holdout__is_the_sha256_draw_of_playbook_and_member(db: Engine) -> None:
    """A member is held out exactly when int(sha256("playbook:member")[:8], 16) % 100 < holdout."""
    ids = [f"H{i:03d}" for i in range(60)]
    with db.begin() as conn:
        for member in ids:
            add_member(conn, member, phone=PHONE, tags=["recall"])
    decisions = by_member(decide(db, playbook(simple_playbook(holdout=30))))
    held = {m for m in ids if expected_draw("spring-recall", m) < 30}
    assert 0 < len(held) < len(ids)
    assert {m for m, d in decisions.items() if d.decision == "holdout"} == held
    assert {m for m, d in decisions.items() if d.decision == "send"} == set(ids) - held
    assert all(d.reason is None and d.channel is None and d.message is None
               for d in decisions.values() if d.decision == "holdout")


def test_holdout__does_not_depend_on_who_else_is_in_the_audience(db: Engine) -> None:
    """The same member gets the same holdout verdict whether the audience is 60 members or 3."""
    ids = [f"H{i:03d}" for i in range(60)]
    with db.begin() as conn:
        for i, member in enumerate(ids):
            add_member(conn, member, phone=PHONE, tags=["recall", "few"] if i % 20 == 7 else ["recall"])
    everyone = by_member(decide(db, playbook(simple_playbook(holdout=50))))
    few = by_member(decide(db, playbook(simple_playbook(holdout=50, audience="all: [tag: few]"))))
    assert set(few) == {"H007", "H027", "H047"}
    assert {m: d.decision for m, d in few.items()} == {m: everyone[m].decision for m in few}
    assert {m: d.decision for m, d in few.items()} == {
        m: "holdout" if expected_draw("spring-recall", m) < 50 else "send" for m in few}


def test_max_per_run__first_n_in_member_id_byte_order(db: Engine) -> None:
    """max_per_run 2 sends to M1 and M10 (byte order: M1 < M10 < M2 < M9 < m1); the rest are suppressed/max_per_run."""
    with db.begin() as conn:
        for member in ("M10", "M9", "m1", "M1", "M2"):
            add_member(conn, member, phone=PHONE, tags=["recall"])
    decisions = decide(db, playbook(simple_playbook(max_per_run=2)))
    assert [(d.member_id, d.decision, d.reason) for d in decisions] == [
        ("M1", "send", None),
        ("M10", "send", None),
        ("M2", "suppressed", "max_per_run"),
        ("M9", "suppressed", "max_per_run"),
        ("m1", "suppressed", "max_per_run"),
    ]


def test_max_per_run__counts_only_members_still_standing(db: Engine) -> None:
    """Unreachable and held-out members come first in byte order but do not use up max_per_run."""
    ids = [f"P{i:02d}" for i in range(20)]
    with db.begin() as conn:
        add_member(conn, "A-UNREACHABLE", tags=["recall"])
        for member in ids:
            add_member(conn, member, phone=PHONE, tags=["recall"])
    decisions = by_member(decide(db, playbook(simple_playbook(holdout=40, max_per_run=5, playbook_id="winback"))))
    held = [m for m in ids if expected_draw("winback", m) < 40]
    standing = sorted((m for m in ids if m not in held), key=str.encode)
    assert held and len(standing) > 5
    expected = {"A-UNREACHABLE": ("suppressed", "unreachable")}
    expected |= dict.fromkeys(held, ("holdout", None))
    expected |= dict.fromkeys(standing[:5], ("send", None))
    expected |= dict.fromkeys(standing[5:], ("suppressed", "max_per_run"))
    assert {m: (d.decision, d.reason) for m, d in decisions.items()} == expected


# --------------------------------------------------------------------------- templates

BACK_TO_SHOP = """
id: back-to-shop
name: 回到常用平台复购
trigger: {schedule: "0 10 * * 1"}
audience:
  all:
    - purchased: {within_days: 60}
offer:
  coupon: {threshold: 199, discount: 30, valid_days: 3}
channels:
  - wecom:
      text: "{{ member.nickname }}（{{ member.city }}），您常在{{ member.habitual_platform }}下单，满{{ offer.coupon.threshold }}减{{ offer.coupon.discount }}，{{ offer.coupon.valid_until }}前有效：{{ links[member.habitual_platform] }}"
  - sms:
      template_code: SMS_5500001
      params: {name: "{{ member.nickname }}", url: "{{ links[member.habitual_platform] }}", n: "{{ member.order_count }}"}
"""
LINKS = {"tmall": "https://maideshi.tmall.com", "jd": "https://mall.jd.com/index-maideshi.html"}


def test_template__renders_chinese_with_member_offer_and_links(db: Engine) -> None:
    """A Tmall buyer gets the Tmall link and a JD buyer the JD link, in Chinese text with member and offer values."""
    with db.begin() as conn:
        add_member(conn, "TMALL_FAN", nickname="王小明", city="杭州", **WECOM)
        add_order(conn, "TMALL_FAN", paid_at=days_ago(10), platform="tmall")
        add_member(conn, "JD_FAN", nickname="李雷", phone=PHONE)
        add_order(conn, "JD_FAN", paid_at=days_ago(40), platform="jd")
        add_order(conn, "JD_FAN", paid_at=days_ago(20), platform="jd")
        add_order(conn, "JD_FAN", paid_at=days_ago(5), platform="tmall")
    decisions = by_member(decide(db, playbook(BACK_TO_SHOP), AT, links=LINKS))
    assert decisions["TMALL_FAN"].message == {
        "text": "王小明（杭州），您常在tmall下单，满199减30，2026-11-24前有效：https://maideshi.tmall.com"}
    assert decisions["TMALL_FAN"].offer == {"coupon": {"threshold": 199, "discount": 30, "valid_days": 3}}
    assert decisions["JD_FAN"].channel == "sms"
    assert decisions["JD_FAN"].message == {
        "template_code": "SMS_5500001",
        "params": {"name": "李雷", "url": "https://mall.jd.com/index-maideshi.html", "n": "3"}}


def test_template__a_missing_link_is_a_render_error(db: Engine) -> None:
    """A template indexing `links` with a platform the config has no link for suppresses that member with render_error."""
    with db.begin() as conn:
        add_member(conn, "TMALL_FAN", nickname="王小明", city="杭州", **WECOM)
        add_order(conn, "TMALL_FAN", paid_at=days_ago(10), platform="tmall")
        add_member(conn, "DOUYIN_FAN", nickname="韩梅梅", city="成都", **WECOM)
        add_order(conn, "DOUYIN_FAN", paid_at=days_ago(10), platform="douyin")
    decisions = by_member(decide(db, playbook(BACK_TO_SHOP), AT, links=LINKS))
    assert (decisions["TMALL_FAN"].decision, decisions["TMALL_FAN"].channel) == ("send", "wecom")
    failed = decisions["DOUYIN_FAN"]
    assert (failed.decision, failed.reason, failed.channel, failed.message) == (
        "suppressed", "render_error", None, None)
    assert "douyin" in failed.why["render_error"]
