"""What one client may cost the server (``http.limits``), and refusals in the spec's JSON form.

aiohttp's request handler is subclassed (:class:`LimitedHandler`, served by :class:`LimitedSite`)
for what only the connection level can see:

- **Header timeout (slowloris).** aiohttp closes a connection only when its keep-alive timer
  runs out, however slowly a request head trickles in. Once the first byte of a request head
  arrives, the whole head must arrive within ``headertimeout``, or the connection is closed.
  An idle keep-alive connection (no byte of a next request) is left to ``idletimeout``.
- **Connections per client address**, counted per worker process: one more is answered
  ``429 TOOMANYREQUESTS`` and closed before anything is parsed. Peers in
  ``http.trustedproxies`` are not counted: every client behind a load balancer shares them.
- **Requests aiohttp's parser refuses** (bad header characters, a request line or header over
  ``maxheaderbytes``, garbage after a body shorter than its Content-Length) are answered with
  the OCI error body instead of aiohttp's plain text.

:func:`host_middleware` refuses a Host header that RFC 9112 calls invalid (a space, a slash,
an ``@``, or two Host fields): 400 with the JSON error.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from cargohold.api.common import API_VERSION_HEADER
from cargohold.clientaddr import Network, is_trusted
from cargohold.config import HttpLimits
from cargohold.errors import ErrorCode, RegistryError


def error_body(code: ErrorCode, message: str, detail: Any = None) -> bytes:
    return json.dumps(RegistryError(code, message, detail).body()).encode()


def _raw_response(status: int, reason: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in API_VERSION_HEADER.items())
        + "\r\n"
    )
    return head.encode() + body


class ClientCounter:
    """Open connections per client address in this process."""

    def __init__(self, limit: int, trusted: list[Network]) -> None:
        self.limit = limit
        self.trusted = trusted
        self.counts: dict[str, int] = {}

    def acquire(self, address: str) -> bool:
        if not self.limit or is_trusted(address, self.trusted):
            return True
        count = self.counts.get(address, 0)
        if count >= self.limit:
            return False
        self.counts[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.counts.get(address)
        if count is None:
            return
        if count <= 1:
            del self.counts[address]
        else:
            self.counts[address] = count - 1


class LimitedHandler(RequestHandler):
    """aiohttp's request handler with a header timeout, a per-address connection count and
    JSON refusals (see the module's doc)."""

    def __init__(
        self, manager: web.Server, *, limits: HttpLimits, counter: ClientCounter, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._counter = counter
        self._client: str | None = None  # counted address, once admitted
        self._refused = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_payload: Any = None

    # -- admission ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        if not self._counter.acquire(address):
            self._refused = True
            body = error_body(
                ErrorCode.TOOMANYREQUESTS,
                "too many connections from this address",
                {"limit": self._limits.maxconnectionsperclient},
            )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_raw_response(429, "Too Many Requests", body))
            transport.close()
            return
        self._client = address
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._cancel_head_timer()
        if self._client is not None:
            self._counter.release(self._client)
            self._client = None
        super().connection_lost(exc)

    # -- header timeout ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:  # a whole head arrived
            self._cancel_head_timer()
            if self._messages:
                self._last_payload = self._messages[-1][1]
        elif data and self._head_timer is None and self._awaiting_head():
            timeout = self._limits.headertimeout
            if timeout > 0:
                self._head_timer = self._loop.call_later(
                    timeout, self._head_timed_out, self._request_count
                )

    def _awaiting_head(self) -> bool:
        """Bytes arriving now are a request head, not a body being received or drained."""
        if self._request_in_progress or self._messages:
            return False
        payload = self._last_payload
        return payload is None or bool(payload.is_eof())

    def _head_timed_out(self, count: int) -> None:
        self._head_timer = None
        if self._request_count == count and self.transport is not None:
            self.log_debug("no whole request head in %ss: closing", self._limits.headertimeout)
            self.force_close()
            self.transport.close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # -- refusals by aiohttp's parser --------------------------------------------------------

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own refusals, in the spec's JSON form (it always closes the connection)."""
        plain = super().handle_error(request, status, exc, message)  # logs, checks output
        if status >= 500:
            code, text = ErrorCode.UNKNOWN, "internal error"
        else:
            code, text = ErrorCode.UNKNOWN, "malformed HTTP request"
        detail = (message or (str(exc) if exc else ""))[:300] if status < 500 else None
        response = web.Response(
            status=plain.status,
            body=error_body(code, text, detail),
            content_type="application/json",
            headers=API_VERSION_HEADER,
        )
        response.force_close()
        return response


class LimitedSite(web.SockSite):
    """A :class:`web.SockSite` whose connections are served by :class:`LimitedHandler`."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        limits: HttpLimits,
        trusted: list[Network],
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, sock, **kwargs)
        self._limits = limits
        self._counter = ClientCounter(limits.maxconnectionsperclient, trusted)

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        handler_kwargs: dict[str, Any] = dict(server._kwargs)

        def protocol() -> LimitedHandler:
            return LimitedHandler(
                server, loop=loop, limits=self._limits, counter=self._counter, **handler_kwargs
            )

        self._server = await loop.create_server(
            protocol, sock=self._sock, ssl=self._ssl_context, backlog=self._backlog
        )


def handler_args(limits: HttpLimits) -> dict[str, Any]:
    """aiohttp's own request-handler limits, from ``http.limits`` (0: aiohttp's default)."""
    args: dict[str, Any] = {}
    if limits.maxheaderbytes:
        args["max_line_size"] = args["max_field_size"] = limits.maxheaderbytes
    if limits.maxheaders:
        args["max_headers"] = limits.maxheaders
    args["keepalive_timeout"] = limits.idletimeout or 3630.0
    return args


# RFC 9112 3.2 / RFC 3986: uri-host [ ":" port ]
_HOST = re.compile(
    r"(\[[0-9A-Fa-f:.]+(%25[A-Za-z0-9._~-]+)?\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?\Z"
)


@web.middleware
async def host_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """RFC 9112 3.2: a Host field with an invalid value, or more than one, is answered 400."""
    hosts = request.headers.getall("Host", [])
    if len(hosts) > 1 or (hosts and _HOST.match(hosts[0]) is None):
        raise RegistryError(
            ErrorCode.UNKNOWN, "invalid Host header", {"host": hosts[0][:100]}, status=400
        )
    return await handler(request)
