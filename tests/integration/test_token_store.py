"""The ledger's token store, the one the engine lends the WeChat and WeCom adapters, on both databases."""

from __future__ import annotations

from datetime import timedelta

from scenario import AT
from sqlalchemy import Engine

from channels.base import ChannelContext, TokenStore
from engine.ledger.token_store import LedgerTokenStore

HOLD = timedelta(seconds=30)


def test_token_store__is_the_adapters_token_store(db: Engine) -> None:
    """It satisfies the Protocol the adapters are typed against, and ChannelContext carries it."""
    store = LedgerTokenStore(db)
    assert isinstance(store, TokenStore)
    assert ChannelContext(store=store).store is store


def test_token_store__one_refresher_at_a_time_until_its_claim_runs_out(db: Engine) -> None:
    """A second owner cannot claim a key while the first one's claim lasts; once it runs out or is released,
    it can."""
    store = LedgerTokenStore(db)
    assert store.read_token("wecom:corp") is None
    assert store.claim_refresh("wecom:corp", "a", AT, HOLD)
    assert store.claim_refresh("wecom:corp", "a", AT, HOLD)  # its own claim, again
    assert not store.claim_refresh("wecom:corp", "b", AT + HOLD / 2, HOLD)
    assert store.read_token("wecom:corp") is None  # claimed, nothing stored yet
    assert store.claim_refresh("wecom:corp", "b", AT + HOLD * 2, HOLD)
    store.release_refresh("wecom:corp", "a")  # not a's any more: b keeps it
    assert not store.claim_refresh("wecom:corp", "a", AT + HOLD * 2, HOLD)
    store.release_refresh("wecom:corp", "b")
    assert store.claim_refresh("wecom:corp", "a", AT + HOLD * 2, HOLD)


def test_token_store__stores_reads_and_forgets_only_the_bad_token(db: Engine) -> None:
    """A stored token is read back with its expiry and ends the claim; only the bad token is forgotten."""
    store = LedgerTokenStore(db)
    assert store.claim_refresh("wechat:app", "a", AT, HOLD)
    store.store_token("wechat:app", "T1", AT + timedelta(hours=2), AT)
    assert store.read_token("wechat:app") == ("T1", AT + timedelta(hours=2))
    assert store.claim_refresh("wechat:app", "b", AT, HOLD)  # storing ended a's claim
    assert store.invalidate_token("wechat:app", "T0") is False
    assert store.read_token("wechat:app") == ("T1", AT + timedelta(hours=2))
    assert store.invalidate_token("wechat:app", "T1") is True
    assert store.read_token("wechat:app") is None
    assert store.read_token("wecom:other") is None
