"""Blob and upload endpoints: ``/v2/<name>/blobs/...``."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from typing import IO, Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ETag
from aiohttp.web_fileresponse import _FileResponseResult

from cargohold import faults, metrics
from cargohold.api import auditing, mirror, notify, uploadstate
from cargohold.api.common import (
    API_VERSION_HEADER,
    SIMPLE_RANGE,
    empty,
    has_body,
    location,
    parse_content_range,
    registry_of,
    requested_range,
)
from cargohold.api.socketbody import request_body
from cargohold.digest import Digest, check_name
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.blobcache import Fill, LocalBlobCache
from cargohold.registry.integrity import BlobVerifier, identity
from cargohold.registry.uploads import check_upload_id
from cargohold.storage.driver import StorageError


def _blob_headers(digest: Digest, size: int) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Accept-Ranges": "bytes",
        "ETag": f'"{digest}"',
        "Cache-Control": "max-age=31536000",
        "Content-Length": str(size),
    }


async def head_blob(request: web.Request, name: str, digest_s: str) -> web.StreamResponse:
    reg = registry_of(request)
    digest = Digest.parse(digest_s)
    if reg.mirrors.route(name) is not None:
        size = await reg.mirrors.head_blob(name, digest)
        if size is not None:  # not fetched yet: the upstream's answer
            return web.Response(status=200, headers=_blob_headers(digest, size))
    info = await reg.blobs.describe(name, digest)
    return web.Response(status=200, headers=_blob_headers(digest, info.size))


async def get_blob(request: web.Request, name: str, digest_s: str) -> web.StreamResponse:
    reg = registry_of(request)
    digest = Digest.parse(digest_s)
    if reg.mirrors.route(name) is not None:
        tail, relay = mirror.split(await reg.mirrors.open_blob(name, digest))  # None: stored
        if tail is not None:
            if request.method == "GET":
                notify.blob_event(request, "pull", name, digest, tail.size or 0)
            return await mirror.stream_blob(request, tail, digest, _blob_headers(digest, 0))
        if relay is not None:  # read-only mode: passed through, not stored
            return await mirror.relay_blob(request, relay, digest, _blob_headers(digest, 0))
    info = await reg.blobs.describe(name, digest)
    if request.method == "GET":
        notify.blob_event(request, "pull", name, digest, info.size)
    if not reg.config.storage.redirect_disable:
        url = await reg.blobs.redirect_url(digest)
        if url is not None:
            return web.Response(status=307, headers={"Location": url, "Content-Length": "0"})
    headers = _blob_headers(digest, info.size)
    # The conditionals against the digest ETag, as registry:2 (http.ServeContent with no
    # modification time: If-Modified-Since and If-Unmodified-Since do not apply).
    if_match = request.headers.getall("If-Match", [])
    if if_match and not {headers["ETag"], "*"} & _etags(if_match, weak=False):
        return web.Response(status=412, headers={"ETag": headers["ETag"], "Content-Length": "0"})
    if headers["ETag"] in _etags(request.headers.getall("If-None-Match", [])):
        del headers["Content-Length"]
        return web.Response(status=304, headers=headers)
    range_header = request.headers.get("Range")
    simple_range = range_header is None or SIMPLE_RANGE.match(range_header) is not None
    if info.local_path is not None and simple_range:
        # FileResponse does the single byte range and zero-copy sendfile; it sets its own
        # Content-Length.
        del headers["Content-Length"]
        opened = _open_blob_file(info.local_path, digest)
        if reg.verifier.known(identity(os.fstat(opened.fileno()))) is False:
            opened.close()
            raise _corrupt(digest)
        return _BlobFile(
            info.local_path, headers=headers, digest=digest, verifier=reg.verifier, opened=opened
        )
    fill = None
    cache = reg.blobcache
    if cache is not None and request.method == "GET" and info.size > 0:
        # Only now, after the link and the store's stat said the blob is there.
        cached = await _cached_file(reg.verifier, cache, digest, info.size, range_header is None)
        if cached is not None and not simple_range:
            cached[1].close()
        elif cached is not None:
            metrics.blob_cache_hit(info.size)
            del headers["Content-Length"]
            path, opened = cached
            return _BlobFile(
                path, headers=headers, digest=digest, verifier=reg.verifier, opened=opened
            )
        metrics.blob_cache_miss()
        if range_header is None:
            fill = cache.begin_fill(digest)
    # Other units must be ignored (RFC 9110 14.2) and several ranges may be: send it whole.
    return await _stream_blob(
        request, digest, info.size, headers, honour_range=simple_range, fill=fill
    )


def _open_blob_file(path: str, digest: Digest) -> io.BufferedReader:
    """The stored blob's data file, opened by the handler rather than later by the response:
    garbage collection or a delete may remove it at any moment after the lookup. Once open it
    stays readable to the end (the client gets the whole blob it asked for); one gone before
    that is the spec's BLOB_UNKNOWN, not aiohttp's empty 404."""
    faults.pause_point("blob-found")  # the tests remove the file here
    try:
        opened = open(path, "rb")  # noqa: SIM115 (the response closes it)
    except FileNotFoundError:
        raise RegistryError(ErrorCode.BLOB_UNKNOWN, detail={"digest": str(digest)}) from None
    faults.pause_point("blob-opened")
    return opened


async def _cached_file(
    verifier: BlobVerifier, cache: LocalBlobCache, digest: Digest, size: int, wait: bool
) -> tuple[str, io.BufferedReader] | None:
    """The blob's file in the local cache, open: there already, or filled by another request
    of this process while this one waited (whole-blob GETs only; a range streams at once).

    Opened here, not by the response: the size bound's sweep may remove the file at any moment,
    and once it is open it stays readable to the end; one removed before that is a miss."""
    found = cache.lookup(digest, size)
    if found is None and wait and await cache.wait_for_fill(digest):
        found = cache.lookup(digest, size)
    if found is None:
        return None
    faults.pause_point("blobcache-found")  # the tests remove the file here
    path = found[0]
    try:
        opened = open(path, "rb")  # noqa: SIM115 (the response closes it)
    except FileNotFoundError:
        return None  # evicted since the lookup: streamed from the store (and filled again)
    st = os.fstat(opened.fileno())
    if st.st_size != size or verifier.known(identity(st)) is False:
        opened.close()
        cache.discard(path)  # it rotted: fill it anew from the store
        return None
    return path, opened


class _BlobFile(web.FileResponse):
    """A blob's ETag is its digest, the same on GET and HEAD and on every replica: this keeps
    the one it was made with where FileResponse would set one from the file's mtime."""

    @property
    def etag(self) -> ETag | None:
        return super().etag

    @etag.setter
    def etag(self, value: object) -> None:
        pass

    def __init__(
        self,
        path: str,
        *,
        headers: dict[str, str],
        digest: Digest,
        verifier: BlobVerifier,
        opened: io.BufferedReader,
    ) -> None:
        super().__init__(path, headers=headers)
        self._digest = digest
        self._verifier = verifier
        self._opened: io.BufferedReader | None = opened

    def _make_response(
        self, request: web.BaseRequest, accept_encoding: str
    ) -> tuple[_FileResponseResult, io.BufferedReader | None, os.stat_result, str | None]:
        """A file the handler opened (every blob's: the store's or the cache's) is sent as it
        is, even if it was removed since; aiohttp's own conditionals (mtime-based ETag,
        If-Modified-Since) do not apply to a blob file's times, as they do not to a blob
        streamed from the store (nor in registry:2): the blob's ETag is its digest, answered by
        the handler."""
        opened, self._opened = self._opened, None
        if opened is None:  # prepared twice: aiohttp's own open, as FileResponse does
            return super()._make_response(request, accept_encoding)
        return _FileResponseResult.SEND_FILE, opened, os.fstat(opened.fileno()), None

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        """The first time this process sends this blob file, everything but its last byte
        goes out while a thread hashes it; the last byte only if the hash matched (see
        :mod:`cargohold.registry.integrity`). Verified files go out in one ``sendfile``."""
        key = identity(os.fstat(fobj.fileno()))
        if self._verifier.known(key):
            return await super()._sendfile(request, fobj, offset, count)
        check = self._verifier.check(key, fobj.fileno(), self._digest)
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        head = count - 1
        if head:
            await self._send_range(request, writer, fobj, offset, head)
        if not await asyncio.shield(check):
            transport.abort()  # the client must see a failure, not a wrong blob
            raise ConnectionResetError(f"blob {self._digest} is corrupt")
        await self._send_range(request, writer, fobj, offset + head, 1)
        await web.StreamResponse.write_eof(self)
        return writer

    async def _send_range(
        self,
        request: web.BaseRequest,
        writer: AbstractStreamWriter,
        fobj: IO[Any],
        offset: int,
        count: int,
    ) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("Connection lost")
        try:
            await request._loop.sendfile(transport, fobj, offset, count)
        except NotImplementedError:
            await self._sendfile_fallback(writer, fobj, offset, count)


