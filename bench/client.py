"""A small, fast HTTP/1.1 client for the benchmark, plus the registry operations it needs.

Built on ``http.client`` so that the hot paths stay cheap: uploads go out with
``socket.sendfile`` (zero copy from the page cache); downloads that are checked are
read with ``readinto`` into one large reusable buffer, and timed ones are dropped in
the kernel (:meth:`Http.discard`).  Every socket operation has a timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCTET = "application/octet-stream"

READ_BUFFER = 1 << 20


class ServerError(Exception):
    """The server under test answered something a registry:2 client would not accept."""


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ServerError(f"response {self.status} has no {name} header")
        return value


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def location_path(location: str) -> str:
    """Path and query of a Location header, which may be absolute or relative."""
    parts = urlsplit(location)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def with_query(path: str, query: str) -> str:
    return f"{path}&{query}" if "?" in path else f"{path}?{query}"


class Http:
    """One keep-alive connection to a server.  Not thread-safe: one per thread."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._used = False

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Open the TCP connection now (so that a later timed request does not pay for it)."""
        if self._conn.sock is None:
            self._conn.connect()

    def _check(self, method: str, path: str, resp: Response, expect: Iterable[int]) -> Response:
        expected = tuple(expect)
        if resp.status not in expected:
            raise ServerError(
                f"{method} {path}: expected {expected}, got {resp.status}: {resp.body[:300]!r}"
            )
        return resp

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        expect: Iterable[int] = (200,),
    ) -> Response:
        """Send a request with an in-memory body and read the whole response."""
        hdrs = dict(headers or {})
        if body is not None or method in ("PUT", "POST", "PATCH"):
            hdrs.setdefault("Content-Length", str(len(body or b"")))
        for attempt in (0, 1):
            try:
                self._conn.request(method, path, body=body, headers=hdrs)
                raw = self._conn.getresponse()
                resp = Response(raw.status, raw.headers, raw.read())
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed while idle: retry once on a new one.
                self._conn.close()
                if attempt or not self._used:
                    raise
        self._used = True
        if resp.headers.get("Connection", "").lower() == "close":
            self._conn.close()
        return self._check(method, path, resp, expect)

    def send_file(
        self,
        method: str,
        path: str,
        *,
        fileobj: int,
        offset: int,
        count: int,
        trailer: bytes = b"",
        headers: dict[str, str] | None = None,
        expect: Iterable[int] = (201,),
    ) -> Response:
        """Send ``count`` bytes of an open file (then ``trailer``) as the body, via sendfile."""
        conn = self._conn
        if conn.sock is None:
            conn.connect()
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        conn.putheader("Content-Length", str(count + len(trailer)))
        conn.endheaders()
        sock = conn.sock
        assert sock is not None
        with open(fileobj, "rb", closefd=False) as f:
            sent = sock.sendfile(f, offset, count)
        if sent != count:
            raise ServerError(f"{method} {path}: sent {sent} of {count} bytes")
        if trailer:
            sock.sendall(trailer)
        raw = conn.getresponse()
        resp = Response(raw.status, raw.headers, raw.read())
        self._used = True
        if resp.headers.get("Connection", "").lower() == "close":
            conn.close()
        return self._check(method, path, resp, expect)

    def download(
        self,
        path: str,
        buf: bytearray,
        *,
        headers: dict[str, str] | None = None,
        hasher: hashlib._Hash | None = None,
    ) -> int:
        """GET ``path`` and discard the body (optionally hashing it); return its length."""
        self._conn.request("GET", path, headers=headers or {})
        raw = self._conn.getresponse()
        if raw.status != 200:
            body = raw.read()
            raise ServerError(f"GET {path}: expected 200, got {raw.status}: {body[:300]!r}")
        view = memoryview(buf)
        total = 0
        while True:
            n = raw.readinto(view)
            if not n:
                break
            if hasher is not None:
                hasher.update(view[:n])
            total += n
        self._used = True
        if raw.will_close:
            self._conn.close()
        return total

    def discard(self, path: str, buf: bytearray) -> int:
        """GET ``path`` and drop the body inside the kernel (``recv`` with ``MSG_TRUNC`` copies
        nothing to user space); return its length.

        The clients of a real pull storm run on other machines. Here they share two cores
        with the server, and a client that copies what it receives pays more for bytes that
        come straight from the page cache (sendfile: the copy reads them cold) than for bytes
        a server has just copied through its own buffers (warm): measured, 3.3 s of client
        kernel time against cargohold versus 1.8 s against registry:2 for the same 6 GB.
        Dropping the bytes in the kernel keeps the client's cost the same whatever the server
        does, so the figures measure the servers.
        """
        conn = self._conn
        if conn.sock is None:
            conn.connect()
        sock = conn.sock
        assert sock is not None
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n\r\n".encode())
        view = memoryview(buf)
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(view, min(len(view), 8192))
            if not n or len(head) > 65536:
                raise ServerError(f"GET {path}: no complete response head")
            head += bytes(view[:n])
        head, _, extra = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        if "content-length" not in headers:
            raise ServerError(f"GET {path}: no Content-Length")
        length = int(headers["content-length"])
        total = len(extra)
        while total < length:
            n = sock.recv_into(view, min(len(view), length - total), socket.MSG_TRUNC)
            if not n:
                raise ServerError(f"GET {path}: connection closed after {total} of {length}")
            total += n
        self._used = True
        if status != 200:
            raise ServerError(f"GET {path}: expected 200, got {status}")
        if headers.get("connection", "").lower() == "close":
            conn.close()
        return total


# --- registry operations -------------------------------------------------------------------


def start_upload(http: Http, repo: str) -> str:
    resp = http.request("POST", f"/v2/{repo}/blobs/uploads/", expect=(202,))
    return location_path(resp.header("Location"))


def push_blob(http: Http, repo: str, data: bytes) -> str:
    """Monolithic push of a small in-memory blob; returns its digest."""
    digest = sha256_digest(data)
    location = start_upload(http, repo)
    http.request(
        "PUT",
        with_query(location, f"digest={digest}"),
        headers={"Content-Type": OCTET},
        body=data,
        expect=(201,),
    )
    return digest


def upload_file_monolithic(
    http: Http, repo: str, fd: int, size: int, digest: str, *, offset: int = 0, trailer: bytes = b""
) -> None:
    """POST an upload session, then PUT the whole blob (file region + trailer) in one request."""
    location = start_upload(http, repo)
    resp = http.send_file(
        "PUT",
        with_query(location, f"digest={digest}"),
        fileobj=fd,
        offset=offset,
        count=size - len(trailer),
        trailer=trailer,
        headers={"Content-Type": OCTET},
    )
    check_digest_header(resp, digest)


def upload_file_chunked(http: Http, repo: str, fd: int, size: int, digest: str, chunk: int) -> None:
    """POST, then PATCH ``chunk``-sized pieces following each Location, then PUT ?digest=."""
    location = start_upload(http, repo)
    offset = 0
    while offset < size:
        count = min(chunk, size - offset)
        resp = http.send_file(
            "PATCH",
            location,
            fileobj=fd,
            offset=offset,
            count=count,
            headers={
                "Content-Type": OCTET,
                "Content-Range": f"{offset}-{offset + count - 1}",
            },
            expect=(202,),
        )
        location = location_path(resp.header("Location"))
        offset += count
    resp = http.request("PUT", with_query(location, f"digest={digest}"), expect=(201,))
    check_digest_header(resp, digest)


def check_digest_header(resp: Response, digest: str) -> None:
    got = resp.headers.get("Docker-Content-Digest")
    if got is not None and got != digest:
        raise ServerError(f"Docker-Content-Digest {got} != {digest}")


def mount_blob(http: Http, repo: str, digest: str, source: str, data: bytes) -> None:
    """Cross-repository mount; falls back to a real push if the server opens an upload instead."""
    resp = http.request(
        "POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}", expect=(201, 202)
    )
    if resp.status == 202:
        location = location_path(resp.header("Location"))
        http.request(
            "PUT",
            with_query(location, f"digest={digest}"),
            headers={"Content-Type": OCTET},
            body=data,
            expect=(201,),
        )


def put_manifest(http: Http, repo: str, ref: str, manifest: bytes) -> None:
    http.request(
        "PUT",
        f"/v2/{repo}/manifests/{ref}",
        headers={"Content-Type": OCI_MANIFEST},
        body=manifest,
        expect=(201,),
    )


@dataclass
class Image:
    """A small OCI image: one config blob, some layer blobs, and the manifest tying them."""

    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def blobs(self) -> list[tuple[str, bytes]]:
        return [(sha256_digest(b), b) for b in (self.config, *self.layers)]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @classmethod
    def build(cls, layer_sizes: Iterable[int]) -> Image:
        layers = [os.urandom(n) for n in layer_sizes]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(b) for b in layers]},
                "config": {},
            }
        ).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": sha256_digest(config),
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": sha256_digest(b), "size": len(b)}
                    for b in layers
                ],
            },
            indent=3,
        ).encode()
        return cls(config, layers, manifest)

    def push(self, http: Http, repo: str, tag: str) -> None:
        for digest, data in self.blobs:
            got = push_blob(http, repo, data)
            assert got == digest
        put_manifest(http, repo, tag, self.manifest)


def random_file(path: Path, size: int, block: int = 8 << 20) -> hashlib._Hash:
    """Fill ``path`` with ``size`` fresh random bytes; return the sha256 state over them."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(block, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return h


def write_random_file(path: Path, size: int) -> str:
    """Fill ``path`` with ``size`` fresh random bytes; return their digest."""
    return "sha256:" + random_file(path, size).hexdigest()
