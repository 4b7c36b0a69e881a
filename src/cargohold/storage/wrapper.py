"""A driver that forwards everything to another one: the base of the cache and index layers."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import AsyncIterator

from cargohold.storage.driver import D, FileInfo, FileWriter, StorageDriver


class DriverWrapper(StorageDriver):
    def __init__(self, inner: StorageDriver) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def identity(self) -> str:
        return self.inner.identity

    def layer(self, kind: type[D]) -> D | None:
        return self if isinstance(self, kind) else self.inner.layer(kind)

    async def stat(self, path: str) -> FileInfo:
        return await self.inner.stat(path)

    async def exists(self, path: str) -> bool:
        return await self.inner.exists(path)

    async def get_content(self, path: str) -> bytes:
        return await self.inner.get_content(path)

    async def put_content(self, path: str, data: bytes) -> None:
        await self.inner.put_content(path, data)

    def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        return self.inner.reader(path, offset)

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        return await self.inner.writer(path, append)

    async def list(self, path: str) -> builtins.list[str]:
        return await self.inner.list(path)

    async def list_after(self, path: str, after: str, limit: int) -> builtins.list[str]:
        return await self.inner.list_after(path, after, limit)

    async def move(self, source: str, dest: str) -> None:
        await self.inner.move(source, dest)

    async def delete(self, path: str) -> None:
        await self.inner.delete(path)

    def lock(self, path: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self.inner.lock(path)

    async def url_for(self, path: str, method: str = "GET") -> str | None:
        return await self.inner.url_for(path, method)

    def local_path(self, path: str) -> str | None:
        return self.inner.local_path(path)

    async def walk(self, path: str) -> builtins.list[FileInfo]:
        return await self.inner.walk(path)

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def close(self) -> None:
        await self.inner.close()
