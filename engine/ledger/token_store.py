"""Vendor access tokens in the ledger (`vendor_tokens`), lent to the adapters as their token store:
the engine side of `channels.base.TokenStore`, each call one committed transaction."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine

from engine import ledger
from engine.store.connect import write_transaction


class LedgerTokenStore:
    """`channels.base.TokenStore` on the ledger's token statements (matched by shape: the ledger does
    not import the adapters' package)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def read_token(self, key: str) -> tuple[str, datetime] | None:
        with self.engine.connect() as conn:
            row = ledger.token_row(conn, key)
        if row is None or row["token"] is None or row["expires_at"] is None:
            return None
        return str(row["token"]), row["expires_at"]

    def claim_refresh(self, key: str, owner: str, now: datetime, hold: timedelta) -> bool:
        with write_transaction(self.engine) as conn:
            return ledger.claim_token_refresh(conn, key, owner, now, hold)

    def store_token(self, key: str, token: str, expires_at: datetime, now: datetime) -> None:
        with write_transaction(self.engine) as conn:
            ledger.store_token(conn, key, token, expires_at, now)

    def release_refresh(self, key: str, owner: str) -> None:
        with write_transaction(self.engine) as conn:
            ledger.release_token_refresh(conn, key, owner)

    def invalidate_token(self, key: str, bad: str) -> bool:
        with write_transaction(self.engine) as conn:
            return ledger.invalidate_token(conn, key, bad)
