"""Audience leaves and groups, as the issue's scenarios, on SQLite and PostgreSQL.

Every scenario is evaluated as of `AT`, Sunday 2026-11-22 10:00 Shanghai (02:00 UTC),
unless it says otherwise; "21 days ago" is the local date 2026-11-01. Each test runs on
both databases, so the same playbook gives the same member set on both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from freezegun import freeze_time
from scenario import (
    AT,
    PHONE,
    add_coupon,
    add_event,
    add_member,
    add_order,
    audience_playbook,
    days_ago,
    decide,
    local,
    matching,
    playbook,
)
from sqlalchemy import Connection, Engine

from engine.decide.compiler import Frame, compile_audience

MILK = ("pet_milk", "milk-800g", False)
MILK_TRIAL = ("pet_milk", "milk-trial-50g", True)
GUT = ("gut_care", "gut-60", False)

LAST_MILK_21 = """
all:
  - last_purchase: {category: pet_milk, days_ago: 21}
"""


# --------------------------------------------------------------------------- last_purchase

def test_last_purchase__day_21_only(db: Engine) -> None:
    """Of purchases 20, 21 and 22 days ago, only the one 21 days ago is 'day 21'."""
    with db.begin() as conn:
        for n in (20, 21, 22):
            add_member(conn, f"M{n}")
            add_order(conn, f"M{n}", paid_at=days_ago(n), items=[MILK])
    assert matching(db, LAST_MILK_21) == {"M21"}


def test_last_purchase__newer_matching_purchase_means_it_does_not_hold(db: Engine) -> None:
    """A newer matching purchase up to `at` ends the cycle; other categories, refunds and later payments do not."""
    with db.begin() as conn:
        add_member(conn, "AGAIN")
        add_order(conn, "AGAIN", paid_at=days_ago(21), items=[MILK])
        add_order(conn, "AGAIN", paid_at=days_ago(5), items=[MILK])
        add_member(conn, "AGAIN_TODAY")
        add_order(conn, "AGAIN_TODAY", paid_at=days_ago(21), items=[MILK])
        add_order(conn, "AGAIN_TODAY", paid_at=days_ago(0, "09:59"), items=[MILK])
        add_member(conn, "OTHER_CATEGORY")
        add_order(conn, "OTHER_CATEGORY", paid_at=days_ago(21), items=[MILK])
        add_order(conn, "OTHER_CATEGORY", paid_at=days_ago(5), items=[GUT])
        add_member(conn, "REFUNDED_NEWER")
        add_order(conn, "REFUNDED_NEWER", paid_at=days_ago(21), items=[MILK])
        add_order(conn, "REFUNDED_NEWER", paid_at=days_ago(5), items=[MILK], status="refunded")
        add_member(conn, "PAID_AFTER_AT")
        add_order(conn, "PAID_AFTER_AT", paid_at=days_ago(21), items=[MILK])
        add_order(conn, "PAID_AFTER_AT", paid_at=days_ago(0, "10:01"), items=[MILK])
    assert matching(db, LAST_MILK_21) == {"OTHER_CATEGORY", "REFUNDED_NEWER", "PAID_AFTER_AT"}


def test_last_purchase__local_day_edges(db: Engine) -> None:
    """00:01 and 23:59 on the local date 21 days ago count; 23:59 the day before and 00:01 the day after do not."""
    with db.begin() as conn:
        for member, paid_at in [("EARLY", local("2026-11-01 00:01")), ("LATE", local("2026-11-01 23:59")),
                                ("DAY_BEFORE", local("2026-10-31 23:59")), ("DAY_AFTER", local("2026-11-02 00:01"))]:
            add_member(conn, member)
            add_order(conn, member, paid_at=paid_at, items=[MILK])
    assert matching(db, LAST_MILK_21) == {"EARLY", "LATE"}


def test_last_purchase__counts_on_the_shanghai_date_not_the_utc_date(db: Engine) -> None:
    """07:30 Shanghai on 11-01 is 23:30 UTC on 10-31 and counts as day 21; 00:30 Shanghai on 11-02 does not."""
    with db.begin() as conn:
        add_member(conn, "UTC_DAY_BEFORE")
        add_order(conn, "UTC_DAY_BEFORE", paid_at=datetime(2026, 10, 31, 23, 30, tzinfo=UTC), items=[MILK])
        add_member(conn, "UTC_SAME_DAY")
        add_order(conn, "UTC_SAME_DAY", paid_at=datetime(2026, 11, 1, 16, 30, tzinfo=UTC), items=[MILK])
        add_member(conn, "SHANGHAI_2330")
        add_order(conn, "SHANGHAI_2330", paid_at=local("2026-11-01 23:30"), items=[MILK])
    assert matching(db, LAST_MILK_21) == {"UTC_DAY_BEFORE", "SHANGHAI_2330"}


def test_last_purchase__evaluation_just_after_local_midnight(db: Engine) -> None:
    """Evaluated at 00:30 Shanghai (16:30 UTC the day before), 'today' is already the new Shanghai date."""
    at = local("2026-11-22 00:30")
    with db.begin() as conn:
        add_member(conn, "DAY_21")
        add_order(conn, "DAY_21", paid_at=local("2026-11-01 12:00"), items=[MILK])
        add_member(conn, "DAY_22")
        add_order(conn, "DAY_22", paid_at=local("2026-10-31 20:00"), items=[MILK])
    assert matching(db, LAST_MILK_21, at=at) == {"DAY_21"}


def test_last_purchase__purchase_after_at_does_not_count(db: Engine) -> None:
    """With days_ago 0, purchases today up to and including `at` count and a purchase a minute later does not."""
    with db.begin() as conn:
        for member, clock in [("AT_0959", "09:59"), ("AT_1000", "10:00"), ("AT_1001", "10:01")]:
            add_member(conn, member)
            add_order(conn, member, paid_at=days_ago(0, clock), items=[MILK])
    assert matching(db, "all: [last_purchase: {category: pet_milk, days_ago: 0}]") == {"AT_0959", "AT_1000"}


def test_last_purchase__refunded_and_unpaid_orders_never_count(db: Engine) -> None:
    """A refunded order and a `created` order (even one with a paid_at) are not purchases."""
    with db.begin() as conn:
        add_member(conn, "PAID")
        add_order(conn, "PAID", paid_at=days_ago(21), items=[MILK])
        add_member(conn, "REFUNDED")
        add_order(conn, "REFUNDED", paid_at=days_ago(21), items=[MILK], status="refunded")
        add_member(conn, "CREATED")
        add_order(conn, "CREATED", paid_at=None, created_at=days_ago(21), items=[MILK], status="created")
        add_member(conn, "CREATED_WITH_PAID_AT")
        add_order(conn, "CREATED_WITH_PAID_AT", paid_at=days_ago(21), items=[MILK], status="created")
    assert matching(db, LAST_MILK_21) == {"PAID"}
    assert matching(db, "all: [last_purchase: {days_ago: 21}]") == {"PAID"}


def test_last_purchase__category_sku_platform_and_trial_filters(db: Engine) -> None:
    """Each filter narrows the matching lines; a newer line that fails the filter does not end the cycle."""
    with db.begin() as conn:
        add_member(conn, "TMALL_MILK")
        add_order(conn, "TMALL_MILK", paid_at=days_ago(21), platform="tmall", items=[MILK])
        add_member(conn, "JD_TRIAL")
        add_order(conn, "JD_TRIAL", paid_at=days_ago(21), platform="jd", items=[MILK_TRIAL])
        add_member(conn, "TMALL_GUT")
        add_order(conn, "TMALL_GUT", paid_at=days_ago(21), platform="tmall", items=[GUT])
        add_member(conn, "TRIAL_THEN_FULL")
        add_order(conn, "TRIAL_THEN_FULL", paid_at=days_ago(21), platform="douyin", items=[MILK_TRIAL])
        add_order(conn, "TRIAL_THEN_FULL", paid_at=days_ago(3), platform="douyin", items=[MILK])

    def last(filters: str) -> set[str]:
        return matching(db, f"all: [last_purchase: {{{filters}, days_ago: 21}}]")

    assert last("category: pet_milk") == {"TMALL_MILK", "JD_TRIAL"}
    assert last("sku: milk-trial-50g") == {"JD_TRIAL", "TRIAL_THEN_FULL"}
    assert last("platform: tmall") == {"TMALL_MILK", "TMALL_GUT"}
    assert last("category: pet_milk, trial: true") == {"JD_TRIAL", "TRIAL_THEN_FULL"}
    assert last("trial: false") == {"TMALL_MILK", "TMALL_GUT"}
    assert last("category: gut_care, platform: jd") == set()
    assert last("category: pet_milk, platform: douyin, trial: true") == {"TRIAL_THEN_FULL"}


def test_last_purchase__calendar_days_in_the_playbook_timezone(db: Engine) -> None:
    """In New York, 11-01 (the 25-hour day clocks fall back) is day 21 from 00:30 EDT to 23:30 EST, not 21×24 hours."""
    new_york = ZoneInfo("America/New_York")
    at = datetime(2026, 11, 22, 10, 0, tzinfo=new_york)
    with db.begin() as conn:
        for member, paid_at in [("NY_0030_EDT", datetime(2026, 11, 1, 0, 30, tzinfo=new_york)),
                                ("NY_2330_EST", datetime(2026, 11, 1, 23, 30, tzinfo=new_york)),
                                ("NY_OCT_31_2330", datetime(2026, 10, 31, 23, 30, tzinfo=new_york)),
                                ("NY_NOV_2_0030", datetime(2026, 11, 2, 0, 30, tzinfo=new_york))]:
            add_member(conn, member)
            add_order(conn, member, paid_at=paid_at, items=[MILK])
    assert matching(db, LAST_MILK_21, at=at, timezone="America/New_York") == {"NY_0030_EDT", "NY_2330_EST"}


def test_last_purchase__as_of_at_not_the_wall_clock(db: Engine) -> None:
    """Evaluation is as of the explicit `at`: the machine's clock being years later changes nothing."""
    with db.begin() as conn:
        for n in (20, 21, 22):
            add_member(conn, f"M{n}")
            add_order(conn, f"M{n}", paid_at=days_ago(n), items=[MILK])
    with freeze_time("2030-06-01 03:00:00"):
        assert matching(db, LAST_MILK_21) == {"M21"}


