"""S3 failing under cargohold: a fault-injecting proxy (``support.faultproxy``) between cargohold
and moto answers 500 ``InternalError`` / 503 ``SlowDown`` for N requests or until healed.

Transient faults are retried (botocore's standard mode: backoff with jitter) and the push
succeeds; a persistent outage gives clients the spec's 503 ``UNAVAILABLE`` and makes
``/debug/health`` answer 503 until the store heals; and no push is ever acknowledged (201)
whose blob is not in the bucket, checked on moto directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import requests
from support.faultproxy import FaultProxy, sha256, stored
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer
from support.waiting import eventually

Factory = Callable[..., RegistryProcess]


@pytest.fixture
def faulty(proxy: FaultProxy, moto: MotoServer, make_registry: Factory) -> RegistryProcess:
    bucket = moto.new_bucket("faults")
    reg = make_registry(config={"storage": proxy.storage_section(bucket)})
    reg.bucket = bucket  # type: ignore[attr-defined]
    return reg


def push(reg: RegistryProcess, name: str, data: bytes) -> requests.Response:
    """POST + PUT with the body: the response that ends the push (an error stops it early)."""
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=120)
    if r.status_code != 202:
        return r
    location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    return requests.put(
        f"{reg.url}{location}{sep}digest={sha256(data)}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=120,
    )


def health(reg: RegistryProcess) -> int:
    return requests.get(f"{reg.url}/debug/health", timeout=60).status_code


@pytest.mark.parametrize("status", [500, 503])
def test_transient_faults_are_retried(
    faulty: RegistryProcess, proxy: FaultProxy, moto: MotoServer, status: int
) -> None:
    name = unique_repo("faults/transient")
    data = os.urandom(300_000)
    proxy.reset_counts()
    proxy.fail(2, status)
    r = push(faulty, name, data)
    assert r.status_code == 201, (r.text, faulty.describe_log(), proxy.describe_log())
    assert proxy.pending_failures == 0 and proxy.count(faulted=True) == 2
    assert stored(moto, faulty.bucket, data)  # type: ignore[attr-defined]
    got = requests.get(f"{faulty.url}/v2/{name}/blobs/{sha256(data)}", timeout=60)
    assert got.status_code == 200 and got.content == data


def test_persistent_outage_is_a_503_and_heals(
    faulty: RegistryProcess, proxy: FaultProxy, moto: MotoServer
) -> None:
    name = unique_repo("faults/outage")
    data = os.urandom(200_000)
    assert health(faulty) == 200
    proxy.fail()
    r = push(faulty, name, data)
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert proxy.count(faulted=True) >= 3  # botocore retried before giving up
    eventually(lambda: health(faulty) == 503, timeout=60)
    assert not stored(moto, faulty.bucket, data)  # type: ignore[attr-defined]
    head = requests.head(f"{faulty.url}/v2/{name}/blobs/{sha256(data)}", timeout=120)
    assert head.status_code in (404, 503)

    proxy.heal()
    eventually(lambda: health(faulty) == 200, timeout=60)
    r = push(faulty, name, data)
    assert r.status_code == 201, r.text
    assert stored(moto, faulty.bucket, data)  # type: ignore[attr-defined]


def test_nothing_acknowledged_that_was_not_stored(
    faulty: RegistryProcess, proxy: FaultProxy, moto: MotoServer
) -> None:
    """Before each push: no fault, a burst of 1 or 2 (retried away), or an outage healed after
    the push: every failure is a 503 and every 201 is a blob that is in the bucket, whole."""
    name = unique_repo("faults/acked")
    outcomes: list[tuple[int, bytes]] = []
    for i in range(12):
        data = os.urandom(50_000 + i)
        proxy.fail((0, 1, 2, -1)[i % 4], 500 if i % 2 else 503)
        outcomes.append((push(faulty, name, data).status_code, data))
        proxy.heal()
    statuses = {status for status, _ in outcomes}
    assert statuses <= {201, 503}, statuses
    assert 201 in statuses and 503 in statuses, statuses
    for status, data in outcomes:
        if status == 201:
            assert stored(moto, faulty.bucket, data)  # type: ignore[attr-defined]
            got = requests.get(f"{faulty.url}/v2/{name}/blobs/{sha256(data)}", timeout=60)
            assert got.content == data