def _corrupt(digest: Digest) -> RegistryError:
    return RegistryError(
        ErrorCode.UNKNOWN,
        "the stored blob does not match its digest; an operator must run cargohold fsck",
        {"digest": str(digest)},
        status=500,
    )


def _etags(values: list[str], weak: bool = True) -> set[str]:
    """The entity tags of conditional headers; ``weak``: W/ tags compare as strong ones
    (If-None-Match's weak comparison), else they match nothing (If-Match's strong one)."""
    tags = {tag.strip() for value in values for tag in value.split(",")}
    return {tag.removeprefix("W/") for tag in tags} if weak else tags


async def _stream_blob(
    request: web.Request,
    digest: Digest,
    size: int,
    headers: dict[str, str],
    honour_range: bool = True,
    fill: Fill | None = None,
) -> web.StreamResponse:
    """Bodies from drivers without a local file: streamed, with single-range support. With
    ``fill`` (a whole body) the bytes are also written to the local blob cache, which keeps
    them only if they hashed to the digest (registry/blobcache.py)."""
    try:
        return await _stream_body(request, digest, size, headers, honour_range, fill)
    finally:
        if fill is not None:
            fill.abort()  # a no-op once it was stored


async def _stream_body(
    request: web.Request,
    digest: Digest,
    size: int,
    headers: dict[str, str],
    honour_range: bool,
    fill: Fill | None,
) -> web.StreamResponse:
    start, end = 0, size - 1
    status = 200
    span = requested_range(request, size) if honour_range else None
    if span is not None:
        (start, end), status = span, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    if status != 200 and fill is not None:
        fill.abort()
        fill = None
    # Prepared here, so the API middleware cannot add these any more.
    response = web.StreamResponse(status=status, headers={**headers, **API_VERSION_HEADER})
    if request.method == "HEAD" or size == 0:
        await response.prepare(request)
        return response
    remaining = end - start + 1
    # A whole body is hashed as it goes and its last byte held back until the hash matched
    # (see registry/integrity.py): the client cannot take a body for complete before it was
    # checked, and nothing but that byte waits, so a stream holds no more than the chunk in
    # hand. A range cannot be checked without reading the rest. Hashed on the event loop,
    # not in a thread: a chunk is at most 1 MiB (half a millisecond), and a thread hand-off
    # per chunk cost more than the hash (bench/replica_storm.py, 40 streams of 16 MiB from
    # S3: the replica's CPU fell from 3.1 to 2.5 s, and its memory under the storm from
    # +60..110 MiB to +5 MiB over rest, as chunks no longer wait for the threads).
    hasher = hashlib.new(digest.algorithm) if status == 200 else None
    tail = b""
    chunks = aiter(registry_of(request).blobs.read(digest, start))
    # The first bytes are fetched before the status goes out: a store that fails or stalls
    # now is still answered with a clean 503. Once the status is out, the only honest
    # signal left is to cut the connection, so the client sees a short body, never a
    # complete-looking one or an error document spliced into it.
    chunk = await anext(chunks, b"")
    await response.prepare(request)
    try:
        while remaining > 0 and chunk:
            if len(chunk) > remaining:
                chunk = chunk[:remaining]
            if hasher is not None:
                hasher.update(chunk)
            if fill is not None:
                fill.write(chunk)
            remaining -= len(chunk)
            if remaining == 0 and hasher is not None:
                chunk, tail = chunk[:-1], chunk[-1:]
            if chunk:
                await response.write(chunk)
            if remaining > 0:
                chunk = await anext(chunks, b"")
    except StorageError as exc:
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"blob {digest}: storage failed mid-body: {exc}") from exc
    if remaining or (hasher is not None and hasher.hexdigest() != digest.hex):
        if fill is not None:
            fill.abort("mismatch" if not remaining else "abandoned")
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError(f"blob {digest} is corrupt or short")
    if fill is not None:
        fill.commit(registry_of(request).verifier)
    if tail:
        await response.write(tail)
    await response.write_eof()
    return response


