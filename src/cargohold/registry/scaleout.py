"""What stateless replicas need around the storage driver: the cache, the catalog index, health.

:func:`layer_driver` stacks, over the configured driver:

- the blob descriptor cache (:mod:`cargohold.storage.cache`): ``redis`` on any driver;
  ``inmemory`` only on remote drivers (S3): a local disk or memory answers a stat faster than
  any cache, and per-process copies would go stale across workers;
- the repository index (:mod:`cargohold.registry.repoindex`) on remote drivers.

:class:`HealthCheck` answers ``/debug/health``: storage reachable or not (what a load balancer
needs to know), and the cache's state (informational: the registry works without it).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from cargohold import memory
from cargohold.config import Config
from cargohold.registry.repoindex import IndexingDriver, RepositoryIndex
from cargohold.storage.cache import CacheBackend, CachingDriver, InMemoryCache
from cargohold.storage.driver import StorageDriver

# Drivers whose every call is a network round trip (what the cache and the index are for).
REMOTE_DRIVERS = frozenset({"s3"})
HEALTH_TIMEOUT = 3.0
HEALTH_CACHE_SECONDS = 1.0


@dataclass
class Layers:
    driver: StorageDriver  # what the stores use
    base: StorageDriver  # the configured driver itself
    cache: CacheBackend | None = None
    index: RepositoryIndex | None = None


def _descriptor_cache(config: Config, base: StorageDriver) -> CacheBackend | None:
    kind = config.storage.cache_blobdescriptor
    if kind == "redis" and config.redis is not None:
        from cargohold.storage.rediscache import RedisCache

        return RedisCache(config.redis)
    if kind == "inmemory" and base.name in REMOTE_DRIVERS:
        size = (config.raw.get("storage") or {}).get("cache", {}) or {}
        entries = size.get("blobdescriptorsize") if isinstance(size, dict) else None
        return InMemoryCache(
            entries if isinstance(entries, int) and entries > 0 else memory.scaled(10_000)
        )
    return None


def layer_driver(config: Config, base: StorageDriver) -> Layers:
    layers = Layers(driver=base, base=base)
    layers.cache = _descriptor_cache(config, base)
    if layers.cache is not None:
        layers.driver = CachingDriver(layers.driver, layers.cache)
    if base.name in REMOTE_DRIVERS:
        indexing = IndexingDriver(layers.driver)
        layers.driver, layers.index = indexing, indexing.index
    return layers


@dataclass
class HealthCheck:
    layers: Layers
    _last: tuple[float, bool, dict[str, Any]] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set on SIGTERM (see cargohold.server): a replica that is finishing its requests before it
    # exits answers 503 at once, so a balancer stops sending it work without waiting for errors.
    draining: bool = False

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """(storage reachable, details); a result is reused for a second under probe storms."""
        if self.draining:
            return False, {"status": "draining"}
        now = time.monotonic()
        if self._last is not None and now - self._last[0] < HEALTH_CACHE_SECONDS:
            return self._last[1], self._last[2]
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < HEALTH_CACHE_SECONDS:
                return self._last[1], self._last[2]
            ok, details = await self._run()
            self._last = (time.monotonic(), ok, details)
            return ok, details

    async def _run(self) -> tuple[bool, dict[str, Any]]:
        storage: dict[str, Any] = {"driver": self.layers.base.name}
        try:
            await asyncio.wait_for(self.layers.base.check_health(), HEALTH_TIMEOUT)
            storage["status"] = "ok"
            ok = True
        except TimeoutError:
            storage["status"] = f"unreachable: no answer within {HEALTH_TIMEOUT:.0f}s"
            ok = False
        except Exception as e:
            storage["status"] = f"unreachable: {type(e).__name__}: {e}"[:500]
            ok = False
        details: dict[str, Any] = {"status": "ok" if ok else "unavailable", "storage": storage}
        cache = self.layers.cache
        if cache is not None:
            try:
                state = await asyncio.wait_for(cache.check(), HEALTH_TIMEOUT)
            except TimeoutError:
                state = "unavailable: timeout"
            details["cache"] = {"kind": cache.kind, "status": state}
        return ok, details
