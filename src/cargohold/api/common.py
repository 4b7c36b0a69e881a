"""What every handler shares: the request context, body streaming and response helpers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from aiohttp import web

from cargohold.errors import ErrorCode, RegistryError
from cargohold.mirror.mirrored import MirroredRegistry

API_VERSION_HEADER: Final = {"Docker-Distribution-API-Version": "registry/2.0"}
REGISTRY_KEY: Final = web.AppKey("registry", MirroredRegistry)
# Set by the auth middleware on _catalog requests: repositories -> those the caller may pull.
CATALOG_FILTER_KEY: Final = web.RequestKey[Callable[[list[str]], list[str]]]("catalog_filter")
_RANGE_RE = re.compile(r"^([0-9]+)-([0-9]+)\Z")


def registry_of(request: web.Request) -> MirroredRegistry:
    return request.app[REGISTRY_KEY]


def location(request: web.Request, path: str) -> str:
    """A ``Location`` for ``/v2/...``: under ``http.prefix``, absolute when ``http.host`` is set
    (registry:2's rule for registries behind a proxy that rewrites the host)."""
    http = registry_of(request).config.http
    return f"{http.host.rstrip('/')}{http.prefix}{path}"


def has_body(request: web.Request) -> bool:
    if request.content_length is not None:
        return request.content_length > 0
    return request.headers.get("Transfer-Encoding", "").lower() == "chunked"


def parse_content_range(value: str | None) -> tuple[int, int] | None:
    """``Content-Range: <start>-<end>`` (inclusive), the spec's form for upload chunks, or 416.

    Anything else, ``bytes=0-9`` included, is refused rather than ignored: a chunk whose
    position the registry cannot read must not be appended wherever the upload happens to be."""
    if value is None:
        return None
    m = _RANGE_RE.match(value.strip())
    if not m:
        raise RegistryError(ErrorCode.RANGE_INVALID, f"malformed Content-Range {value[:100]!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise RegistryError(ErrorCode.RANGE_INVALID, "Content-Range ends before it starts")
    return start, end


# One range of bytes: what is honoured; other units and several ranges get the whole body
# (RFC 9110 14.2 lets a server ignore them).
SIMPLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d+-\d*|-\d+)\s*$")


def requested_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of the single range a GET of a ``size``-byte body asks for; None
    for the whole body (no Range, or one to ignore). RANGE_INVALID (416) when it cannot be
    satisfied."""
    header = request.headers.get("Range")
    if not header or size <= 0 or SIMPLE_RANGE.match(header) is None:
        return None
    rng = request.http_range
    s = rng.start or 0
    e = size if rng.stop is None else min(rng.stop, size)
    if rng.start is not None and rng.start < 0:
        s, e = max(size + rng.start, 0), size
    if s >= size or e <= s:
        raise RegistryError(ErrorCode.RANGE_INVALID, headers={"Content-Range": f"bytes */{size}"})
    return s, e - 1


def parse_n(request: web.Request) -> int | None:
    raw = request.query.get("n")
    if raw is None or raw == "":
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise RegistryError(ErrorCode.PAGINATION_NUMBER_INVALID, detail={"n": raw[:50]})
    return n


def empty(status: int, headers: dict[str, str]) -> web.Response:
    headers.setdefault("Content-Length", "0")
    return web.Response(status=status, headers=headers)
