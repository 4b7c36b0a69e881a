"""A fault-injecting S3 reverse proxy: real HTTP on loopback between cargohold and moto.

It forwards every request unchanged (the ``Host`` header included, so SigV4 signatures made for
the proxy's address still hold) and counts them. A test can tell it to answer the next ``n``
requests, or every request until healed, with a 500 ``InternalError`` or a 503 ``SlowDown``
(S3's XML error, as AWS sends it), without forwarding them; or *stall* them: accept the request
and then send nothing (``stall("headers")``), or forward it and send the answer's headers and
half its body, then nothing more (``stall("body")``), until healed, when the stalled connections
are dropped. Runs its own event loop in a thread of the test process, so tests drive it with
plain method calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from .servers import free_port
from .stores import MotoServer, S3Endpoint

_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"}
)
_CODES = {500: "InternalError", 503: "SlowDown"}


@dataclass
class Seen:
    method: str
    path_qs: str
    faulted: bool


class FaultProxy(S3Endpoint):
    def __init__(self, upstream: S3Endpoint) -> None:
        self.upstream = upstream
        self.access_key = upstream.access_key
        self.secret_key = upstream.secret_key
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._failures = 0  # > 0: that many more; -1: until healed
        self._status = 503
        self._stall: str | None = None  # None: answer with _status; "headers" / "body": stall
        self._match = ""  # only requests whose path contains this are faulted
        self._released: asyncio.Event | None = None  # set on heal: stalled handlers give up
        self.stalled = 0  # requests stalled so far
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- control (from the test's thread) ------------------------------------------------------

    def fail(self, count: int = -1, status: int = 503) -> None:
        """Answer the next ``count`` requests (every one while ``count`` is -1) with ``status``."""
        with self._lock:
            self._failures, self._status, self._stall, self._match = count, status, None, ""

    def stall(self, where: str = "headers", count: int = -1, match: str = "") -> None:
        """Stall the next ``count`` requests (every one while -1) whose path contains ``match``
        (a registry's background listings then pass): ``"headers"`` sends nothing at all,
        ``"body"`` sends the upstream's headers and the first half of its body."""
        assert where in ("headers", "body"), where
        with self._lock:
            self._failures, self._stall, self._match = count, where, match

    def heal(self) -> None:
        """Forward everything again; connections stalled so far are dropped."""
        with self._lock:
            self._failures = 0
        released = self._released
        if released is not None:
            self._loop.call_soon_threadsafe(released.set)

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return self._failures

    def count(self, method: str | None = None, *, faulted: bool | None = None) -> int:
        with self._lock:
            return sum(
                1
                for s in self.seen
                if (method is None or s.method == method)
                and (faulted is None or s.faulted == faulted)
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()

    # -- serving -------------------------------------------------------------------------------

    def _take_fault(self, request: web.Request) -> int | str | None:
        """The fault for this request: a status, ``"headers"``/``"body"`` (stall), or None."""
        with self._lock:
            fault = self._failures != 0 and self._match in request.path
            if self._stall == "body" and request.method != "GET":
                fault = False  # only answers with a body can stall halfway through it
            if fault and self._failures > 0:
                self._failures -= 1
            self.seen.append(Seen(request.method, request.path_qs, fault))
            if not fault:
                return None
            if self._stall is not None:
                self.stalled += 1
                return self._stall
            return self._status

    async def _stalled(self, request: web.Request) -> web.Response:
        """Hold the connection open, sending nothing more, until healed; then drop it."""
        if self._released is None or self._released.is_set():
            self._released = asyncio.Event()
        await self._released.wait()
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never sent: the connection is gone

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = self._take_fault(request)
        if status == "headers":
            return await self._stalled(request)
        if isinstance(status, int):
            code = _CODES.get(status, "InternalError")
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>injected by the test proxy</Message>"
                f"<Resource>{request.path}</Resource><RequestId>fault</RequestId></Error>"
            )
            return web.Response(status=status, body=xml.encode(), content_type="application/xml")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method,
            self.upstream.endpoint + request.path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
        if status == "body":
            response = web.StreamResponse(status=upstream.status, headers=out)
            response.content_length = len(payload)
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            return await self._stalled(request)
        if request.method == "HEAD" and "Content-Length" in upstream.headers:
            # A HEAD's size is its Content-Length (there is no body to measure): keep it.
            out["Content-Length"] = upstream.headers["Content-Length"]
            return web.Response(status=upstream.status, headers=out)
        return web.Response(status=upstream.status, body=payload, headers=out)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    def stop(self) -> None:
        self.heal()
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def describe_log(self, max_chars: int = 4000) -> str:
        with self._lock:
            lines = [f"{s.method} {s.path_qs} {'FAULT' if s.faulted else ''}" for s in self.seen]
        return "--- fault proxy ---\n" + "\n".join(lines)[-max_chars:]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_key(digest: str) -> str:
    """The bucket key of a blob's data (registry:2's layout, empty rootdirectory)."""
    hex_ = digest.split(":")[1]
    return f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"


def stored(moto: MotoServer, bucket: str, data: bytes) -> bool:
    """Whether ``data`` is in the bucket, whole, as a blob: asked of moto directly, past the
    proxy, so a test learns what was really stored, not what the registry said."""
    client = moto.client()
    try:
        body = client.get_object(Bucket=bucket, Key=blob_key(sha256(data)))["Body"]
    except client.exceptions.NoSuchKey:
        return False
    return bool(body.read() == data)
