"""Large ``Content-Length`` upload bodies are received straight into the upload's buffers, past
aiohttp's parser (``api.socketbody``). Raw sockets drive the edges of that path: bytes that arrive
with the headers, slow and uneven senders, clients that stop half way, the connection closing
after the response."""

from __future__ import annotations

import socket
import struct
import time
from urllib.parse import urlsplit

import pytest
import requests
from support.waiting import eventually

from cargohold.api.socketbody import DIRECT_MIN

from .helpers import (
    absolute,
    blob_url,
    fetch_blob,
    rand_bytes,
    repo,
    sha256,
    start_upload,
    with_query,
)

SIZE = 3 * DIRECT_MIN + 12345
T = 30  # seconds for any one request: a server that never answers fails the test


def _connect(url: str) -> tuple[socket.socket, str, str]:
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    return sock, target, parts.netloc


def _final_put(registry, seed: int) -> tuple[str, bytes, str, tuple[socket.socket, str, str]]:
    """An upload started in a new repository, a body for it, its digest, and a connection
    to the upload's ``PUT ?digest=`` URL."""
    name = repo()
    data = rand_bytes(SIZE, seed=seed)
    digest = sha256(data)
    url = with_query(start_upload(registry.url, name), f"digest={digest}")
    return name, data, digest, _connect(url)


def _head(method: str, target: str, host: str, length: int, extra: str = "") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n"
        f"Content-Type: application/octet-stream\r\n{extra}\r\n"
    ).encode()


def _response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-case names) and whatever of the body came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, f"connection closed before a response: {data[:300]!r}"
        data += got
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, rest


def _closed_by_server(sock: socket.socket, already: bytes, length: int) -> bool:
    """Read the rest of the response body, then tell whether the server closed the socket."""
    left = length - len(already)
    while left > 0:
        got = sock.recv(65536)
        assert got
        left -= len(got)
    return sock.recv(1) == b""


def test_large_put_sent_unevenly_is_stored_and_its_connection_closed(registry):
    name, data, digest, (sock, target, host) = _final_put(registry, seed=61)
    with sock:
        # The first bytes of the body ride with the headers; the rest comes in uneven pieces.
        sock.sendall(_head("PUT", target, host, SIZE) + data[:1000])
        pos = 1000
        for piece in (1, 70_000, 999_999, 5):
            time.sleep(0.05)
            sock.sendall(data[pos : pos + piece])
            pos += piece
        sock.sendall(data[pos:])
        status, headers, rest = _response(sock)
        assert status == 201, rest
        assert headers["docker-content-digest"] == digest
        assert headers["connection"].lower() == "close"
        assert _closed_by_server(sock, rest, int(headers.get("content-length", "0")))
    assert fetch_blob(registry.url, name, digest).content == data


def test_large_patches_keep_their_connection_and_the_final_put_closes_it(registry):
    """A PATCH goes through aiohttp and keeps its connection, so the next chunk reaches the
    worker with the running hash; the PUT that completes the upload is read off the connection,
    which then closes. A client that keeps its connection alive just carries on."""
    name = repo()
    data = rand_bytes(3 * SIZE, seed=62)
    url = start_upload(registry.url, name)
    with requests.Session() as s:
        for start in (0, SIZE):
            chunk = data[start : start + SIZE]
            r = s.patch(
                url,
                data=chunk,
                headers={"Content-Range": f"{start}-{start + SIZE - 1}"},
                timeout=T,
            )
            assert r.status_code == 202, r.text
            assert r.headers.get("Connection", "").lower() != "close"
            assert r.headers["Range"] == f"0-{start + SIZE - 1}"
            url = absolute(registry.url, r.headers["Location"])
        r = s.put(with_query(url, f"digest={sha256(data)}"), data=data[2 * SIZE :], timeout=T)
        assert r.status_code == 201, r.text
        assert r.headers["Connection"].lower() == "close"
        assert s.get(f"{registry.url}/v2/", timeout=T).status_code == 200  # over a new connection
    assert fetch_blob(registry.url, name, sha256(data)).content == data


@pytest.mark.parametrize("goodbye", ["close", "reset"])
def test_a_final_put_abandoned_half_way_publishes_nothing_and_the_upload_resumes(registry, goodbye):
    name, data, digest, (sock, target, host) = _final_put(registry, seed=63)
    url = absolute(registry.url, target)
    with sock:
        sock.sendall(_head("PUT", target, host, SIZE))
        sock.sendall(data[: SIZE // 2])
        time.sleep(0.2)  # the server is now waiting for the rest, on its own protocol
        if goodbye == "reset":  # an RST, no FIN: the server sees only the connection lost
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    # Once the server has given up on it, nothing is published and the upload's offset is
    # what it stored...
    seen: list[int] = []

    def settled() -> bool:
        first = _offset(url)
        time.sleep(0.2)
        if first == _offset(url) == _stored(registry, name):
            seen.append(first)
            return True
        return False

    eventually(settled, timeout=10)
    offset = seen[-1]
    assert offset <= SIZE // 2
    assert requests.head(blob_url(registry.url, name, digest), timeout=T).status_code == 404
    # ...from which the client can go on.
    r = requests.patch(
        url, data=data[offset:], headers={"Content-Range": f"{offset}-{SIZE - 1}"}, timeout=T
    )
    assert r.status_code == 202, r.text
    location = absolute(registry.url, r.headers["Location"])
    r = requests.put(with_query(location, f"digest={digest}"), timeout=T)
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, digest).content == data


def _offset(url: str) -> int:
    r = requests.get(url, timeout=T)
    assert r.status_code == 204, r.text
    return int(r.headers["Range"].split("-")[1]) + 1 if r.headers["Range"] != "0-0" else 0


def _stored(registry, name: str) -> int:
    uploads = registry.root / "docker/registry/v2/repositories" / name / "_uploads"
    (data,) = uploads.glob("*/data")
    return data.stat().st_size


def test_a_body_cut_short_by_a_half_close_publishes_nothing(registry):
    name, data, digest, (sock, target, host) = _final_put(registry, seed=64)
    with sock:
        sock.sendall(_head("PUT", target, host, SIZE) + data[: SIZE - 100])
        sock.shutdown(socket.SHUT_WR)  # "that is all": 100 bytes short
        # Whatever the server answers, it is not a success, and it closes the connection.
        reply = b""
        while got := sock.recv(65536):
            reply += got
        assert not reply.startswith(b"HTTP/1.1 2"), reply[:300]
    assert requests.head(blob_url(registry.url, name, digest), timeout=T).status_code == 404


def test_expect_100_continue_then_a_large_body(registry):
    """curl's way with large bodies: headers first, the body only after ``100 Continue``."""
    name, data, digest, (sock, target, host) = _final_put(registry, seed=65)
    with sock:
        sock.sendall(_head("PUT", target, host, SIZE, "Expect: 100-continue\r\n"))
        status, _, rest = _response(sock)
        assert (status, rest) == (100, b"")  # nothing more before the body is sent
        sock.sendall(data)
        status, headers, _ = _response(sock)
        assert status == 201
        assert headers["docker-content-digest"] == digest
    assert fetch_blob(registry.url, name, digest).content == data