# --------------------------------------------------------------------------- purchased

def test_purchased__within_days_covers_n_plus_1_local_dates_never_after_at(db: Engine) -> None:
    """within_days 7 is the local dates 7 days ago to today (8 dates), and stops at `at`."""
    with db.begin() as conn:
        for member, paid_at in [("DAY7_0000", days_ago(7, "00:00")), ("DAY8_2359", days_ago(8, "23:59")),
                                ("TODAY_0959", days_ago(0, "09:59")), ("TODAY_1001", days_ago(0, "10:01")),
                                ("DAY3", days_ago(3))]:
            add_member(conn, member)
            add_order(conn, member, paid_at=paid_at, items=[GUT])
        add_member(conn, "DAY3_REFUNDED")
        add_order(conn, "DAY3_REFUNDED", paid_at=days_ago(3), items=[GUT], status="refunded")
    assert matching(db, "all: [purchased: {category: gut_care, within_days: 7}]") == {
        "DAY7_0000", "TODAY_0959", "DAY3"}
    assert matching(db, "all: [purchased: {category: gut_care}]") == {
        "DAY7_0000", "DAY8_2359", "TODAY_0959", "DAY3"}


def test_purchased__within_days_0_just_after_local_midnight(db: Engine) -> None:
    """At 00:30 Shanghai, within_days 0 holds for 00:10 that morning, not for 23:50 the evening before (same UTC date)."""
    at = local("2026-11-22 00:30")
    with db.begin() as conn:
        add_member(conn, "AFTER_MIDNIGHT")
        add_order(conn, "AFTER_MIDNIGHT", paid_at=local("2026-11-22 00:10"))
        add_member(conn, "BEFORE_MIDNIGHT")
        add_order(conn, "BEFORE_MIDNIGHT", paid_at=local("2026-11-21 23:50"))
    assert matching(db, "all: [purchased: {within_days: 0}]", at=at) == {"AFTER_MIDNIGHT"}
    assert matching(db, "all: [purchased: {within_days: 1}]", at=at) == {"AFTER_MIDNIGHT", "BEFORE_MIDNIGHT"}


