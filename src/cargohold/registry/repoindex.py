"""A repository index, so that the catalog of an object store costs a listing, not a walk.

On a filesystem the catalog is a local directory walk (fast). On S3, registry:2's definition of a
repository — a directory under ``repositories/`` with a ``_manifests`` child — means one listing
request per directory: thousands of requests per catalog call for thousands of repositories.
cargohold keeps an index next to the layout instead::

    /docker/registry/v2/_cargohold/catalog/<name>/_repository     (empty; one per repository)
    /docker/registry/v2/_cargohold/catalog-built                  (when it was last reconciled)

and answers the catalog with one flat listing of the index: one request per 1000 repositories.
registry:2 never looks under ``_cargohold``, so the bucket stays usable by it. Each process
reuses the list it read for :data:`LIST_CACHE_SECONDS` (so paging through a catalog costs one
listing), dropping it at once when it adds or removes an entry itself.

The index is maintained on push: the first write below ``<name>/_manifests/`` by a process
creates the entry (remembered per process, so later pushes cost nothing), and deleting a
manifest or a tag removes the entry once the repository has no ``_manifests`` left (deleting
a repository's directory removes its entry and those below it).
Repositories that appear by other means (a bucket written by registry:2, a copy) are found by
*reconciliation*: a flat walk of ``repositories/`` (one request per 1000 keys) that adds missing
entries and drops entries of repositories that are gone. It runs when a store has never been
indexed (the first catalog request then answers from the walk, and the entries are written in
the background) and periodically in the background (:data:`RECONCILE_SECONDS`), so anything
written behind cargohold's back shows up within that.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cargohold.registry.catalog import order_key
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver, StorageError
from cargohold.storage.wrapper import DriverWrapper

log = logging.getLogger("cargohold.catalog")

INDEX_ROOT = paths.CATALOG
BUILT_MARKER = paths.CATALOG_BUILT
RECONCILE_SECONDS = 600.0
KNOWN_SECONDS = 300.0  # how long a process trusts that an entry it wrote is still there
KNOWN_MAX = 100_000
LIST_CACHE_SECONDS = 2.0
WRITE_CONCURRENCY = 32


async def scan_repositories(driver: StorageDriver, marker: str = "_manifests") -> list[str]:
    """Repositories with a ``marker`` child, from one flat walk of ``repositories/``."""
    names: set[str] = set()
    for info in await driver.walk(paths.REPOSITORIES):
        parsed = paths.parse(info.path)
        if parsed.area == marker:
            names.add(parsed.name)
    return sorted(names, key=order_key)


class RepositoryIndex:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._known: OrderedDict[str, float] = OrderedDict()
        self._built = False
        self._listed: tuple[float, builtins.list[str]] | None = None
        self._building: asyncio.Task[None] | None = None
        self._scanned: builtins.list[str] = []
        self._dropped: set[str] = set()  # removed while a reconciliation was running

    async def ensure(self, name: str) -> None:
        expires = self._known.get(name)
        if expires is not None and expires > time.monotonic():
            return
        try:
            await self.driver.put_content(paths.catalog_entry(name), b"")
        except StorageError as e:
            # The push itself succeeded; reconciliation adds the entry later.
            log.warning("could not index repository %s: %s", name, e)
            return
        self._remember(name)
        self._listed = None
        self._dropped.discard(name)
        if self._building is not None and name not in self._scanned:
            self._scanned = sorted([*self._scanned, name], key=order_key)

    def _remember(self, name: str) -> None:
        self._known[name] = time.monotonic() + KNOWN_SECONDS
        self._known.move_to_end(name)
        while len(self._known) > KNOWN_MAX:
            self._known.popitem(last=False)

    async def _has_manifests(self, name: str) -> bool:
        return await self.driver.exists(paths.manifests(name))

    async def drop_if_gone(self, name: str) -> None:
        if await self._has_manifests(name):
            return
        self._known.pop(name, None)
        self._listed = None
        self._dropped.add(name)
        self._scanned = [n for n in self._scanned if n != name]
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.catalog_entry(name))

    async def drop_below(self, prefix: str) -> None:
        """Forget ``prefix`` and every repository below it (their directory was deleted)."""
        for name in [n for n in self._known if n == prefix or n.startswith(prefix + "/")]:
            del self._known[name]
        self._listed = None
        self._scanned = [n for n in self._scanned if n != prefix and not n.startswith(prefix + "/")]
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(f"{INDEX_ROOT}/{prefix}")

    async def _indexed(self) -> builtins.list[str]:
        entries = [paths.parse(info.path) for info in await self.driver.walk(INDEX_ROOT)]
        return [p.name for p in entries if p.kind is paths.Kind.CATALOG_ENTRY]

    async def names(self) -> builtins.list[str]:
        """The catalog: every indexed repository, in registry:2's order."""
        listed = self._listed
        if listed is not None and time.monotonic() - listed[0] < LIST_CACHE_SECONDS:
            return listed[1]
        if not self._built:
            if self._building is not None:  # answer from the walk until the index is written
                return self._scanned
            try:
                await self.driver.stat(BUILT_MARKER)
            except PathNotFoundError:
                log.info("indexing the repositories of this store (first catalog request)")
                self._scanned = await scan_repositories(self.driver)
                self._building = asyncio.create_task(self._build())
                return self._scanned
            self._built = True
        names = sorted(await self._indexed(), key=order_key)
        self._listed = (time.monotonic(), names)
        return names

    async def _build(self) -> None:
        try:
            await self.reconcile()
        except Exception:
            log.exception("indexing the repositories failed; the next catalog request retries")
        finally:
            self._building = None

    async def _each(
        self, names: builtins.list[str], action: Callable[[str], Awaitable[None]]
    ) -> None:
        limit = asyncio.Semaphore(WRITE_CONCURRENCY)

        async def one(name: str) -> None:
            async with limit:
                await action(name)

        await asyncio.gather(*(one(n) for n in names))

    async def reconcile(self) -> tuple[int, int]:
        """Make the index match the layout; returns (entries added, entries removed)."""
        started = time.monotonic()
        self._dropped.clear()
        actual = set(await scan_repositories(self.driver))
        indexed = set(await self._indexed())
        missing, extra = sorted(actual - indexed), sorted(indexed - actual)
        removed: builtins.list[str] = []

        async def add(name: str) -> None:
            if name in self._dropped:  # its last manifest was deleted since the walk
                return
            await self.driver.put_content(paths.catalog_entry(name), b"")
            self._remember(name)

        async def drop(name: str) -> None:
            if await self._has_manifests(name):  # pushed since the walk began
                return
            self._known.pop(name, None)
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.catalog_entry(name))
            removed.append(name)

        await self._each(missing, add)
        await self._each(extra, drop)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await self.driver.put_content(BUILT_MARKER, stamp.encode())
        self._built = True
        self._listed = None
        added = len(missing)
        log.info(
            "repository index reconciled: %d repositories, %d added, %d removed (%.1fs)",
            len(actual),
            added,
            len(removed),
            time.monotonic() - started,
        )
        return added, len(removed)


class IndexingDriver(DriverWrapper):
    """Keeps :class:`RepositoryIndex` up to date as manifests are written and deleted."""

    def __init__(self, inner: StorageDriver) -> None:
        super().__init__(inner)
        self.index = RepositoryIndex(inner)

    async def put_content(self, path: str, data: bytes) -> None:
        await self.inner.put_content(path, data)
        parsed = paths.parse(path)
        if parsed.area == "_manifests":
            await self.index.ensure(parsed.name)

    async def delete(self, path: str) -> None:
        try:
            await self.inner.delete(path)
        finally:
            with contextlib.suppress(StorageError):
                await self._deleted(path)

    async def _deleted(self, path: str) -> None:
        parsed = paths.parse(path)
        if parsed.area == "_manifests":
            await self.index.drop_if_gone(parsed.name)
        elif parsed.kind is paths.Kind.REPOSITORY_DIR:
            # A repository or a namespace directory, whole: its entries and those below it.
            await self.index.drop_below(parsed.name)
