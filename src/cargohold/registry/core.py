"""The registry as one object: the stores wired to one driver and the config's policies.

The HTTP layer holds a single :class:`Registry` and asks it for everything; policies that
registry:2 keeps in its config (deletes allowed, read-only mode) are enforced here so that every
entry point (HTTP today, tools tomorrow) obeys them alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cargohold.config import Config
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry import blobcache
from cargohold.registry.blobs import BlobStore
from cargohold.registry.catalog import list_repositories, page_local
from cargohold.registry.governance import Governance
from cargohold.registry.integrity import BlobVerifier
from cargohold.registry.manifests import ManifestStore
from cargohold.registry.quota import Quotas
from cargohold.registry.repoindex import scan_repositories
from cargohold.registry.scaleout import HealthCheck, layer_driver
from cargohold.registry.uploads import UploadManager
from cargohold.storage.driver import StorageDriver
from cargohold.storage.filesystem import FilesystemDriver
from cargohold.storage.inmemory import InMemoryDriver

FILTERED_STEP = 1000  # repositories read per step of an access-filtered catalog page
FILTERED_SCAN = 10_000  # repositories an access-filtered catalog page reads at most (see below)
LOCAL_WALKS = 2  # catalog walks of a local store one worker runs at once (see _page_reader)


@dataclass(frozen=True, slots=True)
class FilteredPage:
    """A page of the repositories a caller may see; ``stopped_at``: the scan reached its bound
    there before the page was full, so more may follow it (a name the caller may not see)."""

    names: list[str]
    stopped_at: str | None = None


def make_driver(name: str, params: dict[str, Any], redirect_expiry: float = 0.0) -> StorageDriver:
    """``redirect_expiry`` (``storage.redirect.expirydelay``): how long a redirect URL is valid,
    for the drivers that redirect (S3); 0 keeps the driver's default."""
    if name == "filesystem":
        return FilesystemDriver.from_params(params)
    if name == "inmemory":
        return InMemoryDriver()
    if name == "s3":
        from cargohold.storage.s3 import S3Driver

        return S3Driver.from_params(params, redirect_expiry)
    raise RegistryError(ErrorCode.UNSUPPORTED, f"storage driver {name!r} is not supported yet")


class Registry:
    def __init__(self, config: Config, driver: StorageDriver | None = None) -> None:
        self.config = config
        self._local_walks = asyncio.Semaphore(LOCAL_WALKS)
        # Cache and repository index layered over the driver (see registry/scaleout.py).
        self.layers = layer_driver(
            config,
            driver
            or make_driver(
                config.storage.driver,
                config.storage.params,
                config.storage.redirect_expirydelay,
            ),
        )
        self.driver = self.layers.driver
        self.health = HealthCheck(self.layers)
        # The rules that may change while serving (cargohold.reload), read per request.
        self.governance = Governance(config)
        self.quotas = Quotas(self.governance, self.driver, config.redis)
        self.quotas.check_supported()
        self.blobs = BlobStore(self.driver, self.quotas)
        self.uploads = UploadManager(self.driver, self.blobs)
        self.manifests = ManifestStore(self.driver, self.blobs, config.validation, self.governance)
        self.verifier = BlobVerifier()  # blob files hashed once per process (integrity.py)
        self.blobcache = blobcache.from_config(config.storage)  # S3 blobs on local disk

    @property
    def delete_enabled(self) -> bool:
        return self.config.storage.delete_enabled

    def require_delete(self) -> None:
        if not self.config.storage.delete_enabled:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deletes are disabled on this registry (storage.delete.enabled is false)",
            )

    def require_writable(self) -> None:
        if self.config.storage.readonly:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "the registry is in read-only mode (storage.maintenance.readonly)",
            )

    async def repositories(self) -> list[str]:
        if self.layers.index is not None:
            return await self.layers.index.names()
        async with self._local_walks:  # a whole walk: bounded like the pages' (_page_reader)
            return await list_repositories(self.layers.base)

    async def repositories_page(
        self,
        last: str | None,
        limit: int,
        visible: Callable[[list[str]], list[str]] | None = None,
    ) -> list[str] | None:
        """Up to ``limit`` repositories after ``last``, read only as far as the page needs: one
        listing of the repository index (object stores), or a walk of a local directory that
        stops when the page is full (in the driver's threads: even a page may pass many
        directories that sort before ``last``). None for drivers with neither (in-memory): the
        caller then pages :meth:`repositories`.

        ``visible`` (an access policy) keeps the repositories the caller may see: the index or
        the walk is then read in steps of :data:`FILTERED_STEP` until the page is full or
        nothing is left, so a user who may pull a few repositories of 100,000 costs more than
        one listing only where their repositories are sparse."""
        if visible is None:
            fetch = self._page_reader()
            return None if fetch is None else await fetch(last, limit)
        page = await self.filtered_page(last, limit, visible)
        return None if page is None else page.names

    async def filtered_page(
        self,
        last: str | None,
        limit: int,
        visible: Callable[[list[str]], list[str]],
        scan_limit: int | None = None,
        stop_empty: bool = False,
    ) -> FilteredPage | None:
        """:meth:`repositories_page` with an access policy, reading at most about
        ``scan_limit`` repositories (None: to the end if need be) before it stops with a short
        page and :attr:`FilteredPage.stopped_at`. It stops so only with at least one name to
        show, or when ``stop_empty`` (the caller resumes from ``stopped_at`` itself): a client
        that continues after the last name shown then always gets further."""
        fetch = self._page_reader()
        if fetch is None:
            return None
        found: list[str] = []
        step = max(limit, FILTERED_STEP)
        scanned = 0
        while len(found) < limit:
            batch = await fetch(last, step)
            found += visible(batch)
            if len(batch) < step:
                break
            last = batch[-1]
            scanned += len(batch)
            bounded = scan_limit is not None and scanned >= scan_limit
            if bounded and len(found) < limit and (found or stop_empty):
                return FilteredPage(found, last)
        return FilteredPage(found[:limit])

    def _page_reader(self) -> Callable[[str | None, int], Awaitable[list[str]]] | None:
        """Reads up to n repositories after a name, as far as that needs; None: no such reader
        (in-memory).

        A local walk runs in the driver's threads, at most :data:`LOCAL_WALKS` at once per
        worker: under the GIL more of them at once are no faster, but each holds a directory's
        names for as long as it runs, and a burst of pages (16 at once in the bench) would
        otherwise grow the thread pool and leave the burst's peak in the worker's heap."""
        index, base = self.layers.index, self.layers.base
        fetch: Callable[[str | None, int], Awaitable[list[str]]]
        if index is not None:
            fetch = index.page
        elif isinstance(base, FilesystemDriver):

            async def fetch(after: str | None, n: int) -> list[str]:
                async with self._local_walks:
                    return await base.run_blocking(page_local, base, after, n)

        else:
            return None
        return fetch

    async def purge_uploads(self) -> int:
        purging = self.config.storage.purging
        if self.layers.index is not None:  # one flat listing instead of a directory walk
            with_uploads = await scan_repositories(self.driver, marker="_uploads")
        else:
            with_uploads = await list_repositories(self.layers.base, marker="_uploads")
        return await self.uploads.purge(with_uploads, purging.age, purging.dryrun)

    async def reconcile_catalog(self) -> None:
        """Bring the repository index in line with the layout, unless a replica just did (no-op
        without an index)."""
        if self.layers.index is not None:
            await self.layers.index.reconcile_if_due()

    async def close(self) -> None:
        await self.quotas.close()
        await self.driver.close()
