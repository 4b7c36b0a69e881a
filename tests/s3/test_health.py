"""``/debug/health`` and ``GET /`` for load balancers: 503 while the storage is unreachable."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from support.servers import RegistryProcess
from support.stores import MotoServer

Factory = Callable[..., RegistryProcess]


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path / "moto")
    server.start()
    yield server
    server.stop()


def wait_for(predicate: Callable[[], bool], limit: float = 20.0) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def statuses(reg: RegistryProcess) -> tuple[int, int]:
    health = requests.get(f"{reg.url}/debug/health", timeout=30)
    root = requests.get(f"{reg.url}/", timeout=30)
    return health.status_code, root.status_code


def test_health_follows_the_store(own_moto: MotoServer, make_registry: Factory) -> None:
    bucket = own_moto.new_bucket("health")
    reg = make_registry(config={"storage": own_moto.storage_section(bucket)})
    r = requests.get(f"{reg.url}/debug/health", timeout=30)
    assert r.status_code == 200
    assert r.json()["storage"] == {"driver": "s3", "status": "ok"}
    assert statuses(reg) == (200, 200)

    own_moto.stop()
    assert wait_for(lambda: statuses(reg) == (503, 503)), statuses(reg)
    body = requests.get(f"{reg.url}/debug/health", timeout=30).json()
    assert body["status"] == "unavailable" and body["storage"]["status"].startswith("unreachable")

    own_moto.start()  # same port, empty: the bucket is gone, still unhealthy
    time.sleep(1.5)
    assert statuses(reg) == (503, 503)
    own_moto.client().create_bucket(Bucket=bucket)
    assert wait_for(lambda: statuses(reg) == (200, 200)), statuses(reg)


def test_health_on_a_filesystem(make_registry: Factory, tmp_path: Path) -> None:
    reg = make_registry()
    assert statuses(reg) == (200, 200)
    assert requests.get(f"{reg.url}/debug/health", timeout=30).json()["storage"]["status"] == "ok"
