"""S3 that accepts requests and then stalls, under cargohold: the fault proxy
(``support.faultproxy``) between cargohold and moto holds connections open and sends nothing
(``stall("headers")``), or sends half an object and then nothing (``stall("body")``).

With ``storage.s3.readtimeout`` set short, a stalled request counts as failed after that long,
is retried like a 503 (botocore's standard mode), and then gives the client the spec's
``503 UNAVAILABLE``: no hang, no 500. Nothing is acknowledged that was not stored (checked on
moto directly), ``/debug/health`` answers 503 while the store stalls, and everything works again
once it answers. A read that stalls halfway resumes where it broke off. Nothing here measures
time: requests are bounded by client timeouts far above the configured retry budget
(3 attempts of 2 s) and far below what the default 60 s read timeout would take.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import requests
from support.faultproxy import FaultProxy, blob_key, sha256, stored
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer
from support.waiting import eventually

Factory = Callable[..., RegistryProcess]
BLOBS = "/docker/registry/v2/blobs/"  # the keys of blob data
# Well above 3 attempts x readtimeout (+ backoff) on a loaded machine, well below 3 x 60 s.
CLIENT_TIMEOUT = 90


@pytest.fixture
def stalling(proxy: FaultProxy, moto: MotoServer, make_registry: Factory) -> RegistryProcess:
    """cargohold on S3 through the proxy, 2 s timeouts, streaming blobs itself (no redirect)."""
    bucket = moto.new_bucket("stall")
    section = proxy.storage_section(bucket, readtimeout="2s", connecttimeout="2s")
    reg = make_registry(config={"storage": {**section, "redirect": {"disable": True}}})
    reg.bucket = bucket  # type: ignore[attr-defined]
    return reg


def start_upload(reg: RegistryProcess, name: str) -> str:
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=CLIENT_TIMEOUT)
    assert r.status_code == 202, (r.status_code, r.text)
    location = r.headers["Location"]
    return location if location.startswith("http") else reg.url + location


def finish_upload(location: str, data: bytes) -> requests.Response:
    sep = "&" if "?" in location else "?"
    return requests.put(
        f"{location}{sep}digest={sha256(data)}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=CLIENT_TIMEOUT,
    )


def push(reg: RegistryProcess, name: str, data: bytes) -> requests.Response:
    return finish_upload(start_upload(reg, name), data)


def health(reg: RegistryProcess) -> int:
    return requests.get(f"{reg.url}/debug/health", timeout=CLIENT_TIMEOUT).status_code


def assert_unavailable(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text


def test_stalled_store_is_a_503_and_recovers(
    stalling: RegistryProcess, proxy: FaultProxy, moto: MotoServer
) -> None:
    bucket = stalling.bucket  # type: ignore[attr-defined]
    name = unique_repo("stall/outage")
    old = os.urandom(300_000)
    assert push(stalling, name, old).status_code == 201
    old_url = f"{stalling.url}/v2/{name}/blobs/{sha256(old)}"
    assert health(stalling) == 200

    # An upload begun before the stall, finished during it: refused, and nothing is stored.
    location = start_upload(stalling, name)
    new = os.urandom(400_000)
    proxy.stall("headers")
    assert_unavailable(finish_upload(location, new))
    stalled_upload = [s for s in proxy.seen if s.faulted and "/_uploads/" in s.path_qs]
    assert len(stalled_upload) >= 3, proxy.describe_log()  # the first attempt and the retries

    # Reads and new uploads while the store stalls: 503 UNAVAILABLE, not a hang, not a 500.
    assert_unavailable(requests.get(old_url, timeout=CLIENT_TIMEOUT))
    assert_unavailable(
        requests.post(f"{stalling.url}/v2/{name}/blobs/uploads/", timeout=CLIENT_TIMEOUT)
    )
    eventually(lambda: health(stalling) == 503, timeout=60)
    assert not stored(moto, bucket, new)  # moto directly, past the proxy

    proxy.heal()
    eventually(lambda: health(stalling) == 200, timeout=60)
    assert not stored(moto, bucket, new)
    head = requests.head(f"{stalling.url}/v2/{name}/blobs/{sha256(new)}", timeout=CLIENT_TIMEOUT)
    assert head.status_code == 404
    got = requests.get(old_url, timeout=CLIENT_TIMEOUT)
    assert got.status_code == 200 and got.content == old
    assert push(stalling, name, new).status_code == 201
    assert stored(moto, bucket, new)


def test_read_stalled_halfway_resumes(stalling: RegistryProcess, proxy: FaultProxy) -> None:
    """One GetObject stalls after half the object: the driver gives up on it after readtimeout
    and continues with a ranged GET from the byte where it broke off."""
    name = unique_repo("stall/resume")
    data = os.urandom(3 << 20)
    assert push(stalling, name, data).status_code == 201
    proxy.stall("body", count=1, match=BLOBS)
    got = requests.get(f"{stalling.url}/v2/{name}/blobs/{sha256(data)}", timeout=CLIENT_TIMEOUT)
    assert got.status_code == 200
    assert got.content == data
    assert proxy.stalled == 1 and proxy.pending_failures == 0
    ranged = [s for s in proxy.seen if s.method == "GET" and BLOBS in s.path_qs]
    assert len(ranged) >= 2, proxy.describe_log()


def test_read_that_keeps_stalling_is_cut_not_hung(
    stalling: RegistryProcess, proxy: FaultProxy
) -> None:
    """Every GetObject stalls halfway: once the 200 and part of the body are out, the only honest
    signal left is to cut the connection, which the client sees as a short body, never as a
    complete one. After the stall the blob reads whole again."""
    name = unique_repo("stall/cut")
    data = os.urandom(3 << 20)
    assert push(stalling, name, data).status_code == 201
    url = f"{stalling.url}/v2/{name}/blobs/{sha256(data)}"
    proxy.stall("body", match=BLOBS)
    try:
        got = requests.get(url, timeout=CLIENT_TIMEOUT)
    except requests.exceptions.ChunkedEncodingError:
        pass  # the connection was cut mid-body
    else:
        assert got.status_code == 503 or len(got.content) < len(data), got.status_code
    assert proxy.stalled >= 2  # the resume attempts stalled too
    proxy.heal()
    again = requests.get(url, timeout=CLIENT_TIMEOUT)
    assert again.status_code == 200 and again.content == data


def test_blob_altered_in_the_bucket_is_cut_before_its_last_byte(
    stalling: RegistryProcess, moto: MotoServer
) -> None:
    """Streamed bodies are hashed as they go and the last byte is held back until the hash
    matched: bytes changed in the bucket behind the registry's back reach the client as a broken
    transfer, never as a complete body; a range is served as stored (it cannot be checked)."""
    name = unique_repo("stall/altered")
    data = os.urandom(2 << 20)
    assert push(stalling, name, data).status_code == 201
    altered = bytearray(data)
    altered[1 << 20] ^= 0xFF
    bucket = stalling.bucket  # type: ignore[attr-defined]
    moto.client().put_object(Bucket=bucket, Key=blob_key(sha256(data)), Body=bytes(altered))
    url = f"{stalling.url}/v2/{name}/blobs/{sha256(data)}"
    try:
        got = requests.get(url, timeout=CLIENT_TIMEOUT)
    except requests.exceptions.ChunkedEncodingError:
        pass  # cut mid-body
    else:
        assert len(got.content) < len(data), got.status_code
    part = requests.get(url, headers={"Range": "bytes=0-99"}, timeout=CLIENT_TIMEOUT)
    assert part.status_code == 206 and part.content == data[:100]
