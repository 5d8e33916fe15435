"""The store's tables (SQLAlchemy Core). Alembic migrations must match this exactly.

Instants are stored in UTC (`UtcDateTime`), money as integer fen (`*_fen`), so
¥199.99 never rounds into a ¥200 tier and both databases compare exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from engine.grammar.values import MEMBER_FIELDS

SCHEMA_REVISION = "0007"
"""The newest migration in engine/store/migrations/versions (test_migrations keeps them equal): what
`require_schema` expects a database to be at."""

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UtcDateTime(TypeDecorator[datetime]):
    """An aware instant stored as UTC.

    PostgreSQL keeps `timestamptz`; SQLite has no time zones, so the value is stored as
    naive UTC text and given back as UTC. Naive datetimes are refused on the way in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} cannot be stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JsonDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")
Id = String(64)

ORDER_STATUSES = ("created", "paid", "refunded")

members = Table(
    "members", metadata,
    Column("member_id", Id, primary_key=True),
    Column("nickname", Text),
    Column("phone", String(32)),
    Column("origin_platform", String(32)),
    Column("tier", String(32)),
    Column("points", Integer),
    Column("points_expiring", Integer),
    Column("points_expire_at", UtcDateTime),
    Column("city", Text),
    Column("joined_at", UtcDateTime),
    Column("wecom_external_userid", String(128)),
    Column("wecom_staff_userid", String(128)),
    Column("oa_openid", String(128)),
    Column("oa_subscribed", Boolean, nullable=False, server_default="0"),
    Column("sms_opt_out", Boolean, nullable=False, server_default="0"),
    Column("call_opt_out", Boolean, nullable=False, server_default="0"),
)

