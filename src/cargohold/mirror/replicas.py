"""Coalescing across replicas (best effort): one fetch per blob among hosts sharing a Redis.

The fetch files of :mod:`cargohold.mirror.fetch` coalesce the workers of one host. Replicas on
other hosts share the store (S3) and, when the configuration has a ``redis`` section, that
Redis: before fetching, a replica's fetcher takes ``cargohold:mirror:fetch:<digest>`` with
``SET NX PX`` (refreshed while it fetches). A replica that finds it taken waits until the blob
appears in the shared store, then serves it from there: its clients wait for the whole blob
rather than streaming it, which is the price of not fetching it again. If the key goes away
without a blob (that replica failed or died), the waiting replica fetches itself.

Best effort: any Redis error means "fetch ourselves", so a Redis outage costs upstream
bandwidth, never availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any

from cargohold.config import RedisConfig
from cargohold.digest import Digest

log = logging.getLogger("cargohold.mirror")

LEASE_MS = 30_000
KEY = "cargohold:mirror:fetch:"


def _errors() -> tuple[type[BaseException], ...]:
    """What a Redis call may raise. Imported here, not at the top: redis (and the cryptography
    it pulls in) is loaded only by registries that configure it."""
    from redis.exceptions import RedisError

    return (RedisError, OSError)


class ReplicaLocks:
    def __init__(self, config: RedisConfig) -> None:
        self.config = config
        self.token = f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from cargohold.storage.rediscache import RedisCache

            # The same connection settings (TLS, pool, timeouts) as the descriptor cache.
            self._client = RedisCache(self.config)._connect()
        return self._client

    async def acquire(self, d: Digest) -> bool:
        """True when this replica may fetch ``d`` (it took the key, or Redis cannot tell)."""
        try:
            return bool(await self.client.set(KEY + str(d), self.token, nx=True, px=LEASE_MS))
        except _errors() as exc:
            log.warning("redis: cannot coordinate the fetch of %s with other replicas: %s", d, exc)
            return True

    async def keep(self, d: Digest) -> None:
        """Refresh the lease while the fetch runs (cancelled when it ends)."""
        while True:
            await asyncio.sleep(LEASE_MS / 3000)
            with contextlib.suppress(*_errors()):
                if await self.client.get(KEY + str(d)) == self.token:
                    await self.client.pexpire(KEY + str(d), LEASE_MS)

    async def release(self, d: Digest) -> None:
        with contextlib.suppress(*_errors()):
            if await self.client.get(KEY + str(d)) == self.token:
                await self.client.delete(KEY + str(d))

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
