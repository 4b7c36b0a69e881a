"""registry:2's ``inmemory`` driver: everything in a dict, gone at exit.

Useful for trying cargohold out and for tests of the domain layer; it cannot be shared between
worker processes, so the server refuses ``--workers`` above 1 with it.
"""

from __future__ import annotations

import builtins
import heapq
import time
from collections.abc import AsyncIterator

from cargohold.storage.driver import (
    FileInfo,
    FileWriter,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
    check_path,
)

CHUNK = 1 << 20


class InMemoryDriver(StorageDriver):
    name = "inmemory"

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytearray, float]] = {}

    def _children(self, path: str) -> builtins.list[str]:
        prefix = path.rstrip("/") + "/"
        return [p for p in self.files if p.startswith(prefix)]

    async def stat(self, path: str) -> FileInfo:
        check_path(path)
        entry = self.files.get(path)
        if entry is not None:
            return FileInfo(path, len(entry[0]), entry[1], False)
        below = self._children(path)
        if not below:
            raise PathNotFoundError(path)
        return FileInfo(path, 0, max(self.files[p][1] for p in below), True)

    async def get_content(self, path: str) -> bytes:
        check_path(path)
        entry = self.files.get(path)
        if entry is None:
            raise PathNotFoundError(path)
        return bytes(entry[0])

    async def put_content(self, path: str, data: bytes) -> None:
        check_path(path)
        if self._children(path):
            raise InvalidPathError(path)
        self.files[path] = (bytearray(data), time.time())

    async def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        data = await self.get_content(path)
        for i in range(offset, len(data), CHUNK):
            yield data[i : i + CHUNK]

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        check_path(path)
        entry = self.files.get(path)
        if entry is None or not append:
            entry = (bytearray(), time.time())
            self.files[path] = entry
        return _MemoryWriter(self, path, entry[0])

    async def list(self, path: str) -> builtins.list[str]:
        check_path(path)
        below = self._children(path)
        if not below:
            raise PathNotFoundError(path)
        base = path.rstrip("/")
        return sorted({f"{base}/{p[len(base) + 1 :].split('/', 1)[0]}" for p in below})

    async def list_after(self, path: str, after: str, limit: int) -> builtins.list[str]:
        check_path(path)
        prefix = path.rstrip("/") + "/"
        names = (p[len(prefix) :] for p in self.files if p.startswith(prefix))
        return heapq.nsmallest(limit, (n for n in names if "/" not in n and n > after))

    async def move(self, source: str, dest: str) -> None:
        check_path(source)
        check_path(dest)
        entry = self.files.pop(source, None)
        if entry is None:
            raise PathNotFoundError(source)
        self.files[dest] = entry

    async def delete(self, path: str) -> None:
        check_path(path)
        doomed = self._children(path)
        if path in self.files:
            doomed.append(path)
        if not doomed:
            raise PathNotFoundError(path)
        for p in doomed:
            del self.files[p]


class _MemoryWriter(FileWriter):
    def __init__(self, driver: InMemoryDriver, path: str, buf: bytearray) -> None:
        self._driver = driver
        self._path = path
        self._buf = buf

    @property
    def size(self) -> int:
        return len(self._buf)

    async def write(self, data: bytes | memoryview) -> None:
        self._buf += data

    async def commit(self) -> None:
        return None

    async def truncate(self, size: int) -> None:
        del self._buf[size:]

    async def cancel(self) -> None:
        self._driver.files.pop(self._path, None)

    async def close(self) -> None:
        return None
