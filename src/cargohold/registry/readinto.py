"""What an upload reads its bytes from: anything that can fill a buffer the upload supplies.

Uploads copy their bytes into pooled buffers (:mod:`.buffers`) and hash and write them from
there. A ``readinto``-shaped source lets the HTTP layer put a request body straight into such a
buffer when it can (:mod:`cargohold.api.socketbody`), with no pieces of its own in between; any
other source of bytes (aiohttp's stream, an image archive) is adapted with :class:`ChunkBody`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from cargohold.errors import ErrorCode, RegistryError


class Body(Protocol):
    async def readinto(self, view: memoryview) -> int:
        """Put the next bytes at the start of ``view``, at least one unless the body has ended
        (then 0), at most ``len(view)``; return how many."""
        ...


class ChunkBody:
    """A body that arrives as pieces of any size; each read copies out of the current piece."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._piece = memoryview(b"")

    async def readinto(self, view: memoryview) -> int:
        while not self._piece:
            try:
                self._piece = memoryview(await anext(self._chunks))
            except StopAsyncIteration:
                return 0
        n = min(len(view), len(self._piece))
        view[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n


class ExactBody:
    """``body``, failing with SIZE_INVALID as soon as it proves longer or shorter than the
    ``length`` a Content-Range declared, before any excess reaches the upload."""

    def __init__(self, body: Body, length: int) -> None:
        self._body = body
        self._length = length
        self._received = 0

    async def readinto(self, view: memoryview) -> int:
        left = self._length - self._received
        if left == 0:
            if await self._body.readinto(memoryview(bytearray(1))):
                raise RegistryError(
                    ErrorCode.SIZE_INVALID, f"chunk declared {self._length} bytes but more arrived"
                )
            return 0
        n = await self._body.readinto(view[:left])
        if n == 0:
            raise RegistryError(
                ErrorCode.SIZE_INVALID,
                f"chunk declared {self._length} bytes but {self._received} arrived",
            )
        self._received += n
        return n
