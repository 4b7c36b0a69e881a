"""Graceful shutdown on SIGTERM (registry:2's ``http.draintimeout``): the replica reports 503 on
``/debug/health`` at once, refuses new connections, lets an upload and a download that are in
flight finish, then exits; a request that outlives the drain time does not keep it alive.
With ``--workers`` the signal goes to the supervisor, which passes it on and waits."""

from __future__ import annotations

import hashlib
import http.client
import os
import random
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.servers import RegistryProcess, free_port
from support.waiting import eventually

RegistryFactory = Callable[..., RegistryProcess]
MiB = 1024 * 1024
DRAIN = 60  # generous: the in-flight requests are released by the test, not by time


def push_blob(server: RegistryProcess, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(f"{server.url}/v2/{name}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    location = location if location.startswith("http") else server.url + location
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{location}{sep}digest={digest}", data=data, timeout=120)
    assert r.status_code == 201, r.text
    return digest


def received(response: requests.Response) -> int:
    """How many more bytes of the body arrive before the connection ends, whichever way."""
    total = 0
    try:
        while chunk := response.raw.read(MiB):
            total += len(chunk)
    except Exception:  # urllib3's and http.client's ways of saying "cut short"
        pass
    return total


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def health(debug_port: int) -> int:
    try:
        return requests.get(f"http://127.0.0.1:{debug_port}/debug/health", timeout=5).status_code
    except requests.ConnectionError:
        return -1


def upload_file(root: Path, name: str, location: str) -> Path:
    upload_id = location.split("?")[0].rstrip("/").rsplit("/", 1)[1]
    return root / "docker/registry/v2/repositories" / name / "_uploads" / upload_id / "data"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_requests_in_flight(make_registry: RegistryFactory, workers: int) -> None:
    debug_port = free_port()
    server = make_registry(
        config={
            "http": {
                "draintimeout": f"{DRAIN}s",
                "secret": "drain-tests",  # the restarted process continues the upload
                "debug": {"addr": f"127.0.0.1:{debug_port}"},
            }
        },
        workers=workers,
    )
    rng = random.Random(workers)
    name = "drain/repo"
    big = rng.randbytes(32 * MiB)  # far more than the socket buffers hold
    big_digest = push_blob(server, name, big)
    assert health(debug_port) == 200

    # A download in flight: headers received, body read only after SIGTERM.
    download = requests.get(f"{server.url}/v2/{name}/blobs/{big_digest}", stream=True, timeout=120)
    assert download.status_code == 200
    first = download.raw.read(MiB)

    # An upload in flight: a PATCH whose body is half sent, and the server already writing it.
    r = requests.post(f"{server.url}/v2/{name}/blobs/uploads/", timeout=30)
    assert r.status_code == 202
    location = r.headers["Location"]
    path = location if not location.startswith("http") else location.split("/", 3)[3]
    path = path if path.startswith("/") else "/" + path
    chunk = rng.randbytes(8 * MiB)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.putrequest("PATCH", path)
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(len(chunk)))
    conn.putheader("Content-Range", f"0-{len(chunk) - 1}")
    conn.endheaders()
    half = len(chunk) // 2
    conn.send(chunk[:half])
    data_file = upload_file(server.root, name, location)
    eventually(lambda: data_file.exists() and data_file.stat().st_size > 0, timeout=60)

    assert server.proc is not None
    proc = server.proc
    os.kill(proc.pid, signal.SIGTERM)  # the supervisor alone when workers > 1: it passes it on

    if workers == 1:
        eventually(lambda: health(debug_port) == 503, timeout=30)
        body = requests.get(f"http://127.0.0.1:{debug_port}/debug/health", timeout=5).json()
        assert body["status"] == "draining"
    else:
        # The debug listener lives in worker 0, which may hold neither request (the kernel
        # spread the connections): then it drains at once and exits, and the listener goes.
        eventually(lambda: health(debug_port) in (503, -1), timeout=30)
    eventually(lambda: refused(server.port), timeout=30)
    assert proc.poll() is None  # still draining: both requests are unfinished

    # Both finish correctly after the signal.
    conn.send(chunk[half:])
    response = conn.getresponse()
    assert response.status == 202, response.read()[:300]
    assert response.getheader("Range") == f"0-{len(chunk) - 1}"
    conn.close()
    rest = download.raw.read()
    assert hashlib.sha256(first + rest).hexdigest() == big_digest.split(":")[1]

    proc.wait(timeout=DRAIN)  # exits once nothing is in flight, well before the drain time
    assert proc.returncode == 0, server.describe_log()
    assert "stopping: draining" in server.log_tail(20000)

    # What the PATCH acknowledged is in the storage: a new process completes the upload.
    server.restart()
    digest = "sha256:" + hashlib.sha256(chunk).hexdigest()
    url = location if location.startswith("http") else server.url + location
    sep = "&" if "?" in url else "?"
    r = requests.put(f"{url}{sep}digest={digest}", timeout=60)
    assert r.status_code == 201, r.text
    r = requests.get(f"{server.url}/v2/{name}/blobs/{digest}", timeout=60)
    assert r.content == chunk


def test_a_request_outliving_the_drain_time_does_not_keep_the_process(
    make_registry: RegistryFactory,
) -> None:
    server = make_registry(config={"http": {"draintimeout": "2s"}})
    name = "drain/stuck"
    data = random.Random(3).randbytes(32 * MiB)
    digest = push_blob(server, name, data)
    stuck = requests.get(f"{server.url}/v2/{name}/blobs/{digest}", stream=True, timeout=120)
    assert stuck.status_code == 200
    stuck.raw.read(MiB)  # and then never reads again until the server is gone
    assert server.proc is not None
    proc = server.proc
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)  # bounded: the drain time passes and the process exits anyway
    assert proc.returncode == 0, server.describe_log()
    assert received(stuck) + MiB < len(data)  # cut short: never the whole blob


@pytest.mark.parametrize("how", ["no draintimeout", "SIGINT"])
def test_without_draintimeout_or_on_sigint_it_stops_at_once(
    make_registry: RegistryFactory, how: str
) -> None:
    """registry:2's default (0), or SIGINT: no drain, a stalled download is cut, it exits."""
    sig = signal.SIGINT if how == "SIGINT" else signal.SIGTERM
    server = make_registry(config={"http": {"draintimeout": "60s"}} if how == "SIGINT" else None)
    name = "drain/none"
    data = random.Random(4).randbytes(32 * MiB)
    digest = push_blob(server, name, data)
    stuck = requests.get(f"{server.url}/v2/{name}/blobs/{digest}", stream=True, timeout=120)
    stuck.raw.read(MiB)
    assert server.proc is not None
    proc = server.proc
    os.kill(proc.pid, sig)
    proc.wait(timeout=60)  # well under the 60 s drain when there is one
    assert proc.returncode == 0
    assert "stopping: draining" not in server.log_tail(20000)
    assert received(stuck) + MiB < len(data)
