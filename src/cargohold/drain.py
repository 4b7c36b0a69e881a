"""Graceful shutdown: let the requests in flight finish before a replica exits.

aiohttp's own shutdown cannot do it for uploads: it marks every connection closing, and a
closing connection drops whatever body bytes arrive after that (``RequestHandler.data_received``
returns early), so a ``PATCH`` in flight would starve until the timeout and be cut. Instead the
server counts requests itself (:meth:`Drain.middleware`, outermost), and on SIGTERM closes the
listening socket and waits for the count to reach zero, for at most registry:2's
``http.draintimeout``; only then does aiohttp close the connections. A request that arrives on a
kept-alive connection meanwhile is served, with ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Drain:
    def __init__(self) -> None:
        self.draining = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self._in_flight += 1
        self._idle.clear()
        try:
            response = await handler(request)
            if self.draining:
                response.force_close()
            return response
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def wait(self, timeout: float) -> bool:
        """True once no request is in flight, False if ``timeout`` seconds passed first."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self._in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:  # (_idle is clear: the middleware clears it whenever the count is above 0)
                await asyncio.wait_for(self._idle.wait(), left)
            except TimeoutError:
                return self._in_flight == 0
        return True
