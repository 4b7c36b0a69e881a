"""Upload bodies off the connection: straight into the upload's buffers when the size is known.

aiohttp hands a body over as pieces of its own: each read of the socket is a new ``bytes``, the
parser copies the body part into another, and the upload copies that into its pooled buffer.
While an upload waits for a buffer its connection keeps what it has received, up to aiohttp's
high-water mark plus one read: with 50 concurrent uploads that was most of the peak memory.

The body of a ``PUT`` that completes an upload, with a ``Content-Length`` of at least
:data:`DIRECT_MIN`, is instead read by :class:`SocketBody`: it takes what aiohttp had already
received, then puts the connection's transport in the hands of a small
:class:`asyncio.BufferedProtocol` that receives the rest straight into the buffer the upload
supplies (``recv_into``), one copy in all. Between reads the transport is paused, so a waiting
upload holds nothing: its bytes wait in the kernel and TCP slows its client down. The protocol
passes everything else (write flow control, EOF, loss of the connection) on to aiohttp's.

aiohttp's parser never sees those bytes, so the connection cannot carry another request: such
responses say ``Connection: close`` and aiohttp closes it after the response. That is why only
a body that completes its upload (the ``PUT``) is read this way: the upload is over, and a new
connection for the next one is nothing next to a megabyte. A ``PATCH`` keeps its connection, so
that the next chunk reaches the worker that holds the upload's running hash; a new connection
may land on another worker, which must first re-hash everything received so far (measured:
16 MiB chunks went from ~740 to 100-270 MB/s when each ``PATCH`` closed its connection).
Smaller bodies and chunked ones (docker's) go through aiohttp too (:func:`request_body`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from cargohold.registry.readinto import Body, ChunkBody

# How much of a body a connection reads off its socket at a time (asyncio's default is 256 KiB),
# and (half of it) how much aiohttp buffers before it stops reading.
READ_SIZE: Final = 64 * 1024
DIRECT_MIN: Final = 1024 * 1024
_SPENT: Final = web.RequestKey("body_read_off_the_connection", bool)


def request_body(request: web.Request, *, final: bool = False) -> Body:
    """The request's body; ``final`` when it completes the upload (the ``PUT``), the only case
    where it may be read off the connection (see the module doc)."""
    length = request.content_length
    if (
        final
        and length is not None
        and length >= DIRECT_MIN
        and "Transfer-Encoding" not in request.headers
        and request.transport is not None
    ):
        return SocketBody(request, length)
    return ChunkBody(_pieces(request))


def close_if_spent(request: web.Request, response: web.StreamResponse) -> None:
    """A connection whose body bypassed aiohttp's parser ends with this response."""
    # (The length first: a Request is a Python-level Mapping, and .get() on it is not cheap.)
    if (request.content_length or 0) >= DIRECT_MIN and request.get(_SPENT):
        response.force_close()


async def _pieces(request: web.Request) -> AsyncIterator[bytes]:
    """The body as aiohttp received it, piece by piece (``iter_any`` would join everything it
    has buffered into one new object per read)."""
    transport = request.transport
    if transport is not None and hasattr(transport, "max_size"):
        # asyncio's selector transports read 256 KiB at a time, which a waiting upload keeps.
        transport.max_size = READ_SIZE
    content = request.content
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if chunk:
            yield chunk
        elif not end_of_http_chunk:  # (b"", True) only marks a chunk boundary
            return


class SocketBody:
    """A ``Content-Length`` body received straight into the caller's buffers (see above).

    The connection is taken over only at the first read, so a request refused before its body
    is read (a stale ``Content-Range``, say) leaves aiohttp in charge of the connection."""

    def __init__(self, request: web.Request, length: int) -> None:
        self._request = request
        self._length = length
        self._early: memoryview | None = None  # what aiohttp had received before the first read
        self._receiver: _Receiver | None = None

    async def readinto(self, view: memoryview) -> int:
        if self._early is None:
            self._take_over()
            assert self._early is not None
        if self._early:
            n = min(len(view), len(self._early))
            view[:n] = self._early[:n]
            self._early = self._early[n:]
            return n
        if self._receiver is None:
            return 0  # aiohttp had received all of it
        return await self._receiver.readinto(view)

    def _take_over(self) -> None:
        request = self._request
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the client went away")
        # All in one step of the event loop: nothing can arrive between these lines.
        early = request.content.read_nowait(-1)
        self._early = memoryview(early)
        remaining = self._length - len(early)
        if remaining <= 0:
            return
        request.content.feed_eof()  # aiohttp's view of this body ends here: no lingering on it
        request[_SPENT] = True
        request.protocol.close()  # after this response
        self._receiver = _Receiver(transport, request.protocol, remaining)


class _Receiver(asyncio.BufferedProtocol):
    """Stands in for aiohttp's protocol on a connection whose body :class:`SocketBody` reads.

    Reading is resumed only while a read waits for bytes, and into that read's buffer only."""

    def __init__(self, transport: asyncio.Transport, handler: Any, remaining: int) -> None:
        self._transport = transport
        self._handler = handler  # aiohttp's protocol: everything but the reading goes to it
        self._remaining = remaining
        self._target: memoryview | None = None
        self._got = 0
        self._spare = bytearray()
        self._spilled = bytearray()  # received while no read waited (see get_buffer)
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        transport.pause_reading()
        transport.set_protocol(self)

    async def readinto(self, view: memoryview) -> int:
        if self._spilled:
            n = min(len(view), len(self._spilled))
            view[:n] = self._spilled[:n]
            del self._spilled[:n]
            return n
        if self._remaining == 0:
            return 0
        if self._error is not None:
            raise self._error
        self._target, self._got = view, 0
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.resume_reading()
        try:
            await self._waiter
        finally:
            self._target = self._waiter = None
            self._transport.pause_reading()
        if self._got == 0 and self._error is not None:
            raise self._error
        return self._got

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- asyncio.BufferedProtocol: called by the transport -----------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:  # only set while some of the body is still to come
            return self._target[: self._remaining]
        # Reading resumed by somebody else (aiohttp's flow control): keep it, stop again.
        self._spare = bytearray(READ_SIZE)
        return memoryview(self._spare)

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is None:
            kept = min(nbytes, self._remaining)  # anything past the body is not ours to keep
            self._spilled += self._spare[:kept]
            self._remaining -= kept
            self._transport.pause_reading()
            return
        self._remaining -= nbytes
        self._got += nbytes
        self._target = self._target[nbytes:]
        if not self._target or self._remaining == 0:
            self._target = None
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        if self._remaining:
            self._error = ConnectionResetError("the client closed before the body ended")
            self._wake()
        return self._handler.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._remaining and self._error is None:
            self._error = ConnectionResetError("the client went away before the body ended")
        self._wake()
        self._handler.connection_lost(exc)

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()
