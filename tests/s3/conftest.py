"""Fixtures for the S3 tests: a moto S3 endpoint and a Redis per session (per xdist worker).

- ``moto`` (session): :class:`support.stores.MotoServer`; ``moto.new_bucket()`` gives each
  test its own bucket, ``moto.storage_section(bucket)`` the registry:2 ``storage`` section
  (for ``make_registry(config={"storage": ...})``).
- ``redis_server`` (session): :class:`support.stores.RedisServer`.
- ``s3_registry``: ``s3_registry(bucket=None, config=None, workers=1, env=None)`` starts a
  cargohold on S3 (a new bucket unless given) through ``make_registry``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest
from support.servers import RegistryProcess, deep_merge
from support.stores import MotoServer

S3RegistryFactory = Callable[..., RegistryProcess]


@pytest.fixture
def s3_registry(
    moto: MotoServer, make_registry: Callable[..., RegistryProcess]
) -> S3RegistryFactory:
    def start(
        bucket: str | None = None,
        config: Mapping[str, Any] | None = None,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        **s3: Any,
    ) -> RegistryProcess:
        bucket = bucket or moto.new_bucket()
        base = {"storage": moto.storage_section(bucket, **s3), "http": {"secret": "s3-tests"}}
        server = make_registry(config=deep_merge(base, config), workers=workers, env=env)
        server.bucket = bucket  # type: ignore[attr-defined]
        return server

    return start
