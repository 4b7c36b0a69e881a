"""Login throttling that cannot be turned against users: the same rules for every store
(memory, the workers' shared file, Redis), counts shared by the workers of a server and by
replicas on one Redis, ``X-Forwarded-For`` believed only from trusted proxies, and a flood
against one user (or of made-up users) that locks out nobody else."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from support.servers import RegistryProcess
from support.stores import RedisServer

from cargohold.auth import throttle as th
from cargohold.clientaddr import client_address, trusted_networks

from .helpers import PASSWORDS

RegistryFactory = Callable[..., RegistryProcess]


def _store(kind: str, tmp_path: Path, redis_server: RedisServer | None) -> th.FailureStore:
    if kind == "memory":
        return th.MemoryStore()
    if kind == "sqlite":
        return th.SqliteStore(str(tmp_path / "failures.sqlite"))
    assert redis_server is not None
    from cargohold.config import RedisConfig
    from cargohold.storage.rediscache import connect

    return th.RedisStore(connect(RedisConfig(addr=redis_server.addr)))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis"])
def test_every_store_counts_the_same(kind: str, tmp_path: Path, request) -> None:
    redis_server = request.getfixturevalue("redis_server") if kind == "redis" else None
    user = f"user-{kind}-{tmp_path.name}"  # Redis is shared by the session

    async def scenario() -> None:
        throttle = th.Throttle(3, 60.0, _store(kind, tmp_path, redis_server))
        key = (user, "192.0.2.1")
        for _ in range(3):
            assert await throttle.retry_after(key) is None
            await throttle.failure(key)
        wait = await throttle.retry_after(key)
        assert wait is not None and 1 <= wait <= 60
        assert await throttle.retry_after((user, "192.0.2.2")) is None  # another address
        assert await throttle.retry_after(("someone-else", "192.0.2.1")) is None  # another user
        await throttle.success(key)
        assert await throttle.retry_after(key) is None
        off = th.Throttle(0, 60.0, _store(kind, tmp_path, redis_server))
        for _ in range(5):
            await off.failure((user + "-off", "192.0.2.1"))
        assert await off.retry_after((user + "-off", "192.0.2.1")) is None

    asyncio.run(scenario())


def test_a_flood_of_made_up_users_unlocks_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-memory table is bounded, but filling it evicts the stalest keys, never all."""
    monkeypatch.setattr(th, "MAX_KEYS", 100)

    async def scenario() -> None:
        throttle = th.Throttle(2, 60.0, th.MemoryStore())
        victim = ("carol", "198.51.100.7")
        await throttle.failure(victim)
        await throttle.failure(victim)
        assert await throttle.retry_after(victim) is not None
        for i in range(90):  # the table fills up with fresher keys
            await throttle.failure((f"made-up-{i}", "198.51.100.7"))
        assert await throttle.retry_after(victim) is not None

    asyncio.run(scenario())


def test_the_client_address_behind_trusted_proxies() -> None:
    proxies = trusted_networks(["10.0.0.0/8", "fd00::/8"])
    # not from a trusted proxy: the header is the client's own words, ignored
    assert client_address("192.0.2.9", ["203.0.113.5"], proxies) == "192.0.2.9"
    assert client_address("192.0.2.9", ["203.0.113.5"], []) == "192.0.2.9"
    # from a trusted proxy: the rightmost hop that is not a proxy
    assert client_address("10.1.1.1", ["203.0.113.5"], proxies) == "203.0.113.5"
    assert client_address("10.1.1.1", ["1.2.3.4, 203.0.113.5, 10.2.2.2"], proxies) == (
        "203.0.113.5"
    )
    assert client_address("10.1.1.1", ["1.2.3.4", "203.0.113.5"], proxies) == "203.0.113.5"
    assert client_address("::ffff:10.1.1.1", ["203.0.113.5"], proxies) == "203.0.113.5"
    assert client_address("fd00::1", ["2001:db8::7"], proxies) == "2001:db8::7"
    # unreadable or absent: counted against the proxy itself, never a guess
    assert client_address("10.1.1.1", ["nonsense, 203.0.113.5"], proxies) == "203.0.113.5"
    assert client_address("10.1.1.1", ["203.0.113.5, nonsense"], proxies) == "10.1.1.1"
    assert client_address("10.1.1.1", [], proxies) == "10.1.1.1"
    assert client_address("10.1.1.1", ["10.3.3.3"], proxies) == "10.3.3.3"


