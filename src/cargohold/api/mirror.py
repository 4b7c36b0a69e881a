"""HTTP for mirrored repositories: writes refused, blobs streamed while they are fetched.

Reads of mirrored repositories go through the ordinary handlers, which ask the registry's
:class:`~cargohold.mirror.service.Mirrors` when the name is mirrored; this module holds the two
things that are HTTP's own: refusing pushes and deletes before any body is read, and sending a
blob that is still arriving from the upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargohold.api import routes
from cargohold.api.common import API_VERSION_HEADER, REGISTRY_KEY, registry_of, requested_range
from cargohold.digest import Digest
from cargohold.errors import RegistryError
from cargohold.mirror.fetch import FetchFailed, Tail
from cargohold.mirror.service import Relay

log = logging.getLogger("cargohold.mirror")

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


@web.middleware
async def refuse_writes(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Pushes and deletes of mirrored repositories: 405 ``UNSUPPORTED``, as registry:2's proxy
    answers them (after the auth middleware, so an anonymous caller still gets its 401)."""
    if request.method not in _READS:
        found = request.get(routes.ROUTE_KEY)
        if found is not None:
            registry_of(request).mirrors.refuse_write(found.repository)
    return await handler(request)


def split(opened: Tail | Relay | None) -> tuple[Tail | None, Relay | None]:
    """:meth:`Mirrors.open_blob`'s answer as (a fetch to follow, a body to relay)."""
    if isinstance(opened, Relay):
        return None, opened
    return opened, None


async def relay_blob(
    request: web.Request, relay: Relay, digest: Digest, headers: dict[str, str]
) -> web.StreamResponse:
    """Pass a blob through from the upstream without storing it (read-only mode), hashed as it
    goes: the last chunk is held back until the digest matched, and a mismatch aborts the
    connection, as for a fetch. Whole bodies only (no coalescing, no file to take a range of)."""
    headers.pop("Accept-Ranges", None)
    if relay.size is not None:
        headers["Content-Length"] = str(relay.size)
    else:
        headers.pop("Content-Length", None)
    response = web.StreamResponse(status=200, headers={**headers, **API_VERSION_HEADER})
    if relay.size is None:
        response.enable_chunked_encoding()
    hasher = hashlib.new(digest.algorithm)
    held: bytes | None = None
    sent = 0
    try:
        await response.prepare(request)
        async for chunk in relay.chunks():
            hasher.update(chunk)
            if held is not None:
                await response.write(held)
            held = chunk
            sent += len(chunk)
        if hasher.hexdigest() != digest.hex or (relay.size is not None and sent != relay.size):
            log.error("upstream sent a blob that does not match %s: not relayed whole", digest)
            transport = request.transport
            if transport is not None:
                transport.abort()
            return response
        if held is not None:
            await response.write(held)
    except ConnectionError:
        return response
    finally:
        relay.close()
    await response.write_eof()
    return response


def install(app: web.Application) -> None:
    """Call after the auth middleware is installed."""
    if app[REGISTRY_KEY].mirrors.enabled:
        app.middlewares.append(refuse_writes)


async def stream_blob(
    request: web.Request, tail: Tail, digest: Digest, headers: dict[str, str]
) -> web.StreamResponse:
    """Send a blob as its fetch writes it. A failed fetch (corrupt or cut-off upstream) aborts
    the connection before the last byte, so no client takes a wrong blob for a whole one. A
    single byte range is answered 206 as for a stored blob (its bytes as they arrive), once
    the upstream said how large the blob is."""
    status, start, stop = 200, 0, tail.size
    if tail.size is not None:
        try:
            span = requested_range(request, tail.size)
        except RegistryError:
            tail.close()
            raise
        if span is not None:
            status, (start, last) = 206, span
            stop = last + 1
            headers["Content-Range"] = f"bytes {start}-{last}/{tail.size}"
        headers["Content-Length"] = str(stop - start if stop is not None else 0)
    else:
        headers.pop("Content-Length", None)
        headers.pop("Accept-Ranges", None)  # no size, no ranges: the whole body, chunked
    response = web.StreamResponse(status=status, headers={**headers, **API_VERSION_HEADER})
    if tail.size is None:
        response.enable_chunked_encoding()
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)  # a StreamResponse sends its headers here
        async for offset, count in tail.segments(start, stop):
            transport = request.transport
            if transport is None or transport.is_closing():
                return response  # the client went away; the fetch goes on for the others
            # Zero-copy, like stored blobs (FileResponse); falls back to reads under TLS.
            await loop.sendfile(transport, tail.file, offset, count)
    except FetchFailed as exc:
        log.warning("aborting the response for %s: %s", digest, exc)
        transport = request.transport
        if transport is not None:
            transport.abort()  # the client sees a cut body, never a complete-looking wrong one
        return response
    except ConnectionError:
        return response  # the client hung up: nothing to report, the fetch goes on
    finally:
        tail.close()
    await response.write_eof()
    return response
