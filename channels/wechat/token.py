"""Access tokens of WeCom and WeChat, cached in the engine's token store (`channels.base.TokenStore`) and
shared by every worker and replica.

A token is used until `margin` before it expires. One replica refreshes at a time (a
short-lived claim on the token row); the others wait for the new token rather than ask
the vendor themselves, because a WeChat `token` call invalidates the previous token. When
a call answers with a token-expired code, the adapter calls `refresh_after(bad)`: the
stored token is forgotten only if it is still that bad one, so one replica never discards
another's fresh token, and the vendor is asked once. Between reads of the store, a replica
keeps the token in memory for `reread` (one read per half minute, not one per request).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from channels.base import TokenStore
from engine.clock import now as clock_now

Fetch = Callable[[], Awaitable[tuple[str, int]]]
"""Asks the vendor for a new token: (token, seconds it lives)."""


class TokenCache:
    """One vendor credential's token, shared through the store (or this process without one)."""

    def __init__(self, store: TokenStore | None, key: str, fetch: Fetch, *,
                 clock: Callable[[], datetime] | None = None,
                 margin: timedelta = timedelta(minutes=5), hold: timedelta = timedelta(seconds=30),
                 reread: timedelta = timedelta(seconds=30)) -> None:
        self.store = store
        self.key = key
        self.fetch = fetch
        self.clock = clock or clock_now
        self.margin = margin
        self.hold = hold
        self.reread = reread  # a token another replica refreshed is seen within this long
        self.owner = secrets.token_hex(6)
        self._memory: tuple[str, datetime] | None = None  # the token last read or stored, and its expiry
        self._read_at = datetime.min.replace(tzinfo=self.clock().tzinfo)
        self._lock = asyncio.Lock()

    def _fresh(self, token: str | None, expires_at: datetime | None) -> bool:
        return bool(token) and expires_at is not None and expires_at - self.margin > self.clock()

    async def get(self) -> str:
        """A token valid for at least `margin`."""
        async with self._lock:
            for _ in range(int(self.hold.total_seconds() * 10) + 10):
                token = await self._try_get()
                if token is not None:
                    return token
                await asyncio.sleep(0.1)  # another replica is refreshing: wait for its token
            raise TimeoutError(f"no {self.key} token: the refresh by another replica did not finish")

    async def _try_get(self) -> str | None:
        if self.store is None:
            if self._memory and self._fresh(*self._memory):
                return self._memory[0]
            token, ttl = await self.fetch()
            self._memory = (token, self.clock() + timedelta(seconds=ttl))
            return token
        now = self.clock()
        if self._memory and self._fresh(*self._memory) and now < self._read_at + self.reread:
            return self._memory[0]  # read from the store less than `reread` ago
        store = self.store
        stored = await self._stored(store, now)
        if stored is not None:
            return stored
        if not await asyncio.to_thread(store.claim_refresh, self.key, self.owner, self.clock(), self.hold):
            return None
        stored = await self._stored(store, now)  # another replica may have stored one since our read
        if stored is not None:
            await asyncio.to_thread(store.release_refresh, self.key, self.owner)
            return stored
        try:
            token, ttl = await self.fetch()
        except BaseException:
            await asyncio.to_thread(store.release_refresh, self.key, self.owner)
            raise
        stored_at = self.clock()
        await asyncio.to_thread(store.store_token, self.key, token, stored_at + timedelta(seconds=ttl), stored_at)
        self._memory, self._read_at = (token, self.clock() + timedelta(seconds=ttl)), self.clock()
        return token

    async def _stored(self, store: TokenStore, now: datetime) -> str | None:
        """The store's token if it is fresh (kept in memory as read at `now`), else None."""
        row = await asyncio.to_thread(store.read_token, self.key)
        if row is None or not self._fresh(*row):
            self._memory = None
            return None
        self._memory, self._read_at = row, now
        return row[0]

    async def refresh_after(self, bad: str) -> str:
        """The vendor said `bad` expired: forget it (if still stored) and get a new one, once."""
        if self._memory and self._memory[0] == bad:
            self._memory = None
        if self.store is not None:
            await asyncio.to_thread(self.store.invalidate_token, self.key, bad)
        return await self.get()
