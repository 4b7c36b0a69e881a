"""A login-protected front for a test registry: Basic or Docker-token (Bearer) auth.

The client side of registry authentication is exercised end to end without depending on the
server's own auth: this proxy answers 401 challenges exactly as registry:2 (``Basic realm=``) or
a Docker token server setup (``Bearer realm=,service=,scope=`` plus a token endpoint) does, and
forwards authenticated requests to a real cargohold. It runs in a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

SERVICE = "cargohold-test"
HOP_HEADERS = {"host", "authorization", "transfer-encoding", "connection", "content-length"}


@dataclass
class AuthProxy:
    backend: str  # http://127.0.0.1:PORT
    mode: str  # "basic" | "bearer"
    username: str = "alice"
    password: str = "s3cret"
    port: int = 0
    max_uses: int | None = None  # a token expires after this many requests (None: never)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    unauthorised: int = 0
    _tokens: dict[str, set[str]] = field(default_factory=dict)
    _uses: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> AuthProxy:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application(client_max_size=1 << 30)
            app.router.add_get("/token", self._token)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            self._loop.run_until_complete(site.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def _basic_ok(self, header: str) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    async def _token(self, request: web.Request) -> web.Response:
        scopes = request.query.getall("scope", [])
        self.token_requests.append(
            {
                "service": request.query.get("service"),
                "scopes": scopes,
                "basic": request.headers.get("Authorization", "").startswith("Basic "),
            }
        )
        if not self._basic_ok(request.headers.get("Authorization", "")):
            return web.json_response({"errors": [{"code": "UNAUTHORIZED"}]}, status=401)
        token = secrets.token_hex(8)
        self._tokens[token] = set(scopes)
        return web.json_response({"token": token, "expires_in": 300})

    def _challenge(self, request: web.Request) -> web.Response:
        self.unauthorised += 1
        if self.mode == "basic":
            header = 'Basic realm="cargohold-test"'
        else:
            header = f'Bearer realm="http://{self.host}/token",service="{SERVICE}"'
            parts = request.path.split("/")
            if len(parts) > 3 and parts[1] == "v2":
                name = "/".join(parts[2:-2]) if "uploads" not in parts else "/".join(parts[2:-3])
                actions = "pull" if request.method in ("GET", "HEAD") else "pull,push"
                header += f',scope="repository:{name}:{actions}"'
        return web.json_response(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            status=401,
            headers={"WWW-Authenticate": header},
        )

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if self.mode == "basic":
            return self._basic_ok(header)
        if not header.startswith("Bearer "):
            return False
        token = header.removeprefix("Bearer ")
        scopes = self._tokens.get(token)
        if scopes is None:
            return False
        self._uses[token] = self._uses.get(token, 0) + 1
        if self.max_uses is not None and self._uses[token] > self.max_uses:
            del self._tokens[token]  # expired
            return False
        parts = request.path.split("/")
        if request.path.rstrip("/") == "/v2":
            return True
        name = "/".join(parts[2:-2]) if "uploads" not in parts else "/".join(parts[2:-3])
        needs = "pull" if request.method in ("GET", "HEAD") else "push"
        return any(
            s.startswith(f"repository:{name}:") and needs in s.rsplit(":", 1)[1].split(",")
            for s in scopes
        )

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            return self._challenge(request)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.backend + request.path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as resp,
        ):
            data = await resp.read()
            out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
            if request.method == "HEAD":
                response = web.Response(status=resp.status, headers=out_headers)
                if "Content-Length" in resp.headers:
                    response.content_length = int(resp.headers["Content-Length"])
                return response
            return web.Response(status=resp.status, headers=out_headers, body=data)