def _config(htpasswd_file: Path, **limits: Any) -> dict[str, Any]:
    return {
        "auth": {"htpasswd": {"realm": "throttle", "path": str(htpasswd_file)}},
        "http": {"limits": {"loginfailures": 3, "loginwindow": "10m", **limits}},
    }


def _get(server: RegistryProcess, user: str, password: str, xff: str | None = None) -> int:
    headers = {"X-Forwarded-For": xff} if xff else {}
    with requests.Session() as http:  # a new connection: any worker may take it
        http.headers["Connection"] = "close"
        return http.get(
            server.url + "/v2/", auth=(user, password), headers=headers, timeout=30
        ).status_code


def test_counts_are_shared_by_the_workers_of_a_server(
    make_registry: RegistryFactory, htpasswd_file: Path
) -> None:
    server = make_registry(_config(htpasswd_file), workers=2)
    assert [_get(server, "carol", "wrong") for _ in range(3)] == [401] * 3
    # every later attempt, whichever worker the kernel hands it to, is refused
    assert {_get(server, "carol", PASSWORDS["carol"]) for _ in range(12)} == {429}
    assert _get(server, "alice", PASSWORDS["alice"]) == 200  # another user: untouched


def test_counts_are_shared_by_replicas_on_one_redis(
    make_registry: RegistryFactory, htpasswd_file: Path, redis_server: RedisServer
) -> None:
    config = {**_config(htpasswd_file), "redis": {"addr": redis_server.addr}}
    first, second = make_registry(config), make_registry(config)
    user = "bob"
    # Redis outlives servers in this session: start from a clean count for bob@127.0.0.1
    assert _get(first, user, PASSWORDS[user]) == 200
    assert [_get(first, user, "wrong") for _ in range(3)] == [401] * 3
    assert _get(second, user, PASSWORDS[user]) == 429


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    make_registry: RegistryFactory, htpasswd_file: Path
) -> None:
    config = _config(htpasswd_file, loginfailures=2)
    trusting = make_registry(
        {**config, "http": {**config["http"], "trustedproxies": ["127.0.0.0/8"]}}
    )
    mallory = "203.0.113.66"
    assert [_get(trusting, "carol", "guess", mallory) for _ in range(2)] == [401, 401]
    assert _get(trusting, "carol", PASSWORDS["carol"], mallory) == 429
    # a client cannot escape by writing its own hop left of the proxy's
    assert _get(trusting, "carol", PASSWORDS["carol"], f"192.0.2.1, {mallory}") == 429
    # carol from her own address is not locked out by mallory's guesses
    assert _get(trusting, "carol", PASSWORDS["carol"], "198.51.100.20") == 200
    # nor is anyone else from mallory's address
    assert _get(trusting, "alice", PASSWORDS["alice"], mallory) == 200

    ignoring = make_registry(_config(htpasswd_file, loginfailures=2))
    assert [_get(ignoring, "carol", "guess", mallory) for _ in range(2)] == [401, 401]
    # without trusted proxies the header is ignored: the lockout is carol@127.0.0.1's
    assert _get(ignoring, "carol", PASSWORDS["carol"], "198.51.100.20") == 429


def test_throttling_can_be_turned_off(make_registry: RegistryFactory, htpasswd_file: Path) -> None:
    server = make_registry(_config(htpasswd_file, loginfailures=0))
    assert {_get(server, "carol", "wrong") for _ in range(8)} == {401}
    assert _get(server, "carol", PASSWORDS["carol"]) == 200
