"""The buffers that upload bodies are hashed and written from, shared by every upload of a process.

An upload hands its bytes to worker threads about a megabyte at a time, so that the thread hop
is paid rarely while the next buffer is being received. Letting each upload gather its bytes in
memory of its own made fifty concurrent uploads cost ~100 MiB per worker (and the heap kept
it afterwards). A fixed set of reusable buffers bounds that memory however many uploads arrive:
when all are busy, an upload waits for one and meanwhile stops reading its socket, so the
kernel's flow control slows that client down instead of this process growing.

The size is deliberately not a multiple of the page size. With buffers of exactly 1 MiB every
write to the upload file was page-aligned, and on this project's test VMs (Linux 6.18) the
kernel's copy into the page cache (``copy_folio_from_iter_atomic``) became ten times slower
from the second 1 GiB upload on (2 ms per write instead of 0.2 ms; 800 -> 250 MB/s). With
unaligned sizes, as the previous code's arbitrary ones, that happened only once several GiB
were cached, which the benchmark now avoids.

An upload keeps a partly filled buffer while it waits for more of its body only while nobody
else wants one (see :meth:`BufferPool.contended`); when someone does, it hands the buffer to the
threads once it holds a quarter of a megabyte (``uploads.HAND_ON``). A client that goes quiet
while holding one can still delay others, so a wait longer than ``PATIENCE`` seconds gets an
extra buffer, dropped again when returned: slow clients cost a little memory, never a stall.
"""

from __future__ import annotations

import asyncio
import collections

BUFFER_SIZE = 1_000_000  # not a multiple of the page size: see above
POOL_BUFFERS = 4  # per process: 4 MB at most; two uploads hashing and two filling
PATIENCE = 1.0


class BufferPool:
    """``count`` bytearrays of ``size`` bytes, made on first need and then reused."""

    def __init__(
        self, count: int = POOL_BUFFERS, size: int = BUFFER_SIZE, patience: float = PATIENCE
    ) -> None:
        self.size = size
        self.count = count
        self.patience = patience
        self._made = 0
        self._free: list[bytearray] = []
        self._taken = False  # since the last shrink()
        self._waiters: collections.deque[asyncio.Future[bytearray]] = collections.deque()

    async def acquire(self) -> bytearray:
        self._taken = True
        if self._free:
            return self._free.pop()
        if self._made < self.count:
            self._made += 1
            return bytearray(self.size)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bytearray] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.patience, self._extra, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Handed a buffer just as the wait was cancelled: pass it on, do not lose it.
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())
            raise
        finally:
            timer.cancel()

    def _extra(self, waiter: asyncio.Future[bytearray]) -> None:
        """The wait ran out of patience: an extra buffer, dropped again on release."""
        if not waiter.done():
            self._made += 1
            waiter.set_result(bytearray(self.size))

    def release(self, buf: bytearray) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(buf)
                return
        if self._made > self.count:
            self._made -= 1  # an extra buffer from an impatient wait: let it go
        else:
            self._free.append(buf)

    def shrink(self) -> int:
        """Let the free buffers go when none was taken since the last call (the memory upkeep
        calls it every 30 s): a worker that receives no uploads holds none of these megabytes,
        and the next upload makes them again. Returns how many went."""
        if self._taken:
            self._taken = False
            return 0
        dropped = len(self._free)
        self._made -= dropped
        self._free.clear()
        return dropped

    @property
    def contended(self) -> bool:
        """Somebody is waiting for a buffer: do not sit on a half-filled one."""
        return any(not w.done() for w in self._waiters)

    @property
    def idle(self) -> int:
        """Buffers made and not in use (for tests: every buffer must come back)."""
        return len(self._free)

    @property
    def made(self) -> int:
        return self._made
