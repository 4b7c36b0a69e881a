"""Blobs: one content-addressed store shared by all repositories, seen through per-repo links.

A repository can only read a blob it links to in its ``_layers`` directory, exactly as in
registry:2; that is what keeps one tenant from fetching another's layers by guessing digests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

if TYPE_CHECKING:
    from cargohold.registry.gc import Fence
    from cargohold.registry.quota import Quotas

EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = Digest("sha256", hashlib.sha256(EMPTY_JSON).hexdigest())


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob as a repository sees it; ``local_path`` is the file behind it when the driver
    has one, for sendfile."""

    digest: Digest
    size: int
    local_path: str | None


class BlobStore:
    fence: Fence | None = None  # set while serving: online garbage collection's writer side

    def __init__(self, driver: StorageDriver, quotas: Quotas | None = None) -> None:
        self.driver = driver
        self.quotas = quotas

    async def charge(self, name: str, held: list[tuple[Digest, int]]) -> None:
        """Count blobs against ``name``'s quotas before linking them (DENIED when over)."""
        if self.quotas is not None:
            await self.quotas.charge(name, held)

    async def release(self, name: str, digests: list[Digest]) -> None:
        if self.quotas is not None:
            await self.quotas.release(name, digests)

    async def stat(self, digest: Digest) -> int | None:
        """Size of the blob in the global store, or None."""
        try:
            return (await self.driver.stat(paths.blob_data(digest))).size
        except PathNotFoundError:
            return None

    async def is_linked(self, name: str, digest: Digest) -> bool:
        try:  # stat, not exists: the blob descriptor cache answers stat
            await self.driver.stat(paths.layer_link(name, digest))
        except PathNotFoundError:
            return False
        return True

    async def describe(self, name: str, digest: Digest) -> BlobInfo:
        """The blob as repository ``name`` sees it; BLOB_UNKNOWN unless linked *and* present."""
        if not await self.is_linked(name, digest):
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)})
        data_path = paths.blob_data(digest)
        try:
            info = await self.driver.stat(data_path)
        except PathNotFoundError:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)}) from None
        return BlobInfo(digest, info.size, self.driver.local_path(data_path))

    async def redirect_url(self, digest: Digest) -> str | None:
        """Where a client may fetch the blob straight from the storage (an S3 presigned URL),
        or None when the bytes must come through us (the filesystem)."""
        return await self.driver.url_for(paths.blob_data(digest))

    def read(self, digest: Digest, offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset`` on, for drivers with no local file to sendfile
        (:attr:`BlobInfo.local_path`)."""
        return self.driver.reader(paths.blob_data(digest), offset)

    async def link(self, name: str, digest: Digest) -> None:
        await self.driver.put_content(paths.layer_link(name, digest), str(digest).encode())

    async def unlink(self, name: str, digest: Digest) -> None:
        try:
            await self.driver.delete(f"{paths.layers(name)}/{digest.algorithm}/{digest.hex}")
        except PathNotFoundError:
            raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)}) from None
        await self.release(name, [digest])

    async def get(self, digest: Digest) -> bytes:
        return await self.driver.get_content(paths.blob_data(digest))

    async def put(self, data: bytes, algorithm: str = "sha256") -> Digest:
        """Store small content (manifests) by digest; writing identical bytes twice is harmless."""
        digest = Digest.of(data, algorithm)
        path = paths.blob_data(digest)
        try:
            info = await self.driver.stat(path)
            if info.size == len(data):
                return digest
        except PathNotFoundError:
            pass
        await self.driver.put_content(path, data)
        return digest

    async def mount(self, name: str, source: str, digest: Digest) -> BlobInfo | None:
        """Cross-repository mount: link ``digest`` into ``name`` if ``source`` has it."""
        if not await self.is_linked(source, digest):
            return None
        if self.fence is not None:
            await self.fence.guard([digest], name)
        size = await self.stat(digest)
        if size is None:
            return None
        await self.charge(name, [(digest, size)])
        await self.link(name, digest)
        return BlobInfo(digest, size, None)

    def refresh(self, digest: Digest) -> None:
        """A blob pushed again counts as new for garbage collection's grace period."""
        local = self.driver.local_path(paths.blob_data(digest))
        if local is not None:
            with contextlib.suppress(OSError):
                os.utime(local)

    async def ensure_empty_json(self, name: str) -> None:
        """The OCI empty descriptor's ``{}``: created on demand so artifacts never miss it."""
        if await self.stat(EMPTY_JSON_DIGEST) is None:
            await self.put(EMPTY_JSON)
        await self.link(name, EMPTY_JSON_DIGEST)