def test_purchased__between_days(db: Engine) -> None:
    """between_days [90, 180] is the local dates 180 to 90 days ago inclusive; a newer purchase does not matter."""
    with db.begin() as conn:
        for member, paid_at in [("DAY89", days_ago(89, "00:00")), ("DAY90", days_ago(90, "23:59")),
                                ("DAY180", days_ago(180, "00:00")), ("DAY181", days_ago(181, "23:59"))]:
            add_member(conn, member)
            add_order(conn, member, paid_at=paid_at, platform="jd")
        add_member(conn, "DAY100_AND_DAY5")
        add_order(conn, "DAY100_AND_DAY5", paid_at=days_ago(100), platform="jd")
        add_order(conn, "DAY100_AND_DAY5", paid_at=days_ago(5), platform="jd")
    assert matching(db, "all: [purchased: {platform: jd, between_days: [90, 180]}]") == {
        "DAY90", "DAY180", "DAY100_AND_DAY5"}
    assert matching(db, "all: [last_purchase: {platform: jd, between_days: [90, 180]}]") == {"DAY90", "DAY180"}


# --------------------------------------------------------------------------- order metrics

def test_order_count__every_operator(db: Engine) -> None:
    """order_count counts paid, not refunded orders, with eq, ne, gt, gte, lt, lte, in, not_in and between."""
    with db.begin() as conn:
        add_member(conn, "N0")
        add_member(conn, "N0_UNPAID")
        add_order(conn, "N0_UNPAID", paid_at=days_ago(3), status="refunded")
        add_order(conn, "N0_UNPAID", paid_at=None, status="created")
        for n in (1, 2, 3):
            add_member(conn, f"N{n}")
            for i in range(n):
                add_order(conn, f"N{n}", paid_at=days_ago(10 * i + 1))
        add_order(conn, "N1", paid_at=days_ago(0, "10:30"))  # after `at`

    def count(comparison: str) -> set[str]:
        return matching(db, f"all: [order_count: {comparison}]")

    assert count("{eq: 0}") == {"N0", "N0_UNPAID"}
    assert count("{ne: 0}") == {"N1", "N2", "N3"}
    assert count("{gt: 1}") == {"N2", "N3"}
    assert count("{gte: 2}") == {"N2", "N3"}
    assert count("{lt: 2}") == {"N0", "N0_UNPAID", "N1"}
    assert count("{lte: 1}") == {"N0", "N0_UNPAID", "N1"}
    assert count("{in: [1, 3]}") == {"N1", "N3"}
    assert count("{not_in: [0, 2]}") == {"N1", "N3"}
    assert count("{between: [1, 2]}") == {"N1", "N2"}
    assert count("{gte: 1, lt: 3}") == {"N1", "N2"}


def test_order_count__within_days(db: Engine) -> None:
    """within_days 30 counts orders paid on the local dates 30 days ago to `at`, alongside the all-time count."""
    with db.begin() as conn:
        add_member(conn, "ONE_IN_30")
        add_order(conn, "ONE_IN_30", paid_at=days_ago(30, "00:00"))
        add_order(conn, "ONE_IN_30", paid_at=days_ago(31, "23:59"))
        add_member(conn, "NONE_IN_30")
        add_order(conn, "NONE_IN_30", paid_at=days_ago(31, "23:59"))
        add_member(conn, "AFTER_AT")
        add_order(conn, "AFTER_AT", paid_at=days_ago(0, "10:01"))
        add_member(conn, "TWO_IN_30")
        add_order(conn, "TWO_IN_30", paid_at=days_ago(30, "00:00"))
        add_order(conn, "TWO_IN_30", paid_at=days_ago(0, "09:00"))
    assert matching(db, "all: [order_count: {within_days: 30, eq: 1}]") == {"ONE_IN_30"}
    assert matching(db, "all: [order_count: {within_days: 30, gte: 1}]") == {"ONE_IN_30", "TWO_IN_30"}
    assert matching(db, "all: [order_count: {within_days: 30, eq: 0}]") == {"NONE_IN_30", "AFTER_AT"}
    assert matching(db, """
        all:
          - order_count: {gte: 2}
          - order_count: {within_days: 30, eq: 1}
        """) == {"ONE_IN_30"}


