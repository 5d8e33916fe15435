"""The touch ledger: every statement on touches, runs, watermarks, suppressions and vendor state.

One row per decision, unique on (playbook, member, occurrence): a second decision for the
same key is "already decided", a return value, never an error. Dispatch is at most once:
a row is marked `sending` under a lease in a committed transaction before its adapter is
called; a row left in `sending` past its lease is settled by the adapter's `lookup`, never
resent blindly.

SQLite means one daemon: SQLAlchemy drops FOR UPDATE on SQLite, and writers are
serialised by BEGIN IMMEDIATE (engine.store.connect.write_transaction). PostgreSQL means many:
batches are claimed with FOR UPDATE SKIP LOCKED, and caps are checked under per-member
advisory locks, so two replicas never pass the same member's last allowed touch.

Its modules, by what they are about: `touches` (states, ids, recording decisions and what the
gate counts), `claims` (due rows, claiming under a lease, settling, expiry), `runs` (runs and
watermarks), `suppressions`, `vendor_state` (tokens, channel pauses), `receipts` (deliveries,
member events), `push_counts` (vendor pushes per route), `reports` (counts for `siyu status`) and `dialect` (where PostgreSQL and SQLite
differ). Callers use the names re-exported here: `from engine import ledger; ledger.claim_batch(…)`.
"""

from __future__ import annotations

from engine.ledger.claims import (
    await_lookup,
    claim_batch,
    claim_has_work,
    due_count,
    expire_deferred,
    expired_leases,
    extend_lease,
    extend_leases,
    release,
    settle,
    settle_many,
    settle_unknown,
)
from engine.ledger.dialect import one_of
from engine.ledger.push_counts import add_push_counts, last_accepted_pushes, push_counts
from engine.ledger.receipts import add_member_event, awaiting_receipts, receipt_target, record_delivery
from engine.ledger.reports import channel_day, playbook_state_counts, rows_in_states, state_counts
from engine.ledger.runs import (
    advance_watermark,
    event_types_between,
    finish_run,
    get_watermark,
    last_runs,
    start_run,
    unfinished_runs,
)
from engine.ledger.suppressions import (
    add_suppression,
    list_suppressions,
    remove_suppression,
    suppressed_channels,
)
from engine.ledger.touches import (
    FINAL_STATES,
    TouchState,
    contacts,
    lock_budgets,
    lock_members,
    member_histories,
    record,
    sends_in_run,
    spend_e4,
    touch_id_for,
)
from engine.ledger.vendor_state import (
    channel_pauses_now,
    claim_token_refresh,
    invalidate_token,
    pause_channel,
    release_token_refresh,
    resume_channel,
    store_token,
    token_row,
)

__all__ = [
    "FINAL_STATES",
    "TouchState",
    "add_member_event",
    "add_push_counts",
    "add_suppression",
    "advance_watermark",
    "await_lookup",
    "awaiting_receipts",
    "channel_day",
    "channel_pauses_now",
    "claim_batch",
    "claim_has_work",
    "claim_token_refresh",
    "contacts",
    "due_count",
    "event_types_between",
    "expire_deferred",
    "expired_leases",
    "extend_lease",
    "extend_leases",
    "finish_run",
    "get_watermark",
    "invalidate_token",
    "last_accepted_pushes",
    "last_runs",
    "list_suppressions",
    "lock_budgets",
    "lock_members",
    "member_histories",
    "one_of",
    "pause_channel",
    "playbook_state_counts",
    "push_counts",
    "receipt_target",
    "record",
    "record_delivery",
    "release",
    "release_token_refresh",
    "remove_suppression",
    "resume_channel",
    "rows_in_states",
    "sends_in_run",
    "settle",
    "settle_many",
    "settle_unknown",
    "spend_e4",
    "start_run",
    "state_counts",
    "store_token",
    "suppressed_channels",
    "token_row",
    "touch_id_for",
    "unfinished_runs",
]
