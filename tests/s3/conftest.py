"""Fixtures for the S3 tests: a moto S3 endpoint and a Redis per session (per xdist worker).

- ``moto`` (session): :class:`support.stores.MotoServer`; ``moto.new_bucket()`` gives each
  test its own bucket, ``moto.storage_section(bucket)`` the registry:2 ``storage`` section
  (for ``make_registry(config={"storage": ...})``).
- ``redis_server`` (session): :class:`support.stores.RedisServer`.
- ``s3_registry``: ``s3_registry(bucket=None, config=None, workers=1, env=None)`` starts a
  cargohold on S3 (a new bucket unless given) through ``make_registry``.
- ``rgw`` (session): a Ceph RADOS Gateway (:class:`support.ceph.RgwServer`), one per test run
  shared by the xdist workers; same interface as ``moto``. Skips when Ceph is not installed.
- ``rgw_registry``: like ``s3_registry``, on the RADOS Gateway.
- ``proxy``: a :class:`support.faultproxy.FaultProxy` in front of ``moto`` (per test).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from support.ceph import RgwServer, rgw_available
from support.faultproxy import FaultProxy
from support.servers import RegistryProcess, deep_merge
from support.stores import MotoServer, S3Endpoint

S3RegistryFactory = Callable[..., RegistryProcess]


def _registry_factory(
    store: S3Endpoint, make_registry: Callable[..., RegistryProcess]
) -> S3RegistryFactory:
    def start(
        bucket: str | None = None,
        config: Mapping[str, Any] | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        **s3: Any,
    ) -> RegistryProcess:
        bucket = bucket or store.new_bucket()
        base = {"storage": store.storage_section(bucket, **s3), "http": {"secret": "s3-tests"}}
        server = make_registry(config=deep_merge(base, config), workers=workers, env=env)
        server.bucket = bucket  # type: ignore[attr-defined]
        return server

    return start


@pytest.fixture
def s3_registry(
    moto: MotoServer, make_registry: Callable[..., RegistryProcess]
) -> S3RegistryFactory:
    return _registry_factory(moto, make_registry)


@pytest.fixture(scope="session")
def rgw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RgwServer]:
    if not rgw_available():
        pytest.skip("Ceph (ceph-mon, ceph-osd, radosgw) is not installed")
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    server = RgwServer(shared / "ceph-rgw").start()
    yield server
    server.stop()


@pytest.fixture
def rgw_registry(
    rgw: RgwServer, make_registry: Callable[..., RegistryProcess]
) -> S3RegistryFactory:
    return _registry_factory(rgw, make_registry)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    server = FaultProxy(moto).start()
    yield server
    server.stop()