def test_total_spend__exact_to_the_fen(db: Engine) -> None:
    """total_spend sums paid amounts exactly: ¥99.99 + ¥100.01 is ¥200 and ¥199.99 is not."""
    with db.begin() as conn:
        add_member(conn, "T0")
        add_member(conn, "T200")
        add_order(conn, "T200", paid_at=days_ago(40), amount_yuan="99.99")
        add_order(conn, "T200", paid_at=days_ago(2), amount_yuan="100.01")
        add_member(conn, "T199_99")
        add_order(conn, "T199_99", paid_at=days_ago(2), amount_yuan="199.99")
        add_order(conn, "T199_99", paid_at=days_ago(1), amount_yuan="1000", status="refunded")
        add_member(conn, "T200_01")
        add_order(conn, "T200_01", paid_at=days_ago(2), amount_yuan="200.01")

    def spend(comparison: str) -> set[str]:
        return matching(db, f"all: [total_spend: {comparison}]")

    assert spend("{eq: 200}") == {"T200"}
    assert spend("{ne: 200}") == {"T0", "T199_99", "T200_01"}
    assert spend("{gte: 200}") == {"T200", "T200_01"}
    assert spend("{gt: 199.99}") == {"T200", "T200_01"}
    assert spend("{lt: 200}") == {"T0", "T199_99"}
    assert spend("{lte: 199.99}") == {"T0", "T199_99"}
    assert spend("{in: [199.99, 200.01]}") == {"T199_99", "T200_01"}
    assert spend("{not_in: [0, 200]}") == {"T199_99", "T200_01"}
    assert spend("{between: [199.99, 200]}") == {"T200", "T199_99"}
    assert spend("{within_days: 30, eq: 100.01}") == {"T200"}


def test_avg_order_value__199_99_is_not_200(db: Engine) -> None:
    """Averages compare exactly: ¥199.99, and ¥199.9966… (which rounds to ¥200.00), are below `gte: 200`."""
    with db.begin() as conn:
        add_member(conn, "AVG_200")
        add_order(conn, "AVG_200", paid_at=days_ago(5), amount_yuan="200")
        add_member(conn, "AVG_199_99")
        add_order(conn, "AVG_199_99", paid_at=days_ago(50), amount_yuan="199.98")
        add_order(conn, "AVG_199_99", paid_at=days_ago(5), amount_yuan="200")
        add_member(conn, "AVG_199_9966")
        add_order(conn, "AVG_199_9966", paid_at=days_ago(50), amount_yuan="200")
        add_order(conn, "AVG_199_9966", paid_at=days_ago(40), amount_yuan="200")
        add_order(conn, "AVG_199_9966", paid_at=days_ago(5), amount_yuan="199.99")

    def average(comparison: str) -> set[str]:
        return matching(db, f"all: [avg_order_value: {comparison}]")

    assert average("{gte: 200}") == {"AVG_200"}
    assert average("{eq: 200}") == {"AVG_200"}
    assert average("{eq: 199.99}") == {"AVG_199_99"}
    assert average("{lt: 200}") == {"AVG_199_99", "AVG_199_9966"}
    assert average("{gt: 199.99}") == {"AVG_200", "AVG_199_9966"}
    assert average("{lte: 199.99}") == {"AVG_199_99"}
    assert average("{between: [199.99, 200]}") == {"AVG_200", "AVG_199_99", "AVG_199_9966"}
    assert average("{in: [199.99, 200]}") == {"AVG_200", "AVG_199_99"}
    assert average("{not_in: [200]}") == {"AVG_199_99", "AVG_199_9966"}


def test_avg_order_value__members_without_a_paid_order_never_match(db: Engine) -> None:
    """No paid order means no average: even `ne`, `not_in` and `lt` fail, while order_count is 0."""
    with db.begin() as conn:
        add_member(conn, "NO_ORDERS")
        add_member(conn, "ONLY_REFUNDED")
        add_order(conn, "ONLY_REFUNDED", paid_at=days_ago(3), amount_yuan="80", status="refunded")
        add_member(conn, "ONLY_CREATED")
        add_order(conn, "ONLY_CREATED", paid_at=None, amount_yuan="80", status="created")
        add_member(conn, "ONLY_AFTER_AT")
        add_order(conn, "ONLY_AFTER_AT", paid_at=days_ago(0, "11:00"), amount_yuan="80")
        add_member(conn, "AVG_50")
        add_order(conn, "AVG_50", paid_at=days_ago(3), amount_yuan="50")
    for comparison in ("{lt: 100}", "{ne: 1}", "{not_in: [1]}", "{between: [0, 1000]}", "{lte: 50}"):
        assert matching(db, f"all: [avg_order_value: {comparison}]") == {"AVG_50"}, comparison
    assert matching(db, "all: [avg_order_value: {lt: 0}]") == set()
    assert matching(db, "all: [order_count: {eq: 0}]") == {"NO_ORDERS", "ONLY_REFUNDED", "ONLY_CREATED",
                                                          "ONLY_AFTER_AT"}


def test_avg_order_value__within_days(db: Engine) -> None:
    """A windowed average uses only the orders paid in the window; the all-time one uses all of them."""
    with db.begin() as conn:
        add_member(conn, "RECENT_300_OLD_100")
        add_order(conn, "RECENT_300_OLD_100", paid_at=days_ago(5), amount_yuan="300")
        add_order(conn, "RECENT_300_OLD_100", paid_at=days_ago(60), amount_yuan="100")
        add_member(conn, "ONLY_OLD_400")
        add_order(conn, "ONLY_OLD_400", paid_at=days_ago(60), amount_yuan="400")
    assert matching(db, "all: [avg_order_value: {within_days: 30, gte: 300}]") == {"RECENT_300_OLD_100"}
    assert matching(db, "all: [avg_order_value: {gte: 300}]") == {"ONLY_OLD_400"}
    assert matching(db, "all: [avg_order_value: {eq: 200}]") == {"RECENT_300_OLD_100"}
    assert matching(db, "all: [avg_order_value: {within_days: 30, lt: 1000}]") == {"RECENT_300_OLD_100"}
    assert matching(db, """
        all:
          - avg_order_value: {within_days: 30, gt: 250}
          - avg_order_value: {lt: 250}
          - total_spend: {between_days: [31, 90], eq: 100}
        """) == {"RECENT_300_OLD_100"}


# --------------------------------------------------------------------------- member fields

