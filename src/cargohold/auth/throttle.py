"""Failed-login throttling that cannot be turned against users.

After ``limit`` failures within ``window`` seconds for one (user, client address), further
attempts by that pair are refused (429 with ``Retry-After``) until the oldest of those failures
is ``window`` seconds old; ``limit`` 0 turns throttling off (``http.limits.loginfailures`` and
``loginwindow``).

- **The key is user and address together.** Someone guessing alice's password from one
  address locks out only alice *from that address*: alice elsewhere, and every other user
  from that same address, log in as before. Unknown user names are keys like any other, so a
  flood of made-up names costs rows, never anyone's lockout.
- **The address** is the peer's, or behind a load balancer the one it reports: an
  ``X-Forwarded-For`` header is believed only when the peer is in ``http.trustedproxies``, and
  then the client is the rightmost address in it that is not itself a trusted proxy (anything
  left of that could be written by the client). Without trusted proxies the header is ignored.
- **Counts are shared.** With Redis configured (the ``redis`` section), by every worker of
  every replica: one sorted set of failure times per key, expiring with the window. Otherwise
  by the workers of one server: ``serve --workers N`` makes a small SQLite file before it forks
  (SQLite's own locking makes the workers agree, a crashed worker leaves nothing locked, and
  the supervisor removes the file when it stops). A single process counts in memory. When
  Redis cannot be reached, the worker counts alone until it can, and says so in the log.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sqlite3
import time
import uuid
from collections import deque
from typing import Any, Protocol

log = logging.getLogger("cargohold.auth")

DEFAULT_LIMIT = 5
DEFAULT_WINDOW = 60.0
MAX_KEYS = 50_000  # in memory: keys beyond this evict the ones whose failures are oldest
SHARED_DIR_ENV = "CARGOHOLD_SHARED_DIR"  # set by serve --workers N for its workers
REDIS_PREFIX = "cargohold:login-failures:"

Key = tuple[str, str]  # (user, client address)


class FailureStore(Protocol):
    """Failure times (``time.time()``) per key, newest first, within a window."""

    async def recent(self, key: Key, since: float, limit: int) -> list[float]: ...

    async def add(self, key: Key, now: float, window: float) -> None: ...

    async def clear(self, key: Key) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._failures: dict[Key, deque[float]] = {}

    async def recent(self, key: Key, since: float, limit: int) -> list[float]:
        times = self._failures.get(key)
        if times is None:
            return []
        while times and times[0] <= since:
            times.popleft()
        if not times:
            del self._failures[key]
            return []
        return list(reversed(times))[:limit]

    async def add(self, key: Key, now: float, window: float) -> None:
        times = self._failures.get(key)
        if times is None:
            if len(self._failures) >= MAX_KEYS:
                self._evict(now - window)
            times = self._failures[key] = deque(maxlen=64)
        times.append(now)

    def _evict(self, since: float) -> None:
        """Drop expired keys, then, if a flood of distinct keys still fills the table, the
        keys whose newest failure is oldest: never the whole table (that would unlock all)."""
        for key in [k for k, t in self._failures.items() if not t or t[-1] <= since]:
            del self._failures[key]
        excess = len(self._failures) - MAX_KEYS + 1
        if excess > 0:
            oldest = sorted(self._failures, key=lambda k: self._failures[k][-1])[:excess]
            for key in oldest:
                del self._failures[key]

    async def clear(self, key: Key) -> None:
        self._failures.pop(key, None)


class SqliteStore:
    """One table in a file that the workers of one server share (see the module's doc)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # never a connection across fork
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # counts, not records: a crash may lose some
            db.execute(
                "CREATE TABLE IF NOT EXISTS failures (user TEXT, addr TEXT, at REAL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS by_key ON failures (user, addr, at)")
            db.execute("CREATE INDEX IF NOT EXISTS by_time ON failures (at)")
            self._db, self._pid = db, os.getpid()
        return self._db

    async def recent(self, key: Key, since: float, limit: int) -> list[float]:
        rows = self._conn().execute(
            "SELECT at FROM failures WHERE user=? AND addr=? AND at>? ORDER BY at DESC LIMIT ?",
            (key[0], key[1], since, limit),
        )
        return [float(r[0]) for r in rows]

    async def add(self, key: Key, now: float, window: float) -> None:
        db = self._conn()
        db.execute("INSERT INTO failures VALUES (?, ?, ?)", (key[0], key[1], now))
        db.execute("DELETE FROM failures WHERE at<=?", (now - window,))

    async def clear(self, key: Key) -> None:
        self._conn().execute("DELETE FROM failures WHERE user=? AND addr=?", key)


class RedisStore:
    """A sorted set of failure times per key, shared by every replica using the Redis."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _name(key: Key) -> str:
        return REDIS_PREFIX + hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest()

    async def recent(self, key: Key, since: float, limit: int) -> list[float]:
        pairs = await self.client.zrevrangebyscore(
            self._name(key), "+inf", f"({since}", start=0, num=limit, withscores=True
        )
        return [float(score) for _member, score in pairs]

    async def add(self, key: Key, now: float, window: float) -> None:
        name = self._name(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.zadd(name, {f"{now}:{uuid.uuid4().hex[:8]}": now})
            pipe.zremrangebyscore(name, "-inf", now - window)
            pipe.expire(name, max(1, math.ceil(window)))
            await pipe.execute()

    async def clear(self, key: Key) -> None:
        await self.client.delete(self._name(key))


class Throttle:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window: float = DEFAULT_WINDOW,
        store: FailureStore | None = None,
    ) -> None:
        self.limit = limit
        self.window = window
        self.store: FailureStore = store or MemoryStore()
        self._fallback = MemoryStore()  # while the shared store cannot be reached
        self._warned = 0.0

    @property
    def enabled(self) -> bool:
        return self.limit > 0 and self.window > 0

    async def _run(self, op: str, *args: Any) -> Any:
        try:
            return await getattr(self.store, op)(*args)
        except Exception as e:  # Redis or the file unreachable: never fail the login for it
            now = time.monotonic()
            if now - self._warned > 60:
                self._warned = now
                log.warning("login throttle: shared counts unavailable (%s); counting locally", e)
            return await getattr(self._fallback, op)(*args)

    async def retry_after(self, key: Key) -> int | None:
        """Seconds to wait before ``key`` may try again, or None when it may try now."""
        if not self.enabled:
            return None
        now = time.time()
        times: list[float] = await self._run("recent", key, now - self.window, self.limit)
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[self.limit - 1] + self.window - now))

    async def failure(self, key: Key) -> None:
        if self.enabled:
            await self._run("add", key, time.time(), self.window)

    async def success(self, key: Key) -> None:
        if self.enabled:
            await self._run("clear", key)


def make_throttle(limit: int, window: float, redis_config: Any = None) -> Throttle:
    """The throttle of one worker: Redis when configured, else the server's shared file
    (``serve --workers N``), else memory."""
    store: FailureStore
    if redis_config is not None:
        from cargohold.storage.rediscache import connect

        store = RedisStore(connect(redis_config))
    elif os.environ.get(SHARED_DIR_ENV):
        store = SqliteStore(os.path.join(os.environ[SHARED_DIR_ENV], "login-failures.sqlite"))
    else:
        store = MemoryStore()
    return Throttle(limit, window, store)
