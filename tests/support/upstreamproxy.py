"""A small HTTP proxy put in front of a mirror's upstream, to see and shape what it is asked.

It forwards every request to ``target`` and records ``(method, path)`` of each, so a test can
assert exactly how many upstream requests a mirror made. A test can also make it

- ``corrupt`` the body of a path (one byte flipped, same length);
- ``gate`` a path: send the first ``gate_bytes`` of its body, then hold the rest until the test
  calls :meth:`release` (the deterministic form of a slow upstream: a test can check that a
  client got bytes before the upstream finished, without any timing);
- ``down``: answer every request by closing the connection;
- ``fail_next``: answer the next requests of a path with given statuses (429, 503...);
- ``stall``: hold the requests of a path until :meth:`release` (a hung upstream);
- ``stall_body``: send the status, the headers and half the body of a path, then hold the rest
  until :meth:`release` (an upstream that hangs mid-body);
- ``cut_body``: send the status, the headers and half the body of a path, then close the
  connection (a connection reset mid-body).

Runs an aiohttp server on its own event loop in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

import aiohttp
from aiohttp import web

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


class UpstreamProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.requests: list[tuple[str, str]] = []
        self.answers: list[tuple[str, str, int]] = []  # (method, path, status) as answered
        self.corrupt: set[str] = set()
        self.gates: dict[str, threading.Event] = {}
        self.gate_bytes = 256 * 1024
        self.down = False
        # path part -> statuses to answer (one per request, in order) before forwarding again
        self.fail_next: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.stall: set[str] = set()  # path parts answered only after release() (or 60 s)
        self.stall_body: set[str] = set()  # path parts whose body stops halfway until release()
        self.cut_body: set[str] = set()  # path parts whose connection closes halfway the body
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def count(self, method: str, path_part: str = "", status: int | None = None) -> int:
        """Requests of ``method`` whose path contains ``path_part`` (answered ``status``)."""
        with self._lock:
            if status is None:
                return sum(1 for m, p in self.requests if m == method and path_part in p)
            return sum(
                1 for m, p, s in self.answers if m == method and path_part in p and s == status
            )

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.answers.clear()

    def _answered(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.answers.append((method, path, status))

    def gate(self, path_part: str) -> threading.Event:
        event = threading.Event()
        self.gates[path_part] = event
        return event

    def release(self) -> None:
        for event in self.gates.values():
            event.set()
        self._released.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> UpstreamProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ forwarding
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path_qs
        with self._lock:
            self.requests.append((request.method, path))
        if self.down:
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("upstream is down")
        for part, answers in self.fail_next.items():
            if part in path and answers:
                status, extra = answers.pop(0)
                self._answered(request.method, path, status)
                return web.Response(status=status, headers=extra, text="injected by the test")
        if any(part in path for part in self.stall):
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self._released.wait, 60)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.target + path,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            self._answered(request.method, path, upstream.status)
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            response = web.StreamResponse(status=upstream.status, headers=out_headers)
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            if any(p in path for p in self.stall_body | self.cut_body):
                return await self._half_body(request, response, await upstream.read(), path)
            corrupt = any(p in path for p in self.corrupt)
            gate = next((e for p, e in self.gates.items() if p in path), None)
            sent = 0
            async for chunk in upstream.content.iter_chunked(64 * 1024):
                if corrupt and sent == 0 and chunk:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if gate is not None and sent >= self.gate_bytes and not gate.is_set():
                    await asyncio.get_running_loop().run_in_executor(None, gate.wait, 120)
                await response.write(chunk)
                sent += len(chunk)
            await response.write_eof()
            return response

    async def _half_body(
        self, request: web.Request, response: web.StreamResponse, body: bytes, path: str
    ) -> web.StreamResponse:
        """Half of ``body`` (headers, Content-Length included, are out), then a stall or a cut."""
        await response.write(body[: max(len(body) // 2, 1)])
        if any(p in path for p in self.cut_body):
            assert request.transport is not None
            request.transport.abort()
            raise ConnectionResetError("the test cut the body")
        await asyncio.get_running_loop().run_in_executor(None, self._released.wait, 60)
        await response.write(body[max(len(body) // 2, 1) :])
        await response.write_eof()
        return response


def counted(proxy: UpstreamProxy) -> dict[tuple[str, str], int]:
    with proxy._lock:
        return dict(collections.Counter(proxy.requests))