def test_member__tier_city_origin_platform_and_points_comparisons(db: Engine) -> None:
    """Member fields compare with every operator; an empty field makes every comparison false."""
    with db.begin() as conn:
        add_member(conn, "GOLD", tier="gold", city="上海", origin_platform="tmall", points=1200)
        add_member(conn, "SILVER", tier="silver", city="杭州", origin_platform="jd", points=300)
        add_member(conn, "EMPTY")

    def member(fields: str) -> set[str]:
        return matching(db, f"all: [member: {{{fields}}}]")

    assert member("tier: gold") == {"GOLD"}
    assert member("tier: {ne: gold}") == {"SILVER"}
    assert member("tier: {in: [gold, silver]}") == {"GOLD", "SILVER"}
    assert member("tier: {not_in: [gold]}") == {"SILVER"}
    assert member("city: 上海") == {"GOLD"}
    assert member("city: {in: [杭州, 北京]}") == {"SILVER"}
    assert member("origin_platform: {ne: tmall}") == {"SILVER"}
    assert member("points: {gte: 1000}") == {"GOLD"}
    assert member("points: {between: [300, 1200]}") == {"GOLD", "SILVER"}
    assert member("points: {lt: 500}") == {"SILVER"}
    assert member("tier: gold, city: 杭州") == set()
    assert member("tier: silver, city: 杭州, origin_platform: jd") == {"SILVER"}


def test_member__none_of_a_city_holds_for_a_member_without_city(db: Engine) -> None:
    """Leaves are two-valued: `none: [{member: {city: 上海}}]` holds for a member with no city."""
    with db.begin() as conn:
        add_member(conn, "SHANGHAI", city="上海")
        add_member(conn, "HANGZHOU", city="杭州")
        add_member(conn, "NO_CITY")
    assert matching(db, "none: [{member: {city: 上海}}]") == {"HANGZHOU", "NO_CITY"}
    assert matching(db, "all: [{member: {city: {ne: 上海}}}]") == {"HANGZHOU"}


def test_member__habitual_platform_with_its_tie_rules(db: Engine) -> None:
    """Most paid orders wins; a tie goes to the most recent paid order, then to the alphabetically first name."""
    with db.begin() as conn:
        add_member(conn, "MOST_ORDERS")
        add_order(conn, "MOST_ORDERS", paid_at=days_ago(30), platform="tmall")
        add_order(conn, "MOST_ORDERS", paid_at=days_ago(20), platform="tmall")
        add_order(conn, "MOST_ORDERS", paid_at=days_ago(1), platform="jd")
        add_member(conn, "TIE_MOST_RECENT")
        add_order(conn, "TIE_MOST_RECENT", paid_at=days_ago(30), platform="jd")
        add_order(conn, "TIE_MOST_RECENT", paid_at=days_ago(2), platform="tmall")
        add_member(conn, "TIE_SAME_INSTANT")
        add_order(conn, "TIE_SAME_INSTANT", paid_at=days_ago(4, "15:00"), platform="douyin")
        add_order(conn, "TIE_SAME_INSTANT", paid_at=days_ago(4, "15:00"), platform="channels")
        add_member(conn, "REFUNDS_DO_NOT_COUNT")
        for n in (3, 4, 5):
            add_order(conn, "REFUNDS_DO_NOT_COUNT", paid_at=days_ago(n), platform="jd", status="refunded")
        add_order(conn, "REFUNDS_DO_NOT_COUNT", paid_at=days_ago(40), platform="tmall")
        add_member(conn, "LATER_ORDERS_DO_NOT_COUNT")
        add_order(conn, "LATER_ORDERS_DO_NOT_COUNT", paid_at=days_ago(40), platform="tmall")
        add_order(conn, "LATER_ORDERS_DO_NOT_COUNT", paid_at=days_ago(0, "11:00"), platform="jd")
        add_order(conn, "LATER_ORDERS_DO_NOT_COUNT", paid_at=days_ago(0, "12:00"), platform="jd")
        add_member(conn, "NO_ORDERS")

    def habitual(comparison: str) -> set[str]:
        return matching(db, f"all: [member: {{habitual_platform: {comparison}}}]")

    assert habitual("tmall") == {"MOST_ORDERS", "TIE_MOST_RECENT", "REFUNDS_DO_NOT_COUNT",
                                 "LATER_ORDERS_DO_NOT_COUNT"}
    assert habitual("jd") == set()
    assert habitual("channels") == {"TIE_SAME_INSTANT"}
    assert habitual("douyin") == set()
    assert habitual("{ne: tmall}") == {"TIE_SAME_INSTANT"}


def test_member__joined_days_ago_counts_local_calendar_days(db: Engine) -> None:
    """joined_days_ago is local join date to local evaluation date: 00:01 and 23:59 on one date are the same day."""
    with db.begin() as conn:
        add_member(conn, "D10_0001", joined_at=local("2026-11-12 00:01"))
        add_member(conn, "D10_2359", joined_at=local("2026-11-12 23:59"))
        add_member(conn, "D10_UTC_DAY_BEFORE", joined_at=datetime(2026, 11, 11, 16, 30, tzinfo=UTC))
        add_member(conn, "D11_2359", joined_at=local("2026-11-11 23:59"))
        add_member(conn, "D9_0001", joined_at=local("2026-11-13 00:01"))
        add_member(conn, "NEVER_JOINED")

    def joined(comparison: str) -> set[str]:
        return matching(db, f"all: [member: {{joined_days_ago: {comparison}}}]")

    assert joined("10") == {"D10_0001", "D10_2359", "D10_UTC_DAY_BEFORE"}
    assert joined("{gte: 10}") == {"D10_0001", "D10_2359", "D10_UTC_DAY_BEFORE", "D11_2359"}
    assert joined("{lt: 10}") == {"D9_0001"}
    assert joined("{gt: 10}") == {"D11_2359"}
    assert joined("{lte: 9}") == {"D9_0001"}
    assert joined("{ne: 10}") == {"D11_2359", "D9_0001"}
    assert joined("{between: [9, 10]}") == {"D10_0001", "D10_2359", "D10_UTC_DAY_BEFORE", "D9_0001"}
    assert joined("{in: [9, 11]}") == {"D11_2359", "D9_0001"}
    assert joined("{not_in: [9, 11]}") == {"D10_0001", "D10_2359", "D10_UTC_DAY_BEFORE"}


