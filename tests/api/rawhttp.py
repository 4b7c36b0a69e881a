"""Raw HTTP/1.1 over a socket, for requests no HTTP library will send (bad Host values, broken
header fields, lying Content-Lengths, heads that never end)."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

T = 60.0  # seconds for any one read: a server that never answers fails the test


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str:
        code: str = self.json()["errors"][0]["code"]
        return code


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=T)


def read_response(sock: socket.socket, head: bool = False) -> RawResponse:
    """One response: status, headers and a Content-Length body (or up to the close); no body
    for a ``head`` request."""
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        assert got, f"connection closed before a response: {data[:300]!r}"
        data += got
    top, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    if head:
        return RawResponse(int(status_line.split()[1]), headers, b"")
    if "content-length" in headers:
        want = int(headers["content-length"])
        while len(rest) < want:
            got = sock.recv(65536)
            assert got, "connection closed inside a response body"
            rest += got
        rest = rest[:want]
    else:
        while got := sock.recv(65536):
            rest += got
    return RawResponse(int(status_line.split()[1]), headers, rest)


def exchange(port: int, request: bytes) -> RawResponse:
    """Send ``request`` on a new connection and read one response."""
    with connect(port) as sock:
        sock.sendall(request)
        return read_response(sock, head=request.startswith(b"HEAD "))


def closed_by_server(sock: socket.socket) -> bool:
    """Wait (bounded by the socket's timeout) until the server closes; True if it did."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True
