"""The Redis backend of the blob descriptor cache (``storage.cache.blobdescriptor: redis``).

Redis is shared by every replica, so invalidations are seen by all of them at once, which is what
makes caching tag lookups safe. It only accelerates: every failure (refused, timed out, wrong
password, out of memory) is logged as a warning at most once per :data:`WARN_EVERY` seconds and
the operation answers as for a miss; after a failure Redis is skipped for :data:`BACKOFF`
seconds, so a dead or unreachable server costs requests at most one timeout per backoff, not one
per request. Requests keep working against the store directly, more slowly.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cargohold.config import RedisConfig
from cargohold.storage.cache import TOMBSTONE, TOMBSTONE_SECONDS, CacheBackend

log = logging.getLogger("cargohold.cache")

BACKOFF = 2.0
WARN_EVERY = 30.0
DEFAULT_TIMEOUT = 2.0  # seconds, when the config sets none: a cache must fail fast
SCAN_BATCH = 1000

T = TypeVar("T")


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisCache(CacheBackend):
    kind = "redis"

    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self._client: aioredis.Redis | None = None
        self._down_until = 0.0
        self._last_warning = 0.0
        self._suppressed = 0
        self.failures = 0
        self.last_error = ""

    def _connect(self) -> aioredis.Redis:
        return connect(self.config)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            self._client = self._connect()
        return self._client

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _run(self, op: Callable[[aioredis.Redis], Awaitable[T]], default: T) -> T:
        if not self.available:
            return default
        try:
            return await op(self.client)
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)
            return default

    def _failed(self, error: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + BACKOFF
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        if now - self._last_warning >= WARN_EVERY:
            more = f" ({self._suppressed} more failures since the last warning)"
            log.warning(
                "redis cache at %s unavailable, serving from storage without it: %s%s",
                self.config.addr,
                self.last_error,
                more if self._suppressed else "",
            )
            self._last_warning = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    async def get(self, key: str) -> str | None:
        value = await self._run(lambda r: r.get(key), None)
        if value is None or value == TOMBSTONE:
            return None
        return str(value)

    async def fill(self, key: str, value: str, ttl: float | None) -> None:
        await self._run(lambda r: r.set(key, value, nx=True, px=_ms(ttl)), None)

    async def put(self, key: str, value: str, ttl: float | None) -> None:
        await self._run(lambda r: r.set(key, value, px=_ms(ttl)), None)

    async def invalidate(self, key: str) -> None:
        # Must not be skipped while the breaker is open: a stale "exists" could outlive the
        # outage. Try even then; if Redis is really down, its entries are unreachable anyway
        # and expire on their TTL.
        try:
            await self.client.set(key, TOMBSTONE, px=_ms(TOMBSTONE_SECONDS))
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    async def forget(self, key: str) -> None:
        try:
            await self.client.delete(key)
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    async def forget_prefix(self, prefix: str) -> None:
        async def drop(r: aioredis.Redis) -> None:
            batch: list[str] = []
            async for key in r.scan_iter(match=_glob_escape(prefix) + "*", count=SCAN_BATCH):
                batch.append(str(key))
                if len(batch) >= SCAN_BATCH:
                    await r.unlink(*batch)
                    batch.clear()
            if batch:
                await r.unlink(*batch)

        try:
            await drop(self.client)
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)

    async def check(self) -> str:
        try:
            await self.client.ping()
        except (RedisError, OSError, TimeoutError) as e:
            self._failed(e)
            return f"unavailable: {type(e).__name__}: {e}"
        self._down_until = 0.0
        return "ok"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                await client.aclose()


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read()


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else max(1, int(seconds * 1000))


def connect(c: RedisConfig) -> aioredis.Redis:
    """A client for registry:2's ``redis`` section (also used by the login throttle)."""
    host, _, port = c.addr.rpartition(":")
    kwargs: dict[str, Any] = {
        "host": host.strip("[]") or "localhost",
        "port": int(port),
        "db": c.db,
        "password": c.password or None,
        "username": c.username or None,
        "socket_connect_timeout": c.dialtimeout or DEFAULT_TIMEOUT,
        "socket_timeout": max(c.readtimeout, c.writetimeout) or DEFAULT_TIMEOUT,
        "decode_responses": True,
        "retry_on_timeout": False,
    }
    if c.tls_enabled:
        kwargs["connection_class"] = aioredis.SSLConnection
        kwargs["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        if c.tls_clientcas:  # every listed CA bundle, instead of the system's
            kwargs["ssl_ca_data"] = "\n".join(_read(path) for path in c.tls_clientcas)
        if c.tls_certificate:
            kwargs["ssl_certfile"] = c.tls_certificate
            kwargs["ssl_keyfile"] = c.tls_key
    pool: aioredis.ConnectionPool
    if c.pool_maxactive > 0:
        pool = aioredis.BlockingConnectionPool(
            max_connections=c.pool_maxactive,
            timeout=kwargs["socket_connect_timeout"],
            **kwargs,
        )
    else:
        pool = aioredis.ConnectionPool(**kwargs)
    return aioredis.Redis(connection_pool=pool)