# --------------------------------------------------------------------------- tags and events

def test_tag__has_and_has_not(db: Engine) -> None:
    """`tag` holds for members with the tag; under `none` it excludes them."""
    with db.begin() as conn:
        add_member(conn, "VIP_DND", tags=["vip", "do_not_disturb"])
        add_member(conn, "VIP", tags=["vip", "铲屎官"])
        add_member(conn, "NO_TAGS")
    assert matching(db, "all: [tag: vip]") == {"VIP_DND", "VIP"}
    assert matching(db, "all: [tag: 铲屎官]") == {"VIP"}
    assert matching(db, "{all: [tag: vip], none: [tag: do_not_disturb]}") == {"VIP"}
    assert matching(db, "none: [tag: vip]") == {"NO_TAGS"}


def test_event__in_the_window_and_not_after_at(db: Engine) -> None:
    """An event of the type counts on its local date within the window, never after `at`."""
    with db.begin() as conn:
        for member, occurred_at in [("DAY7_0000", days_ago(7, "00:00")), ("DAY8_2359", days_ago(8, "23:59")),
                                    ("TODAY_0959", days_ago(0, "09:59")), ("TODAY_1001", days_ago(0, "10:01")),
                                    ("DAY2", days_ago(2))]:
            add_member(conn, member)
            add_event(conn, member, "fair_visit", occurred_at)
        add_member(conn, "OTHER_TYPE")
        add_event(conn, "OTHER_TYPE", "app_open", days_ago(2))
    assert matching(db, "all: [event: {type: fair_visit, within_days: 7}]") == {"DAY7_0000", "TODAY_0959", "DAY2"}
    assert matching(db, "all: [event: {type: fair_visit, days_ago: 2}]") == {"DAY2"}
    assert matching(db, "all: [event: {type: fair_visit, between_days: [2, 8]}]") == {
        "DAY7_0000", "DAY8_2359", "DAY2"}


def test_event__where_compares_json_values_as_text(db: Engine) -> None:
    """`where` matches string, number and boolean attributes by their JSON text (`guangzhou`, `12`, `true`)."""
    with db.begin() as conn:
        add_member(conn, "GZ")
        add_event(conn, "GZ", "fair_visit", days_ago(3), {"fair": "guangzhou", "n": 12, "vip": True})
        add_member(conn, "SH")
        add_event(conn, "SH", "fair_visit", days_ago(3), {"fair": "shanghai", "n": 13, "vip": False})
        add_member(conn, "CN")
        add_event(conn, "CN", "fair_visit", days_ago(3), {"fair": "广州", "n": 12.5, "vip": None})
        add_member(conn, "BARE")
        add_event(conn, "BARE", "fair_visit", days_ago(3))

    def where(condition: str) -> set[str]:
        return matching(db, f"all: [event: {{type: fair_visit, within_days: 7, where: {{{condition}}}}}]")

    assert where("fair: guangzhou") == {"GZ"}
    assert where("fair: 广州") == {"CN"}
    assert where('n: "12"') == {"GZ"}
    assert where('n: "12.5"') == {"CN"}
    assert where('vip: "true"') == {"GZ"}
    assert where('vip: "false"') == {"SH"}
    assert where('fair: guangzhou, n: "13"') == set()
    assert matching(db, """
        none:
          - event: {type: fair_visit, within_days: 7, where: {vip: "true"}}
        """) == {"SH", "CN", "BARE"}


def test_event__where_on_an_array_or_object_never_matches_on_either_database(db: Engine) -> None:
    """`where` compares scalar values: an array or object attribute matches no text, on both databases alike."""
    with db.begin() as conn:
        add_member(conn, "BASKET")
        add_event(conn, "BASKET", "cart_abandoned", days_ago(1),
                  {"skus": ["milk-800g", "gut-60"], "cart": {"n": 2}, "store": "hz-01"})
    for spelling in ('["milk-800g", "gut-60"]', '["milk-800g","gut-60"]'):
        assert matching(db, f"""
        all:
          - event: {{type: cart_abandoned, within_days: 7, where: {{skus: '{spelling}'}}}}
        """) == set()
    assert matching(db, """all: [event: {type: cart_abandoned, within_days: 7, where: {cart: '{"n": 2}'}}]""") == set()
    assert matching(db, "all: [event: {type: cart_abandoned, within_days: 7, where: {store: hz-01}}]") == {"BASKET"}


# --------------------------------------------------------------------------- coupons and points

def test_coupon_expiring__unredeemed_unexpired_on_a_local_date_up_to_today_plus_n(db: Engine) -> None:
    """Within 3 days: a coupon expiring later today or on 11-25 (local) counts; expired, redeemed, future-issued or 11-26 ones do not."""
    cases = [
        ("LATER_TODAY", {"expires_at": days_ago(0, "18:00")}),
        ("LAST_MINUTE_DAY_3", {"expires_at": local("2026-11-25 23:59")}),
        ("EXPIRED_EARLIER_TODAY", {"expires_at": days_ago(0, "09:00")}),
        ("FIRST_MINUTE_DAY_4", {"expires_at": local("2026-11-26 00:00")}),
        ("REDEEMED", {"expires_at": local("2026-11-24 12:00"), "redeemed_at": days_ago(2)}),
        ("ISSUED_AFTER_AT", {"expires_at": local("2026-11-24 12:00"), "issued_at": days_ago(0, "11:00")}),
    ]
    with db.begin() as conn:
        for member, coupon in cases:
            add_member(conn, member)
            add_coupon(conn, member, **coupon)
    assert matching(db, "all: [coupon_expiring: {within_days: 3}]") == {"LATER_TODAY", "LAST_MINUTE_DAY_3"}
    assert matching(db, "all: [coupon_expiring: {within_days: 0}]") == {"LATER_TODAY"}