async def delete_blob(request: web.Request, name: str, digest_s: str) -> web.StreamResponse:
    reg = registry_of(request)
    async with auditing.refusals(request, "delete", name, digest_s):
        reg.require_writable()
        reg.require_delete()
        digest = Digest.parse(digest_s)
        await reg.blobs.unlink(name, digest)
    notify.delete_event(request, name, digest=str(digest))
    auditing.record(request, "delete", name, digest_s, digest=str(digest))
    return empty(202, {"Docker-Content-Digest": str(digest)})


def _upload_location(request: web.Request, name: str, upload_id: str) -> str:
    return location(request, f"/v2/{name}/blobs/uploads/{upload_id}")


def _progress_headers(
    request: web.Request, name: str, upload_id: str, size: int, started_at: str
) -> dict[str, str]:
    state = uploadstate.issue(request, name, upload_id, size, started_at)
    return {
        "Location": f"{_upload_location(request, name, upload_id)}?{uploadstate.PARAM}={state}",
        "Range": f"0-{size - 1 if size > 0 else 0}",
        "Docker-Upload-UUID": upload_id,
    }


def _created(request: web.Request, name: str, digest: Digest) -> web.Response:
    return empty(
        201,
        {
            "Location": location(request, f"/v2/{name}/blobs/{digest}"),
            "Docker-Content-Digest": str(digest),
        },
    )


