"""L2: results in Redis, shared by replicas. Optional, and never in the way.

Batch reads are one MGET, batch writes one pipeline of SET ... EX. Every call has a short socket
timeout and no retries. When Redis fails (down, timing out, refusing our password), the store
logs one warning, skips Redis for `retry_after_s`, then tries again by itself, and logs once
when Redis answers again. Neither the URL's password nor any value is ever logged.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# What a Redis call raises when Redis is down, slow, or refuses us.
_REDIS_ERRORS = (RedisError, OSError, TimeoutError)


def redacted_url(url: str) -> str:
    """The URL without user name or password, for logs."""
    parts = urlsplit(url)
    where = parts.hostname or ""
    if parts.port is not None:
        where = f"{where}:{parts.port}"
    return f"{parts.scheme}://{where}{parts.path}"


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        password: str | None,
        ttl_s: float,
        timeout_s: float,
        retry_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = redacted_url(url)
        self.ttl_ms = max(1, math.ceil(ttl_s * 1000))
        self.retry_after_s = retry_after_s
        self._clock = clock
        extra: dict[str, Any] = (
            {} if password is None else {"password": password}
        )  # a password in the URL wins
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            **extra,
        )
        self.up = True
        self._down_until = 0.0
        self.errors = 0
        self.last_error: str | None = None

    def state(self) -> dict[str, object]:
        return {
            "url": self.where,
            "state": "up" if self.up else "down",
            "errors": self.errors,
            "last_error": self.last_error,
        }

    def _should_try(self) -> bool:
        return self.up or self._clock() >= self._down_until

    async def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.last_error = type(exc).__name__
        self._down_until = self._clock() + self.retry_after_s
        if not self.up:
            return
        self.up = False
        # Only the exception type: Redis messages may carry connection details.
        log.warning(
            "result cache: Redis L2 at %s is unavailable (%s); serving from L1 and the engines, "
            "retrying every %g s",
            self.where,
            self.last_error,
            self.retry_after_s,
        )
        with contextlib.suppress(*_REDIS_ERRORS):  # idle connections are stale now
            await self._client.connection_pool.disconnect()

    def _succeeded(self) -> None:
        if not self.up:
            self.up = True
            log.info("result cache: Redis L2 at %s is back", self.where)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes] | None:
        """The values found, by key; None when Redis was not asked or did not answer."""
        if not keys or not self._should_try():
            return None
        try:
            values = await self._client.mget(list(keys))
        except _REDIS_ERRORS as exc:
            await self._failed(exc)
            return None
        self._succeeded()
        return {
            key: value for key, value in zip(keys, values, strict=True) if isinstance(value, bytes)
        }

    async def put_many(self, items: Mapping[str, bytes]) -> bool:
        """Stores every item with the TTL; False when Redis was not asked or did not answer."""
        if not items or not self._should_try():
            return False
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(key, value, px=self.ttl_ms)
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            await self._failed(exc)
            return False
        self._succeeded()
        return True

    async def close(self) -> None:
        with contextlib.suppress(*_REDIS_ERRORS):
            await self._client.aclose()