def test_points_expiring__min_points_on_local_dates_today_to_today_plus_n(db: Engine) -> None:
    """Within 30 days, at least 500 points: any time on local dates 11-22 to 12-22; 499 points or 12-23 00:00 do not."""
    cases = [
        ("TODAY", 600, local("2026-11-22 23:00")),
        ("EARLIER_TODAY", 600, local("2026-11-22 08:00")),
        ("DAY_30_2359", 500, local("2026-12-22 23:59")),
        ("DAY_31_0000", 800, local("2026-12-23 00:00")),
        ("YESTERDAY", 800, local("2026-11-21 23:59")),
        ("TOO_FEW", 499, local("2026-12-01 12:00")),
        ("NO_DATE", 800, None),
        ("NONE_EXPIRING", 0, local("2026-12-01 12:00")),
    ]
    with db.begin() as conn:
        for member, points, expire_at in cases:
            add_member(conn, member, points=1000, points_expiring=points, points_expire_at=expire_at)
    assert matching(db, "all: [points_expiring: {within_days: 30, min_points: 500}]") == {"TODAY", "EARLIER_TODAY",
                                                                                           "DAY_30_2359"}
    assert matching(db, "all: [points_expiring: {within_days: 30}]") == {"TODAY", "EARLIER_TODAY", "DAY_30_2359",
                                                                          "TOO_FEW"}
    assert matching(db, "all: [points_expiring: {within_days: 0, min_points: 600}]") == {"TODAY", "EARLIER_TODAY"}


# --------------------------------------------------------------------------- reachability

def test_reachable__each_channel_needs_its_own_contact_details(db: Engine) -> None:
    """sms needs a phone and no sms opt-out, ai_call a phone and no call opt-out, wecom both ids, template a subscribed openid."""
    with db.begin() as conn:
        add_member(conn, "PHONE", phone=PHONE)
        add_member(conn, "PHONE_NO_SMS", phone=PHONE, sms_opt_out=True)
        add_member(conn, "PHONE_NO_CALLS", phone=PHONE, call_opt_out=True)
        add_member(conn, "EMPTY_PHONE", phone="")
        add_member(conn, "WECOM", wecom_external_userid="wmEXT1", wecom_staff_userid="staff-li")
        add_member(conn, "WECOM_NO_STAFF", wecom_external_userid="wmEXT2")
        add_member(conn, "WECOM_NO_EXTERNAL", wecom_staff_userid="staff-li")
        add_member(conn, "OA", oa_openid="oOPEN1", oa_subscribed=True)
        add_member(conn, "OA_UNSUBSCRIBED", oa_openid="oOPEN2", oa_subscribed=False)
        add_member(conn, "OA_SUBSCRIBED_NO_OPENID", oa_subscribed=True)
    assert matching(db, "all: [reachable: sms]") == {"PHONE", "PHONE_NO_CALLS"}
    assert matching(db, "all: [reachable: ai_call]") == {"PHONE", "PHONE_NO_SMS"}
    assert matching(db, "all: [reachable: wecom]") == {"WECOM"}
    assert matching(db, "all: [reachable: template]") == {"OA"}
    assert matching(db, "all: [reachable: [wecom, template]]") == {"WECOM", "OA"}
    assert matching(db, "none: [reachable: [sms, ai_call, wecom, template]]") == {
        "EMPTY_PHONE", "WECOM_NO_STAFF", "WECOM_NO_EXTERNAL", "OA_UNSUBSCRIBED", "OA_SUBSCRIBED_NO_OPENID"}


# --------------------------------------------------------------------------- triggering_order

UNPAID_NUDGE = """
id: unpaid-order-nudge
name: 未付款订单30分钟催付
trigger: {event: order_created, delay: 30m}
audience:
  all:
    - triggering_order: {paid: false}
channels:
  - sms:
      template_code: SMS_4820940
      params: {order: "{{ event.attributes.order_id }}"}
"""


def _order_created(conn: Connection, member: str, created: datetime, paid_at: datetime | None) -> str:
    """An order created at `created` (paid at `paid_at`, or unpaid) and its order_created event."""
    order_id = add_order(conn, member, paid_at=paid_at, created_at=created,
                         status="created" if paid_at is None else "paid")
    return add_event(conn, member, "order_created", created, {"order_id": order_id},
                     event_id=f"EV-{member}-{created:%H%M}")


def test_triggering_order__still_unpaid_at_evaluation(db: Engine) -> None:
    """30 minutes after order_created: unpaid, or paid only after `at`, gives one row per event in occurred_at order."""
    with db.begin() as conn:
        for member in ("UNPAID", "PAID_BEFORE_AT", "PAID_AFTER_AT", "TWICE"):
            add_member(conn, member, phone=PHONE)
        _order_created(conn, "TWICE", days_ago(0, "09:20"), None)
        _order_created(conn, "UNPAID", days_ago(0, "08:40"), None)
        _order_created(conn, "PAID_BEFORE_AT", days_ago(0, "09:10"), days_ago(0, "09:45"))
        _order_created(conn, "PAID_AFTER_AT", days_ago(0, "08:45"), days_ago(0, "10:05"))
        _order_created(conn, "TWICE", days_ago(0, "09:00"), None)
    rows = [(d.event_id, d.member_id, d.message["params"]["order"] if d.message else None)
            for d in decide(db, playbook(UNPAID_NUDGE))]
    assert [(event_id, member_id) for event_id, member_id, _ in rows] == [
        ("EV-UNPAID-0840", "UNPAID"),
        ("EV-PAID_AFTER_AT-0845", "PAID_AFTER_AT"),
        ("EV-TWICE-0900", "TWICE"),
        ("EV-TWICE-0920", "TWICE"),
    ]
    assert all(order is not None and order.startswith("O") for _, _, order in rows)


