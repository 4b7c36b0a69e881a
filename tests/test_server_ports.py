"""A test server is ready only when *it* answers on its port, not any server that took the port.

``free_port()`` hands out a port that was free a moment ago; on a machine where several test
runs start servers at once, another process may bind it first. The server started on it then
fails with "address already in use", but until it has exited the readiness probe
(``GET /v2/``) was answered by the other process, and the test went on against a foreign
registry: a 404 on its first pull (seen once in ``test_hung_upstream_times_out_to_the_cache``).
Here the foreign process is a plain HTTP server that answers ``GET /v2/`` like a registry.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from aiohttp import web
from support import servers
from support.servers import ServerStartError, cargohold_process


@pytest.fixture
def foreign_port() -> Iterator[int]:
    """A port held by another server that answers every request 200 ``{"foreign": true}``."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"foreign": True})

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock)
        await site.start()
        return runner, sock.getsockname()[1]

    runner, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


def test_a_port_answered_by_another_process_is_not_ready(foreign_port: int, tmp_path: Path) -> None:
    assert requests.get(f"http://127.0.0.1:{foreign_port}/v2/", timeout=30).status_code == 200
    server = servers.RegistryProcess(
        "cargohold",
        servers.cargohold_command(1),
        tmp_path,
        env=servers.cargohold_env(),
        port=foreign_port,
    )
    try:
        with pytest.raises(ServerStartError, match="already in use"):
            server.start()
    finally:
        server.stop()


def test_a_taken_port_is_retried_on_another(
    foreign_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first port free_port() gives is the taken one: the server ends up on another."""
    ports = iter([foreign_port])
    real = servers.free_port
    monkeypatch.setattr(servers, "free_port", lambda: next(ports, None) or real())
    server = cargohold_process(tmp_path)
    assert server.port == foreign_port
    server.start()
    try:
        assert server.port != foreign_port
        catalog = requests.get(f"{server.url}/v2/_catalog", timeout=30)
        assert catalog.status_code == 200 and catalog.json() == {"repositories": []}
    finally:
        server.stop()
