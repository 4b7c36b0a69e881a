"""A repository index, so that a catalog page of an object store costs one listing, not a walk.

On a filesystem the catalog is a local directory walk that stops when the page is full. On S3,
registry:2's definition of a repository — a directory under ``repositories/`` with a
``_manifests`` child — costs one listing request per directory, and even a flat walk of the
layout costs one request per 1000 *keys* (every tag, revision and layer link is one). cargohold
keeps an index next to the layout instead (see :mod:`cargohold.storage.paths`)::

    /docker/registry/v2/_cargohold/repository-index/<name, "/" written "!">   (empty)
    /docker/registry/v2/_cargohold/repository-index-built    (time of the last reconciliation)

The entries' names sort, byte by byte, in registry:2's catalog order (component by component:
``a/b`` before ``a-c``), so ``_catalog?n=100&last=X`` is one ``ListObjectsV2`` that starts after
X's entry (:meth:`StorageDriver.list_after`): what a page costs does not depend on how many
repositories there are, and no page skips or repeats a name. registry:2 never looks under
``_cargohold``, so the bucket stays usable by it.

Every replica keeps the index as it writes, with no coordination between replicas:

- writing a manifest's revision link, and each tag's last link, PUTs the repository's entry
  right after it (one PUT per manifest push, one more per tag). The PUT is idempotent, so
  replicas pushing at once need no lock; and it is not skipped when this process wrote the entry
  before, because another replica may have removed it since (the last manifest deleted there),
  which no process-local memory can know;
- deleting anything below ``_manifests`` removes the entry once the repository has no
  ``_manifests`` left, and then looks once more, putting the entry back if anything appeared
  meanwhile. Every write of a push has an entry PUT after it, so for each write the push makes
  either that second look sees it, or the push's next entry PUT comes after the removal: either
  way the entry stays while the repository has anything below ``_manifests``.

Repositories that appear by other means (a bucket written by registry:2, a copy) are found by
*reconciliation*: a flat walk of ``repositories/`` (one request per 1000 keys) that adds missing
entries and drops entries of repositories that are gone. It runs when a store has no index yet
— the first catalog request then answers from that walk while the entries are written in the
background; this is also how an index of the first layout (``_cargohold/catalog/<name>/
_repository``, whose key order was not the catalog's) is replaced and removed — and in the
background (one worker per replica), at most about once per :data:`RECONCILE_SECONDS` for all
the replicas of a store together: the marker holds when the last one ended.
"""

from __future__ import annotations

import asyncio
import bisect
import builtins
import contextlib
import logging
import time
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
LIST_CACHE_SECONDS = 2.0  # how long names() reuses the whole list it read (the web UI's)
LIST_PAGE = 1000  # names per listing request (S3's maximum)
WRITE_CONCURRENCY = 32
STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


async def scan_repositories(driver: StorageDriver, marker: str = "_manifests") -> list[str]:
    """Repositories with a ``marker`` child, from one flat walk of ``repositories/``."""
    names: set[str] = set()
    for info in await driver.walk(paths.REPOSITORIES):
        parsed = paths.parse_uncached(info.path)  # a whole-store walk: keep the cache for requests
        if parsed.area == marker:
            names.add(parsed.name)
    return sorted(names, key=order_key)


def _after(names: builtins.list[str], last: str | None) -> builtins.list[str]:
    """The part of ``names`` (in catalog order) after ``last``."""
    if not last:
        return names
    return names[bisect.bisect_right(names, order_key(last), key=order_key) :]