def test_triggering_order__only_events_due_in_the_window(db: Engine) -> None:
    """With delay 30m and a 1h window at 10:00, only order_created events in (08:30, 09:30] are evaluated."""
    with db.begin() as conn:
        add_member(conn, "U", phone=PHONE)
        for clock in ("08:30", "08:31", "09:30", "09:31"):
            _order_created(conn, "U", days_ago(0, clock), None)
        order_id = add_order(conn, "U", paid_at=None, status="created")
        add_event(conn, "U", "order_viewed", days_ago(0, "09:00"), {"order_id": order_id}, event_id="EV-VIEWED")
    assert [d.event_id for d in decide(db, playbook(UNPAID_NUDGE))] == ["EV-U-0831", "EV-U-0930"]
    assert [d.event_id for d in decide(db, playbook(UNPAID_NUDGE), event_window=timedelta(hours=2))] == [
        "EV-U-0830", "EV-U-0831", "EV-U-0930"]


# --------------------------------------------------------------------------- groups

def test_groups__nested_all_any_none(db: Engine) -> None:
    """all / any / none nest: any of a or b, and not both c and d; keys given together must all hold."""
    members = {"A": ["a"], "B": ["b"], "NONE": [], "ACD": ["a", "c", "d"], "AC": ["a", "c"], "BD": ["b", "d"],
               "ABC": ["a", "b", "c"]}
    with db.begin() as conn:
        for member, tags in members.items():
            add_member(conn, member, tags=tags)
    assert matching(db, """
        all:
          - any:
              - tag: a
              - tag: b
          - none:
              - all:
                  - tag: c
                  - tag: d
        """) == {"A", "B", "AC", "BD", "ABC"}
    assert matching(db, """
        all: [tag: a]
        any: [tag: c, tag: d]
        none: [tag: b]
        """) == {"ACD", "AC"}
    assert matching(db, """
        none:
          - any: [tag: c, tag: d]
        """) == {"A", "B", "NONE"}
    assert matching(db, """
        any:
          - tag: d
          - all: [tag: a, tag: c]
          - none: [tag: a, tag: b, tag: c, tag: d]
        """) == {"ACD", "AC", "BD", "ABC", "NONE"}


def test_groups__leaves_of_different_kinds_combine(db: Engine) -> None:
    """A pet-milk refill audience: day-21 purchase, reachable on wecom or sms, not do_not_disturb."""
    with db.begin() as conn:
        add_member(conn, "DUE_WECOM", wecom_external_userid="wm1", wecom_staff_userid="staff-li")
        add_member(conn, "DUE_SMS", phone=PHONE)
        add_member(conn, "DUE_UNREACHABLE", oa_openid="o1", oa_subscribed=True)
        add_member(conn, "DUE_DND", phone=PHONE, tags=["do_not_disturb"])
        add_member(conn, "NOT_DUE", phone=PHONE)
        for member in ("DUE_WECOM", "DUE_SMS", "DUE_UNREACHABLE", "DUE_DND"):
            add_order(conn, member, paid_at=days_ago(21), items=[MILK])
        add_order(conn, "NOT_DUE", paid_at=days_ago(14), items=[MILK])
    book = audience_playbook("""
        all:
          - last_purchase: {category: pet_milk, days_ago: 21}
          - reachable: [wecom, sms]
        none:
          - tag: do_not_disturb
        """)
    assert {d.member_id for d in decide(db, book)} == {"DUE_WECOM", "DUE_SMS"}


# --------------------------------------------------------------------------- candidates first

def test_candidates__an_expiring_coupon_limits_who_is_aggregated_and_the_audience_is_unchanged(db: Engine) -> None:
    """With a coupon_expiring leaf at the top, the statement starts from the expiring coupons (its
    index), and the order aggregation behind avg_order_value and the decision's facts covers
    those members only; who matches is exactly what the leaves say."""
    audience = """
    all:
      - coupon_expiring: {within_days: 3}
      - avg_order_value: {gte: 100}
    """
    with db.begin() as conn:
        for member, coupon, amounts in (("BOTH", True, ("150", "90")), ("NO_COUPON", False, ("150",)),
                                        ("SMALL_ORDERS", True, ("50", "60"))):
            add_member(conn, member)
            if coupon:
                add_coupon(conn, member, expires_at=days_ago(-2))
            for n, amount in enumerate(amounts):
                add_order(conn, member, paid_at=days_ago(10 + n), amount_yuan=amount, platform="jd")
    book = audience_playbook(audience)
    statement = compile_audience(book, Frame(AT, ZoneInfo("Asia/Shanghai"), db.dialect.name)).statement
    assert "candidate_coupons" in str(statement)
    [decision] = decide(db, book)
    assert decision.member_id == "BOTH"
    assert decision.why["order_count"] == 2 and decision.why["habitual_platform"] == "jd"


def test_candidates__only_a_necessary_leaf_restricts(db: Engine) -> None:
    """A tag under `any` or `none` says nothing about who can match: no restriction, the same
    members as before (an untagged member matches through the other branch)."""
    audience = """
    any:
      - tag: vip
      - order_count: {gte: 1}
    none:
      - tag: blocked
    """
    with db.begin() as conn:
        add_member(conn, "VIP", tags=["vip"])
        add_member(conn, "BUYER")
        add_order(conn, "BUYER", paid_at=days_ago(3))
        add_member(conn, "BLOCKED_VIP", tags=["vip", "blocked"])
        add_member(conn, "NOBODY")
    book = audience_playbook(audience)
    statement = compile_audience(book, Frame(AT, ZoneInfo("Asia/Shanghai"), db.dialect.name)).statement
    assert "candidate_" not in str(statement)
    assert matching(db, audience) == {"VIP", "BUYER"}