member_tags = Table(
    "member_tags", metadata,
    Column("member_id", Id, ForeignKey("members.member_id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(64), primary_key=True),
    Index(None, "tag", "member_id"),
)

orders = Table(
    "orders", metadata,
    Column("order_id", Id, primary_key=True),
    Column("member_id", Id, ForeignKey("members.member_id", ondelete="CASCADE"), nullable=False),
    Column("platform", String(32)),
    Column("created_at", UtcDateTime),
    Column("paid_at", UtcDateTime),
    Column("amount_fen", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    CheckConstraint("status IN ('created', 'paid', 'refunded')", name="status"),
    Index(None, "member_id", "paid_at"),
    Index(None, "paid_at"),
)

order_items = Table(
    "order_items", metadata,
    Column("order_id", Id, ForeignKey("orders.order_id", ondelete="CASCADE"), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", String(64)),
    Column("category", String(64)),
    Column("quantity", Integer, nullable=False, server_default="1"),
    Column("amount_fen", BigInteger),
    Column("trial", Boolean, nullable=False, server_default="0"),
    Index(None, "category", "order_id"),
    Index(None, "sku", "order_id"),
)

coupons = Table(
    "coupons", metadata,
    Column("coupon_id", Id, primary_key=True),
    Column("member_id", Id, ForeignKey("members.member_id", ondelete="CASCADE"), nullable=False),
    Column("threshold_fen", BigInteger, nullable=False),
    Column("discount_fen", BigInteger, nullable=False),
    Column("issued_at", UtcDateTime),
    Column("expires_at", UtcDateTime),
    Column("redeemed_at", UtcDateTime),
    Index(None, "member_id", "expires_at"),
    Index(None, "expires_at"),
)

events = Table(
    "events", metadata,
    Column("event_id", Id, primary_key=True),
    Column("member_id", Id, ForeignKey("members.member_id", ondelete="CASCADE"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("attributes", JsonDocument, nullable=False),
    Index(None, "member_id", "type", "occurred_at"),
    Index(None, "type", "occurred_at"),
)

store_meta = Table(
    "store_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

assert tuple(c.name for c in members.columns) == MEMBER_FIELDS, "the grammar's member fields are the columns"


# --------------------------------------------------------------------------- the touch ledger

TOUCH_STATES = ("holdout", "suppressed", "queued", "deferred", "sending", "sent", "failed", "unknown")
REACHING_STATES = ("queued", "deferred", "sending", "sent", "unknown")
"""States of touches that may reach the member: they count against caps, budgets and cooldowns."""
CLAIMABLE_STATES = ("queued", "deferred")
"""States a claim takes rows from (deferred ones once their `not_before` has come)."""
DELIVERY_STATES = ("delivered", "undelivered")

touches = Table(
    "touches", metadata,
    Column("touch_id", String(15), primary_key=True),  # ≤ 15 ASCII: fits every vendor correlation field
    Column("playbook", String(64), nullable=False),
    Column("member_id", Id, nullable=False),
    Column("occurrence", String(64), nullable=False),  # scheduled time (UTC ISO) or the event id
    Column("event_id", Id),
    Column("state", String(16), nullable=False),
    Column("reason", String(32)),
    Column("channel", String(16)),
    Column("priority", Integer, nullable=False, server_default="50"),
    Column("offer", JsonDocument),
    Column("message", JsonDocument),
    Column("why", JsonDocument),
    Column("cost_e4", BigInteger, nullable=False, server_default="0"),  # cost in 1/10,000 yuan (0.045 → 450)
    Column("decided_at", UtcDateTime, nullable=False),
    Column("touch_at", UtcDateTime, nullable=False),  # when it reaches (or would reach) the member
    Column("not_before", UtcDateTime),  # deferred: the earliest send time
    Column("expires_at", UtcDateTime),  # deferred past this: suppressed/expired
    Column("lease_until", UtcDateTime),
    Column("lease_owner", String(64)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("claimed_at", UtcDateTime),  # when its latest claim for sending began (WeChat's dedup window)
    Column("sent_at", UtcDateTime),
    Column("provider", String(32)),  # the adapter that sent it (the SMS fallback provider, when it was used)
    Column("vendor_id", String(128)),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("delivery", String(16)),
    Column("delivery_status", String(64)),
    Column("delivered_at", UtcDateTime),
    Column("vendor_result", JsonDocument),  # e.g. an AI call's outcome: answered, duration, intent
    CheckConstraint("state IN ('holdout', 'suppressed', 'queued', 'deferred', 'sending', 'sent', 'failed', "
                    "'unknown')", name="state"),
    CheckConstraint("delivery IS NULL OR delivery IN ('delivered', 'undelivered')", name="delivery"),
    UniqueConstraint("playbook", "member_id", "occurrence"),
    Index(None, "state", "channel", "not_before"),
    Index(None, "member_id", "touch_at"),
    Index(None, "playbook", "member_id", "touch_at"),
    Index(None, "playbook", "occurrence"),
    Index(None, "lease_until"),
    Index(None, "vendor_id"),
)
# A claim's candidates in its order (ledger.claim_batch): a claim reads its batch from this index
# instead of sorting every claimable row of the channel, which PostgreSQL cannot cut short under
# FOR UPDATE (0.2 s per claim at 100k queued rows). Partial, so the ledger's history (sent,
# suppressed, …) is not in the way; a query uses it only if it repeats this WHERE (engine/ledger/claims.py, _due).
Index("ix_touches_claim", touches.c.channel, touches.c.priority.desc(), touches.c.decided_at, touches.c.touch_id,
      postgresql_where=touches.c.state.in_(CLAIMABLE_STATES), sqlite_where=touches.c.state.in_(CLAIMABLE_STATES))

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("playbook", String(64), nullable=False),
    Column("scheduled_for", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("owner", String(64)),
    Column("counts", JsonDocument),
    UniqueConstraint("playbook", "scheduled_for"),
)

watermarks = Table(
    "watermarks", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", UtcDateTime, nullable=False),
)

suppressions = Table(
    "suppressions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("member_id", Id),
    Column("phone", String(32)),
    Column("channel", String(16), nullable=False),  # a channel name, or 'all'
    Column("reason", Text),
    Column("source", String(32), nullable=False, server_default="manual"),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("(member_id IS NULL) <> (phone IS NULL)", name="one_subject"),
    Index(None, "member_id", "channel"),
    Index(None, "phone", "channel"),
)


# --------------------------------------------------------------------------- vendor state

vendor_tokens = Table(
    "vendor_tokens", metadata,
    Column("key", String(128), primary_key=True),  # e.g. "wecom:<corp_id>" or "wechat:<app_id>"
    Column("token", Text),
    Column("expires_at", UtcDateTime),
    Column("refreshing_until", UtcDateTime),  # one replica refreshes at a time
    Column("refreshing_owner", String(64)),
    Column("updated_at", UtcDateTime, nullable=False),
)

channel_pauses = Table(
    "channel_pauses", metadata,
    Column("channel", String(16), primary_key=True),
    Column("code", String(64)),
    Column("reason", Text, nullable=False),
    Column("paused_at", UtcDateTime, nullable=False),
    Column("resume_at", UtcDateTime, nullable=False),  # then one probe send decides
)


# --------------------------------------------------------------------------- vendor pushes

callback_counts = Table(
    "callback_counts", metadata,
    Column("day", String(10), primary_key=True),  # the config timezone's date, YYYY-MM-DD
    Column("route", String(64), primary_key=True),  # e.g. "aliyun/sms-up" (never the path: it holds the secret)
    Column("outcome", String(16), primary_key=True),  # applied, inconsistent, unmatched, refused, malformed, …
    Column("count", BigInteger, nullable=False),
    Column("last_at", UtcDateTime, nullable=False),  # the latest push counted here
)