class RepositoryIndex:
    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._built = False
        self._lock = asyncio.Lock()
        self._listed: tuple[float, builtins.list[str]] | None = None
        self._building: asyncio.Task[None] | None = None
        # While the index is being built: the walk's answer, kept current with this process's
        # own pushes and deletes, and what was deleted since the walk (not to be added back).
        self._scanned: builtins.list[str] = []
        self._dropped: set[str] = set()

    # -- kept on push and delete --------------------------------------------------------------

    async def ensure(self, name: str) -> None:
        """Index ``name`` (its revision was just written). A failure fails the push: the client
        retries it, rather than be told "stored" for a repository the catalog would not list."""
        await self.driver.put_content(paths.catalog_entry(name), b"")
        self._listed = None
        self._dropped.discard(name)
        if self._building is not None and name not in self._scanned:
            bisect.insort(self._scanned, name, key=order_key)

    async def _has_manifests(self, name: str) -> bool:
        return await self.driver.exists(paths.manifests(name))

    async def drop_if_gone(self, name: str) -> None:
        if await self._has_manifests(name):
            return
        self._listed = None
        self._dropped.add(name)
        self._scanned = [n for n in self._scanned if n != name]
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.catalog_entry(name))
        if await self._has_manifests(name):  # pushed (on any replica) since the first look
            await self.ensure(name)

    async def drop_below(self, prefix: str) -> None:
        """Forget ``prefix`` and every repository below it (their directory was deleted)."""
        self._listed = None
        self._scanned = [n for n in self._scanned if n != prefix and not n.startswith(prefix + "/")]
        key = paths.catalog_key(prefix)
        below = key + paths.CATALOG_SEPARATOR  # these entries follow ``key`` directly
        doomed = [key]
        after = key
        while True:
            batch = await self.driver.list_after(INDEX_ROOT, after, LIST_PAGE)
            doomed += [k for k in batch if k.startswith(below)]
            if len(batch) < LIST_PAGE or not batch[-1].startswith(below):
                break
            after = batch[-1]

        async def drop(k: str) -> None:
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(f"{INDEX_ROOT}/{k}")

        await self._each(doomed, drop)

    # -- reading ------------------------------------------------------------------------------

    async def _ready(self) -> bool:
        """Whether the index can answer; if not, :attr:`_scanned` answers (from a walk of the
        layout) while it is being built, which this call starts when nobody has."""
        if self._built:
            return True
        if self._building is not None:
            return False
        async with self._lock:
            if self._built:
                return True
            if self._building is not None:
                return False
            if await self.driver.exists(BUILT_MARKER):
                self._built = True
                return True
            log.info("indexing the repositories of this store (first catalog request)")
            self._dropped.clear()
            self._scanned = await scan_repositories(self.driver)
            self._building = asyncio.create_task(self._build(list(self._scanned)))
            return False

    async def page(self, last: str | None, limit: int) -> builtins.list[str]:
        """Up to ``limit`` repositories after ``last``, in catalog order: one listing request
        for up to 1000, wherever ``last`` is."""
        if not await self._ready():
            return _after(self._scanned, last)[:limit]
        after = paths.catalog_key(last) if last else ""
        out: builtins.list[str] = []
        while (want := limit - len(out)) > 0:
            keys = await self.driver.list_after(INDEX_ROOT, after, want)
            out += [n for n in map(paths.catalog_name, keys) if n is not None]
            if len(keys) < want:
                break
            after = keys[-1]
        return out

    async def _indexed(self) -> builtins.list[str]:
        entries = [paths.parse_uncached(info.path) for info in await self.driver.walk(INDEX_ROOT)]
        return [p.name for p in entries if p.kind is paths.Kind.CATALOG_ENTRY]

    async def names(self) -> builtins.list[str]:
        """Every indexed repository, in catalog order (one listing per 1000 of them)."""
        listed = self._listed
        if listed is not None and time.monotonic() - listed[0] < LIST_CACHE_SECONDS:
            return listed[1]
        if not await self._ready():
            return self._scanned
        names = sorted(await self._indexed(), key=order_key)
        self._listed = (time.monotonic(), names)
        return names

    # -- reconciliation -----------------------------------------------------------------------

    async def _build(self, scanned: builtins.list[str]) -> None:
        try:
            await self.reconcile(scanned)
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

    async def _last_reconciled(self) -> float | None:
        """When the last reconciliation (by any replica) ended, by the marker's stamp."""
        try:
            stamp = (await self.driver.get_content(BUILT_MARKER)).decode()
            return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC).timestamp()
        except (PathNotFoundError, UnicodeDecodeError, ValueError):
            return None

    async def reconcile_if_due(self) -> tuple[int, int] | None:
        """:meth:`reconcile` unless some replica did within the last 0.9 * RECONCILE_SECONDS
        (so N replicas do not walk the bucket N times as often); None when skipped."""
        building = self._building
        if building is not None:
            await asyncio.shield(building)
            return None
        at = await self._last_reconciled()
        if at is not None and time.time() - at < 0.9 * RECONCILE_SECONDS:
            return None
        return await self.reconcile()

    async def reconcile(self, scanned: builtins.list[str] | None = None) -> tuple[int, int]:
        """Make the index match the layout; returns (entries added, entries removed).
        ``scanned``: the layout's repositories from a walk that began after :attr:`_dropped`
        was last cleared (the first catalog request's), so as not to walk twice."""
        started = time.monotonic()
        if scanned is None:
            self._dropped.clear()
            scanned = await scan_repositories(self.driver)
        actual = set(scanned)
        indexed = set(await self._indexed())
        missing, extra = sorted(actual - indexed), sorted(indexed - actual)
        removed: builtins.list[str] = []

        async def add(name: str) -> None:
            if name in self._dropped:  # its last manifest was deleted since the walk
                return
            await self.driver.put_content(paths.catalog_entry(name), b"")

        async def drop(name: str) -> None:
            if await self._has_manifests(name):  # pushed since the walk began
                return
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.catalog_entry(name))
            if await self._has_manifests(name):  # as in drop_if_gone: pushed meanwhile
                await self.driver.put_content(paths.catalog_entry(name), b"")
            else:
                removed.append(name)

        await self._each(missing, add)
        await self._each(extra, drop)
        for legacy in (paths.LEGACY_CATALOG, paths.LEGACY_CATALOG_BUILT):
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(legacy)  # the first index's keys, replaced by these
        stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
        await self.driver.put_content(BUILT_MARKER, stamp.encode())
        self._built = True
        self._listed = None
        log.info(
            "repository index reconciled: %d repositories, %d added, %d removed (%.1fs)",
            len(actual),
            len(missing),
            len(removed),
            time.monotonic() - started,
        )
        return len(missing), len(removed)


# The writes a push makes below ``_manifests`` end with one of these: a revision link, or a
# tag's index link (always written right after its current link). An entry PUT after each
# means every write of a push has one after it, which is what the removal's second look needs.
_INDEXED_AFTER = frozenset({paths.Kind.REVISION_LINK, paths.Kind.TAG_INDEX_LINK})


class IndexingDriver(DriverWrapper):
    """Keeps :class:`RepositoryIndex` up to date as manifests are written and deleted."""

    def __init__(self, inner: StorageDriver) -> None:
        super().__init__(inner)
        self.index = RepositoryIndex(inner)

    async def put_content(self, path: str, data: bytes) -> None:
        await self.inner.put_content(path, data)
        parsed = paths.parse(path)
        if parsed.kind in _INDEXED_AFTER:
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