async def start_upload(request: web.Request, name: str) -> web.StreamResponse:
    reg = registry_of(request)
    reg.require_writable()
    mount = request.query.get("mount")
    source = request.query.get("from")
    if mount and source:
        digest = Digest.try_parse(mount)
        if digest is not None and source != name:
            try:
                check_name(source)
            except RegistryError:
                source = ""
            mounted = await reg.blobs.mount(name, source, digest) if source else None
            if mounted is not None:
                notify.blob_event(request, "mount", name, digest, mounted.size, source)
                return _created(request, name, digest)
        elif digest is not None and await reg.blobs.is_linked(name, digest):
            return _created(request, name, digest)
        # Not mountable: the spec says fall back to an ordinary upload session.
    digest_s = request.query.get("digest")
    if digest_s is not None:
        digest = Digest.parse(digest_s)
        async with auditing.refusals(request, "upload", name, digest_s):
            await reg.quotas.precheck(name, request.content_length, digest)  # before any byte
            upload_id = await reg.uploads.start(name)
            body = request_body(request, final=True) if has_body(request) else None
            info = await reg.uploads.finish(name, upload_id, digest, body)
        notify.blob_event(request, "push", name, info.digest, info.size)
        return _created(request, name, info.digest)
    upload_id = await reg.uploads.start(name)
    return empty(202, _progress_headers(request, name, upload_id, 0, uploadstate.now()))


async def _started_at(
    request: web.Request, name: str, upload_id: str, state: uploadstate.UploadState | None
) -> str:
    """When the upload began: from its signed state, else (state stripped) from storage."""
    if state is not None:
        return state.started_at
    return await registry_of(request).uploads.started_at(name, upload_id)


async def upload_status(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = registry_of(request)
    state = await uploadstate.check(request, name, check_upload_id(upload_id))
    size = await reg.uploads.offset(name, upload_id)
    started = await _started_at(request, name, upload_id, state)
    return empty(204, _progress_headers(request, name, upload_id, size, started))


async def patch_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = registry_of(request)
    reg.require_writable()
    state = await uploadstate.check(request, name, check_upload_id(upload_id))
    start, length = _declared_chunk(request)
    async with auditing.refusals(request, "upload", name, upload_id):
        await _precheck_quota(request, name, upload_id, None)
    size = await reg.uploads.append(name, upload_id, request_body(request), start, length)
    started = await _started_at(request, name, upload_id, state)
    return empty(202, _progress_headers(request, name, upload_id, size, started))


def _declared_chunk(request: web.Request) -> tuple[int | None, int | None]:
    """(start, length) from a Content-Range, checked against the body's Content-Length; a
    range that disagrees with the body is refused (416) before a byte is written."""
    content_range = parse_content_range(request.headers.get("Content-Range"))
    if content_range is None:
        return None, None
    start, end = content_range
    length = end - start + 1
    sent = request.content_length
    if sent is None and not has_body(request):
        sent = 0
    if sent is not None and sent != length:
        raise RegistryError(
            ErrorCode.RANGE_INVALID,
            f"Content-Range covers {length} bytes, the body has {sent}",
        )
    return start, length


async def finish_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = registry_of(request)
    reg.require_writable()
    await uploadstate.check(request, name, check_upload_id(upload_id))
    digest_s = request.query.get("digest")
    if not digest_s:
        raise RegistryError(ErrorCode.DIGEST_INVALID, "the digest parameter is required")
    digest = Digest.parse(digest_s)
    start, length = _declared_chunk(request)
    body = request_body(request, final=True) if has_body(request) else None
    async with auditing.refusals(request, "upload", name, digest_s):
        await _precheck_quota(request, name, upload_id, digest)
        info = await reg.uploads.finish(name, upload_id, digest, body, start, length)
    notify.blob_event(request, "push", name, info.digest, info.size)
    return _created(request, name, info.digest)


async def _precheck_quota(
    request: web.Request, name: str, upload_id: str, digest: Digest | None
) -> None:
    """An upload whose declared size already passes a quota is refused before its body is read
    (the final check is at completion, when the digest and size are known)."""
    reg = registry_of(request)
    if reg.quotas.active and request.content_length:
        size = await reg.uploads.offset(name, upload_id) + request.content_length
        await reg.quotas.precheck(name, size, digest)


async def cancel_upload(request: web.Request, name: str, upload_id: str) -> web.StreamResponse:
    reg = registry_of(request)
    reg.require_writable()
    await uploadstate.check(request, name, check_upload_id(upload_id))
    await reg.uploads.cancel(name, upload_id)
    return empty(204, {})
