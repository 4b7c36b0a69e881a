"""Fixtures for scale-out tests: replicas sharing storage, Redis and http.secret behind haproxy.

- ``moto`` / ``redis_server`` (session): as in ``tests/s3``.
- ``replica_set(storage="s3"|"filesystem", replicas=3, redis=None, config=None)``: starts the
  replicas through ``make_registry`` (same storage, same ``http.secret``, the given Redis as
  blob descriptor cache) and an haproxy that round-robins *every request* over them; returns a
  :class:`ReplicaSet`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.servers import RegistryProcess, deep_merge
from support.stores import Haproxy, MotoServer, RedisServer, ReplicaSet, haproxy_binary

SECRET = "scale-tests-shared-secret"


ReplicaFactory = Callable[..., ReplicaSet]


@pytest.fixture
def replica_set(
    request: pytest.FixtureRequest,
    make_registry: Callable[..., RegistryProcess],
    tmp_path: Path,
) -> Iterator[ReplicaFactory]:
    if haproxy_binary() is None:
        pytest.skip("haproxy is not installed")
    proxies: list[Haproxy] = []

    def start(
        storage: str = "s3",
        replicas: int = 3,
        redis: RedisServer | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> ReplicaSet:
        base: dict[str, Any] = {"http": {"secret": SECRET}}
        bucket: str | None = None
        root: Path | None = None
        if storage == "s3":
            moto: MotoServer = request.getfixturevalue("moto")
            bucket = moto.new_bucket("scale")
            base["storage"] = moto.storage_section(bucket)
        else:
            root = tmp_path / "shared-storage"
            root.mkdir(exist_ok=True)
        if redis is not None:
            base["storage"] = {**base.get("storage", {}), "cache": {"blobdescriptor": "redis"}}
            base["redis"] = {"addr": redis.addr, "dialtimeout": "500ms", "readtimeout": "1s"}
        merged = deep_merge(base, config)
        started = [make_registry(config=merged, root=root) for _ in range(replicas)]
        proxy = Haproxy(tmp_path / f"haproxy{len(proxies)}", [r.port for r in started])
        proxies.append(proxy)
        proxy.start()
        return ReplicaSet(started, proxy, storage, bucket, root)

    yield start
    for proxy in proxies:
        proxy.stop()
