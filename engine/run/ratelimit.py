"""Per-channel rate limits and concurrency, so a vendor's published limit is never exceeded.

With several daemons on one database, each takes 1/replicas of the configured rate
(`dispatch.replicas`): the limit is divided among them, not shared through the database.
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts of at most `burst`."""

    def __init__(self, rate: float | None, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate or 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` tokens are available (a batch of n touches costs n)."""
        if self.rate is None:
            return
        async with self._lock:
            need = float(n)
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= min(need, self.capacity):
                    self.tokens -= min(need, self.capacity)
                    need -= min(need, self.capacity)
                    if need <= 0:
                        return
                await asyncio.sleep(max(min(need, self.capacity) - self.tokens, 0) / self.rate)


class ChannelLimits:
    """A channel's token bucket and concurrency semaphore."""

    def __init__(self, rate_per_second: float | None, concurrency: int, replicas: int = 1) -> None:
        share = None if rate_per_second is None else rate_per_second / replicas
        self.bucket = TokenBucket(share)
        self.slots = asyncio.Semaphore(concurrency)
