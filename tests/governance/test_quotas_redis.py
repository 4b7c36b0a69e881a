"""Quotas kept in Redis: replicas on S3 storage (moto) sharing one Redis never both pass a limit,
namespaces count shared blobs once, and ``du --rebuild`` recomputes the usage from the bucket."""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Callable
from typing import Any

from support.clients import Skopeo
from support.images import ImageCache
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer, RedisServer

from .helpers import cli, error_of, push_blob, push_image

RegistryFactory = Callable[..., RegistryProcess]
KIB = 1024


def _config(
    moto: MotoServer, redis_server: RedisServer, quotas: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "storage": moto.storage_section(moto.new_bucket()),
        "redis": {"addr": redis_server.addr, "db": 3},
        "http": {"secret": "governance-replicas"},
        "quotas": quotas,
    }


def test_replicas_on_s3_share_the_quota_through_redis(
    make_registry: RegistryFactory,
    moto: MotoServer,
    redis_server: RedisServer,
    skopeo: Skopeo,
    images: ImageCache,
) -> None:
    pushes = [images.get(seed=420 + i, payload_size=200 * KIB) for i in range(4)]
    limit = max(sum(b.size for b in i.all_blobs()) for i in pushes) + 100 * KIB
    config = _config(moto, redis_server, [{"repositories": "race/*", "size": str(limit)}])
    replicas = [make_registry(config=config), make_registry(config=config)]
    repo = unique_repo("race")

    def push(n: int) -> Any:
        server = replicas[n % 2]
        ref = f"docker://{server.host}/{repo}:t{n}"
        return skopeo.with_logs(server).copy(pushes[n].oci_ref(), ref, check=False)

    with concurrent.futures.ThreadPoolExecutor(len(pushes)) as pool:
        results = list(pool.map(push, range(len(pushes))))
    ok = [r for r in results if r.returncode == 0]
    assert len(ok) == 1, [r.stderr[-400:] for r in results]
    assert all("quota exceeded" in r.stderr for r in results if r.returncode != 0)
    du = json.loads(cli("du", str(replicas[0].config_path), "--json", "--rebuild").stdout)
    entry = next(q for q in du["quotas"] if q["scope"] == repo)
    assert 0 < entry["usage"] <= limit


def test_namespace_in_redis(
    make_registry: RegistryFactory, moto: MotoServer, redis_server: RedisServer
) -> None:
    limit = 300 * KIB
    config = _config(moto, redis_server, [{"namespace": "ns/**", "size": str(limit)}])
    server = make_registry(config=config)
    layer = os.urandom(200 * KIB)
    assert push_image(server, unique_repo("ns/a"), "1", [layer]).status_code == 201
    assert push_image(server, unique_repo("ns/b"), "1", [layer]).status_code == 201
    refused = push_blob(server, unique_repo("ns/c"), os.urandom(150 * KIB))
    assert refused.status_code == 403
    error = error_of(refused)
    assert error["code"] == "DENIED" and "quota exceeded: namespace ns/**" in error["message"]
