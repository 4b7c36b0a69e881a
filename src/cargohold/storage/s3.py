"""The S3 driver: registry:2's ``s3`` storage on aiobotocore, same keys, same bucket.

Keys are registry:2's: ``<rootdirectory>/docker/registry/v2/...`` with no leading slash (so an
empty ``rootdirectory`` gives ``docker/registry/v2/...``), which is what lets a bucket move
between registry:2 and cargohold in either direction.

S3 has no directories, so, as in registry:2:

- ``stat`` asks ``HeadObject`` first and, when there is no such key, treats the path as a
  directory if any key lies below ``<key>/``;
- ``list`` is ``ListObjectsV2`` with ``Delimiter=/`` (files and common prefixes are the children);
- ``move`` is a copy (``CopyObject``, or ``UploadPartCopy`` parts above
  ``multipartcopythresholdsize`` and always above 5 GiB) followed by a delete;
- ``delete`` removes the key and every key below ``<key>/``, and aborts the multipart uploads
  in progress there;
- ``url_for`` is a presigned ``GetObject`` URL, so blob downloads go straight to the store.

**Appending (resumable uploads).** An upload's data grows over several requests that may each
land on a different replica, and S3 objects cannot be appended to. A writer opened with
``append=True`` therefore keeps the bytes in an S3 multipart upload of the key: every full
``chunksize`` (at least 5 MiB, S3's minimum for all parts but the last) goes up as a part as soon
as it is received, while the not-yet-5-MiB tail cannot be a part yet. ``commit()`` then stores,
*at the key itself*, a small "append record" object: the tail bytes plus a JSON record of the
multipart upload id and of each part's number, ETag and size, with the total size and a random
token in its metadata. That PUT is the commit point: whatever a writer uploaded but did not record
(a crash, a client that went away) is simply overwritten by the next writer, which resumes from
the record wherever it runs. ``stat`` reports the recorded total size and token, so the upload's
offset is known from one ``HeadObject``. The first read, move or copy of the key *finalizes* it:
the tail goes up as the last part and ``CompleteMultipartUpload`` (with the recorded ETags, so a
part overwritten by a concurrent writer is refused) replaces the record with the whole object.
Appending to an ordinary object (finalized, or written by registry:2) starts a new multipart
upload whose first parts are server-side copies of the object (or a read, below 5 MiB).
Uploads never larger than one chunk never create a multipart upload at all.

registry:2 keeps the tail as a short last part and, to append after it, completes the upload and
copies it into a new one; cargohold's record avoids that copy on every chunk, and an upload in
progress is not readable by the other program (finished blobs are: they are ordinary objects).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from cargohold import memory
from cargohold.storage.driver import (
    FileInfo,
    FileWriter,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
    StorageError,
    StorageUnavailableError,
    check_path,
)
from cargohold.storage.s3params import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, S3Params, parse_s3_params

log = logging.getLogger("cargohold.storage.s3")

LIST_MAX = 1000  # keys per ListObjectsV2 / DeleteObjects call
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
PRESIGN_SECONDS = 20 * 60  # as registry:2
READ_CHUNK = 1 << 20
READ_RETRIES = 3
# Part uploads overlapping the receipt of the next chunk, per writer: an upload holds at most
# (1 + PARTS_IN_FLIGHT) * chunksize in memory (20 MiB with the default chunksize).
PARTS_IN_FLIGHT = 1
CONTENT_TYPE = "application/octet-stream"
# A writer that received at least this much hands the memory its buffers took back to the
# system when it ends (memory.trim): glibc keeps up to twice the largest recent buffer
# (chunksize) otherwise, ~20 MiB per process after a push, until the next periodic trim.
TRIM_AFTER = 1 << 20

# Metadata of an append record (S3 lowercases user metadata names).
META_APPEND = "cargohold-append"
META_SIZE = "cargohold-size"
META_TOKEN = "cargohold-token"
META_RECORD = "cargohold-record"
RECORD_VERSION = "1"

_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})


# The services whose entries of botocore's endpoints.json a session of this driver reads: S3's,
# and those of the clients botocore's credential providers make (assumed roles, SSO, console
# login). See _session.
ENDPOINT_SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc", "signin"})


def _session() -> Any:
    """A botocore session for one S3 client, holding of botocore's data only what it reads.

    A session parses ``endpoints.json`` (every AWS service in every partition) and S3's service
    model once and keeps them for its life: ~6.5 MiB of dicts for the endpoints, of which an S3
    client reads its own service's entry, and 3.2 MiB for the model, 1.3 MiB of it the API
    reference's text (``documentation``, read only to write docstrings). The loader hands out
    its cached copies, so trimming them here, before the client is made from them, frees the
    rest for good: ~6 MiB per process.
    """
    session = get_session()
    loader = session.get_component("data_loader")
    endpoints = loader.load_data("endpoints")
    for partition in endpoints.get("partitions", ()):
        services = partition.get("services", {})
        partition["services"] = {k: v for k, v in services.items() if k in ENDPOINT_SERVICES}
    # The arguments create_client loads it with, so that this is the cached copy it gets.
    model = loader.load_service_model("s3", "service-2", api_version=None)
    model.pop("documentation", None)
    for operation in model.get("operations", {}).values():
        operation.pop("documentation", None)
    for shape in model.get("shapes", {}).values():
        shape.pop("documentation", None)
        for member in shape.get("members", {}).values():
            member.pop("documentation", None)
    return session


class S3Error(StorageError):
    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class S3UnavailableError(S3Error, StorageUnavailableError):
    """S3 kept failing (5xx, throttling, no connection, timeouts) through botocore's retries."""


# Error codes that mean "the store is failing now", not "this request is wrong".
_UNAVAILABLE = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)


@dataclass(frozen=True, slots=True)
class _Part:
    number: int
    etag: str
    size: int


@dataclass
class _Record:
    """What an append record object holds: the multipart upload so far, and the tail."""

    upload_id: str | None
    parts: list[_Part]
    tail: bytes
    token: str

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts) + len(self.tail)


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(self, params: S3Params) -> None:
        self.params = params
        self.presign_seconds = PRESIGN_SECONDS
        self.bucket = params.bucket
        root = params.rootdirectory.rstrip("/")
        self._root = root
        self._base = root.lstrip("/")  # key of "/" ("" when rootdirectory is empty)
        self._client_obj: Any = None
        self._stack: AsyncExitStack | None = None
        self._client_lock = asyncio.Lock()

    @classmethod
    def from_params(cls, params: dict[str, Any], presign_seconds: float = 0.0) -> S3Driver:
        driver = cls(parse_s3_params(params))
        if presign_seconds > 0:  # storage.redirect.expirydelay
            driver.presign_seconds = max(1, round(presign_seconds))
        return driver

    @property
    def identity(self) -> str:
        return self.params.identity

    # -- keys --------------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        """registry:2's s3Path: ``TrimLeft(TrimRight(root, "/") + path, "/")``."""
        check_path(path)
        if path == "/":
            return self._base
        return (self._root + path).lstrip("/")

    def _dir_prefix(self, path: str) -> str:
        key = self._key(path)
        return f"{key}/" if key else ""

    def _path_of(self, key: str) -> str:
        rel = key[len(self._base) :] if self._base else key
        return "/" + rel.lstrip("/")

    # -- client ------------------------------------------------------------------------------

    async def _client(self) -> Any:
        if self._client_obj is not None:
            return self._client_obj
        async with self._client_lock:
            if self._client_obj is None:
                p = self.params
                config = BotoConfig(
                    signature_version="s3v4" if p.v4auth else "s3",
                    s3={
                        "addressing_style": "path" if p.forcepathstyle else "auto",
                        "use_accelerate_endpoint": p.accelerate,
                        "use_dualstack_endpoint": p.usedualstack,
                    },
                    # botocore's standard mode: 500/503/SlowDown, throttling and broken
                    # connections are retried with exponential backoff and full jitter; what
                    # still fails becomes S3UnavailableError (a 503 to the client).
                    # A store that accepts and then stalls is a failure after readtimeout
                    # (storage.s3.connecttimeout / readtimeout), retried like the others.
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=p.connecttimeout,
                    read_timeout=p.readtimeout,
                    max_pool_connections=max(64, min(p.multipartcopymaxconcurrency, 256)),
                    user_agent_extra=p.useragent or None,
                    # Plain Content-MD5/no trailer checksums: what S3-compatible stores accept.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                kwargs: dict[str, Any] = {
                    "region_name": p.region,
                    "config": config,
                    "verify": not p.skipverify,
                    "use_ssl": p.secure,
                }
                if p.endpoint_url:
                    kwargs["endpoint_url"] = p.endpoint_url
                if p.accesskey:
                    kwargs["aws_access_key_id"] = p.accesskey
                    kwargs["aws_secret_access_key"] = p.secretkey
                    if p.sessiontoken:
                        kwargs["aws_session_token"] = p.sessiontoken
                stack = AsyncExitStack()
                client = await stack.enter_async_context(_session().create_client("s3", **kwargs))
                self._stack = stack
                self._client_obj = client
        return self._client_obj

    async def close(self) -> None:
        stack, self._stack, self._client_obj = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(Exception):
                await stack.aclose()

    async def _call(self, operation: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 call; a missing key becomes PathNotFoundError, anything else S3Error."""
        client = await self._client()
        try:
            result = await getattr(client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as e:
            error = e.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND and operation in ("head_object", "get_object"):
                raise PathNotFoundError(path) from None
            message = error.get("Message") or str(e)
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            kind = S3UnavailableError if status >= 500 or code in _UNAVAILABLE else S3Error
            raise kind(f"s3 {operation} {path}: {code} {message}", code) from e
        except (BotoCoreError, aiohttp.ClientError, TimeoutError, OSError) as e:
            raise S3UnavailableError(f"s3 {operation} {path}: {type(e).__name__}: {e}") from e
        return cast(dict[str, Any], result)

    def _write_args(self) -> dict[str, Any]:
        """What registry:2 sets on every object it creates."""
        p = self.params
        args: dict[str, Any] = {"ContentType": CONTENT_TYPE, "ACL": p.objectacl}
        if p.encrypt:
            args["ServerSideEncryption"] = "aws:kms" if p.keyid else "AES256"
            if p.keyid:
                args["SSEKMSKeyId"] = p.keyid
        if p.storageclass != "NONE":
            args["StorageClass"] = p.storageclass
        return args

    # -- reading -----------------------------------------------------------------------------

    async def stat(self, path: str) -> FileInfo:
        key = self._key(path)
        if key and path != "/":
            try:
                head = await self._call("head_object", path, Key=key)
            except PathNotFoundError:
                pass
            else:
                return self._info(path, head)
        resp = await self._call("list_objects_v2", path, Prefix=self._dir_prefix(path), MaxKeys=1)
        if resp.get("KeyCount") or resp.get("Contents") or path == "/":
            return FileInfo(path, 0, 0.0, True)
        raise PathNotFoundError(path)

    @staticmethod
    def _info(path: str, head: dict[str, Any]) -> FileInfo:
        meta = head.get("Metadata") or {}
        modified = head.get("LastModified")
        mtime = modified.timestamp() if modified is not None else 0.0
        if meta.get(META_APPEND):
            return FileInfo(path, int(meta.get(META_SIZE, 0)), mtime, False, meta.get(META_TOKEN))
        return FileInfo(path, int(head.get("ContentLength", 0)), mtime, False, head.get("ETag"))

    async def get_content(self, path: str) -> bytes:
        chunks = [chunk async for chunk in self.reader(path)]
        return b"".join(chunks)

    async def _open(self, path: str, offset: int) -> dict[str, Any] | None:
        """GetObject from ``offset``, finalizing an append record first; None past the end."""
        key = self._key(path)
        for _ in range(3):
            kwargs: dict[str, Any] = {"Key": key}
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
            try:
                resp = await self._call("get_object", path, **kwargs)
            except S3Error as e:
                if e.code == "InvalidRange":
                    return None
                raise
            if not (resp.get("Metadata") or {}).get(META_APPEND):
                return resp
            resp["Body"].close()
            await self._finalize(path, key)
        raise S3Error(f"s3 {path}: append record keeps changing while being read")

    async def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        """A ranged streaming read; a dropped connection resumes where it broke off."""
        resp = await self._open(path, offset)
        if resp is None:
            return
        position = offset
        retries = 0
        while True:
            body = resp["Body"]
            try:
                async for chunk in body.iter_chunks(READ_CHUNK):
                    position += len(chunk)
                    yield chunk
                return
            except (aiohttp.ClientError, TimeoutError, OSError, BotoCoreError) as e:
                retries += 1
                if retries > READ_RETRIES:
                    raise S3UnavailableError(f"s3 read {path} at {position}: {e}") from e
                log.warning("s3 read of %s broke at byte %d (%s); resuming", path, position, e)
            finally:
                body.close()
            resp = await self._open(path, position)
            if resp is None:
                return

    async def list(self, path: str) -> list[str]:
        prefix = self._dir_prefix(path)
        out: list[str] = []
        async for page in self._pages(path, Prefix=prefix, Delimiter="/"):
            for obj in page.get("Contents") or []:
                if obj["Key"] != prefix:  # a "directory marker" some tools create
                    out.append(self._path_of(obj["Key"]))
            for common in page.get("CommonPrefixes") or []:
                out.append(self._path_of(common["Prefix"].rstrip("/")))
        if not out and path != "/":
            raise PathNotFoundError(path)
        return out

    async def list_after(self, path: str, after: str, limit: int) -> builtins.list[str]:
        """One ``ListObjectsV2`` per 1000 names, starting after ``after`` (S3 lists in UTF-8
        byte order); keys further down (common prefixes) are skipped, so a page of a directory
        with subdirectories may take another request to fill."""
        prefix = self._dir_prefix(path)
        args: dict[str, Any] = {"Prefix": prefix, "Delimiter": "/"}
        if after:
            args["StartAfter"] = prefix + after
        out: builtins.list[str] = []
        while len(out) < limit:
            args["MaxKeys"] = min(limit - len(out), LIST_MAX)
            resp = await self._call("list_objects_v2", path, **args)
            for obj in resp.get("Contents") or []:
                name = obj["Key"][len(prefix) :]
                if name > after:  # (not the directory's own marker object)
                    out.append(name)
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                break
            args["ContinuationToken"] = token
        return out[:limit]

    async def walk(self, path: str) -> builtins.list[FileInfo]:
        """Every key below ``path`` with flat listings: one request per 1000 keys. Sizes are
        the stored objects' (an upload in progress shows its append record's)."""
        prefix = self._dir_prefix(path)
        out: builtins.list[FileInfo] = []
        async for page in self._pages(path, Prefix=prefix):
            for obj in page.get("Contents") or []:
                if obj["Key"] == prefix:
                    continue
                modified = obj.get("LastModified")
                out.append(
                    FileInfo(
                        self._path_of(obj["Key"]),
                        int(obj.get("Size", 0)),
                        modified.timestamp() if modified is not None else 0.0,
                        False,
                        obj.get("ETag"),
                    )
                )
        return out

    async def _pages(self, path: str, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        token: str | None = None
        while True:
            args = dict(kwargs, MaxKeys=LIST_MAX)
            if token:
                args["ContinuationToken"] = token
            page = await self._call("list_objects_v2", path, **args)
            yield page
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def url_for(self, path: str, method: str = "GET") -> str | None:
        if method not in ("GET", "HEAD"):
            return None
        client = await self._client()
        operation = "get_object" if method == "GET" else "head_object"
        try:
            url = await client.generate_presigned_url(
                operation,
                Params={"Bucket": self.bucket, "Key": self._key(path)},
                ExpiresIn=self.presign_seconds,
            )
        except (BotoCoreError, ClientError) as e:
            raise S3Error(f"s3 presign {path}: {e}") from e
        return str(url)

    async def check_health(self) -> None:
        await self._call("head_bucket", "/")

    # -- writing -----------------------------------------------------------------------------

    async def put_content(self, path: str, data: bytes | bytearray) -> None:
        await self._call(
            "put_object", path, Key=self._key(path), Body=_Body(data), **self._write_args()
        )

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        key = self._key(path)
        if not key or path == "/":
            raise InvalidPathError(path)
        if not append:
            return _Writer(self, path, key, _Record(None, [], b"", ""), appendable=False)
        return _Writer(self, path, key, await self._resume(path, key), appendable=True)

    async def _resume(self, path: str, key: str) -> _Record:
        """The state an appending writer starts from: the record, or an ordinary object."""
        try:
            head = await self._call("head_object", path, Key=key)
        except PathNotFoundError:
            return _Record(None, [], b"", "")
        meta = head.get("Metadata") or {}
        size = int(head.get("ContentLength", 0))
        if meta.get(META_APPEND):
            record = await self._read_record(path, key)
            if record is not None:
                return record
            return await self._resume(path, key)  # finalized meanwhile: start over
        if size == 0:
            return _Record(None, [], b"", "")
        if size < MIN_CHUNK_SIZE:
            return _Record(None, [], await self.get_content(path), "")
        # Carry the existing object over by server-side copies of at most 5 GiB each.
        upload_id = await self._create_multipart(path, key)
        count = math.ceil(size / MAX_CHUNK_SIZE)
        step = math.ceil(size / count)
        ranges = [(i * step, min(size, (i + 1) * step) - 1) for i in range(count)]
        parts = await asyncio.gather(
            *(
                self._copy_part(path, key, key, upload_id, n + 1, first, last)
                for n, (first, last) in enumerate(ranges)
            )
        )
        return _Record(upload_id, list(parts), b"", "")

    async def _read_record(self, path: str, key: str) -> _Record | None:
        """Parse the append record at ``key``; None if it is an ordinary object by now."""
        try:
            resp = await self._call("get_object", path, Key=key)
        except PathNotFoundError:
            return None
        meta = resp.get("Metadata") or {}
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        if not meta.get(META_APPEND):
            return None
        try:
            length = int(meta[META_RECORD])
            doc = json.loads(data[:length])
            parts = [_Part(int(n), str(etag), int(size)) for n, etag, size in doc["parts"]]
            return _Record(doc.get("upload_id"), parts, data[length:], str(meta.get(META_TOKEN)))
        except (KeyError, ValueError, TypeError) as e:
            raise S3Error(f"s3 {path}: unreadable append record: {e}") from e

    async def _write_record(self, path: str, key: str, record: _Record) -> None:
        doc = json.dumps(
            {
                "v": RECORD_VERSION,
                "upload_id": record.upload_id,
                "parts": [[p.number, p.etag, p.size] for p in record.parts],
            },
            separators=(",", ":"),
        ).encode()
        header = doc + b"\n"
        body = bytearray(header)
        body += record.tail
        await self._call(
            "put_object",
            path,
            Key=key,
            Body=_Body(body),
            Metadata={
                META_APPEND: RECORD_VERSION,
                META_SIZE: str(record.size),
                META_TOKEN: record.token,
                META_RECORD: str(len(header)),
            },
            **self._write_args(),
        )

    async def _finalize(self, path: str, key: str) -> None:
        """Turn an append record into the whole object (idempotent, safe to race)."""
        record = await self._read_record(path, key)
        if record is None:
            return
        if record.upload_id is None:
            await self.put_content(path, record.tail)
            return
        parts = list(record.parts)
        try:
            if record.tail or not parts:
                parts.append(
                    await self._upload_part(
                        path, key, record.upload_id, len(parts) + 1, record.tail
                    )
                )
            await self._complete(path, key, record.upload_id, parts)
        except S3Error as e:
            if e.code == "NoSuchUpload":
                # Another process finalized it first; fine if the key is ordinary now.
                info = await self.stat(path)
                if info.token != record.token:
                    return
            raise

    async def _create_multipart(self, path: str, key: str) -> str:
        resp = await self._call("create_multipart_upload", path, Key=key, **self._write_args())
        return str(resp["UploadId"])

    async def _upload_part(
        self, path: str, key: str, upload_id: str, number: int, data: bytes | bytearray
    ) -> _Part:
        if number > MAX_PARTS:
            raise S3Error(f"s3 {path}: more than {MAX_PARTS} parts; raise storage.s3.chunksize")
        resp = await self._call(
            "upload_part", path, Key=key, UploadId=upload_id, PartNumber=number, Body=_Body(data)
        )
        return _Part(number, str(resp["ETag"]), len(data))

    async def _copy_part(
        self,
        path: str,
        source_key: str,
        key: str,
        upload_id: str,
        number: int,
        first: int,
        last: int,
    ) -> _Part:
        resp = await self._call(
            "upload_part_copy",
            path,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self.bucket, "Key": source_key},
            CopySourceRange=f"bytes={first}-{last}",
        )
        return _Part(number, str(resp["CopyPartResult"]["ETag"]), last - first + 1)

    async def _complete(
        self, path: str, key: str, upload_id: str, parts: builtins.list[_Part]
    ) -> None:
        await self._call(
            "complete_multipart_upload",
            path,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
        )

    async def _abort(self, path: str, key: str, upload_id: str) -> None:
        try:
            await self._call("abort_multipart_upload", path, Key=key, UploadId=upload_id)
        except S3Error as e:
            if e.code != "NoSuchUpload":
                raise

    # -- moving and deleting -----------------------------------------------------------------

    async def move(self, source: str, dest: str) -> None:
        src_key, dst_key = self._key(source), self._key(dest)
        head = await self._call("head_object", source, Key=src_key)
        if (head.get("Metadata") or {}).get(META_APPEND):
            await self._finalize(source, src_key)
            head = await self._call("head_object", source, Key=src_key)
        size = int(head.get("ContentLength", 0))
        if size <= min(self.params.multipartcopythresholdsize, MAX_CHUNK_SIZE):
            await self._call(
                "copy_object",
                dest,
                Key=dst_key,
                CopySource={"Bucket": self.bucket, "Key": src_key},
                **self._write_args(),
            )
        else:
            await self._multipart_copy(dest, src_key, dst_key, size)
        await self._call("delete_object", source, Key=src_key)

    async def _multipart_copy(self, path: str, src_key: str, dst_key: str, size: int) -> None:
        chunk = self.params.multipartcopychunksize
        upload_id = await self._create_multipart(path, dst_key)
        limit = asyncio.Semaphore(self.params.multipartcopymaxconcurrency)

        async def one(number: int) -> _Part:
            first = (number - 1) * chunk
            async with limit:
                return await self._copy_part(
                    path, src_key, dst_key, upload_id, number, first, min(size, first + chunk) - 1
                )

        try:
            parts = await asyncio.gather(*(one(n) for n in range(1, math.ceil(size / chunk) + 1)))
            await self._complete(path, dst_key, upload_id, list(parts))
        except BaseException:
            with contextlib.suppress(Exception):
                await self._abort(path, dst_key, upload_id)
            raise

    async def delete(self, path: str) -> None:
        key = self._key(path)
        prefix = self._dir_prefix(path)
        exact = bool(key) and path != "/"

        async def head() -> bool:
            if not exact:
                return False
            try:
                await self._call("head_object", path, Key=key)
            except PathNotFoundError:
                return False
            return True

        async def below() -> builtins.list[str]:
            keys: builtins.list[str] = []
            async for page in self._pages(path, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents") or [])
            return keys

        found, keys, uploads = await asyncio.gather(head(), below(), self._uploads_at(path, key))
        if found:
            keys.append(key)
        if not keys and not uploads:
            raise PathNotFoundError(path)
        for i in range(0, len(keys), LIST_MAX):
            batch = keys[i : i + LIST_MAX]
            resp = await self._call(
                "delete_objects",
                path,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            errors = resp.get("Errors") or []
            if errors:
                raise S3Error(f"s3 delete {path}: {errors[0].get('Code')} {errors[0].get('Key')}")
        for upload_key, upload_id in uploads:
            await self._abort(path, upload_key, upload_id)

    async def _uploads_at(self, path: str, key: str) -> builtins.list[tuple[str, str]]:
        """Multipart uploads in progress at ``key`` or below it."""
        found: builtins.list[tuple[str, str]] = []
        args: dict[str, Any] = {"Prefix": key}
        while True:
            resp = await self._call("list_multipart_uploads", path, **args)
            for upload in resp.get("Uploads") or []:
                k = upload["Key"]
                if k == key or k.startswith(f"{key}/") or not key:
                    found.append((k, upload["UploadId"]))
            if not resp.get("IsTruncated"):
                return found
            args["KeyMarker"] = resp.get("NextKeyMarker")
            args["UploadIdMarker"] = resp.get("NextUploadIdMarker")


class _Body:
    """A request body that botocore and aiohttp both take without copying it.

    Given bytes, botocore wraps them in a ``BytesIO``, which aiohttp copies whole (its
    ``getbuffer`` unshares the bytes); given a bytearray, aiohttp copies it when slicing and
    again when joining it to the headers. Either way each part in flight cost one or two more
    chunk-sized copies (10 MiB each by default). This is what each side reads: file-like for
    botocore (the payload signature reads it, a retry seeks back to 0, ``len`` is the
    Content-Length), an async iterable of slices for aiohttp, which sends them in turn.
    """

    SLICE = 256 * 1024

    def __init__(self, data: bytes | bytearray) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._pos, len(self._view))[whence]
        self._pos = max(0, min(base + offset, len(self._view)))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._view) if size is None or size < 0 else self._pos + size
        data = self._view[self._pos : end].tobytes()
        self._pos += len(data)
        return data

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        while self._pos < len(self._view):
            piece = self._view[self._pos : self._pos + self.SLICE]
            self._pos += len(piece)
            yield piece


class _Writer(FileWriter):
    """Buffers ``chunksize`` bytes, ships each full chunk as a part while the next one arrives.

    ``appendable`` writers commit an append record (see the module docstring); plain ones
    complete their multipart upload on commit, or PUT the whole object when it fits in a chunk.
    """

    def __init__(
        self, driver: S3Driver, path: str, key: str, start: _Record, appendable: bool
    ) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._appendable = appendable
        self._upload_id = start.upload_id
        self._parts = list(start.parts)
        self._buf = bytearray(start.tail)
        self._size = self._start = start.size
        self._inflight: list[asyncio.Task[_Part]] = []
        self._next_part = len(self._parts) + 1
        self._token: str | None = None
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    @property
    def token(self) -> str | None:
        return self._token

    async def write(self, data: bytes | memoryview) -> None:
        if self._done:
            raise StorageError(f"write to a closed writer: {self._path}")
        self._buf += data
        self._size += len(data)
        chunk = self._driver.params.chunksize
        while len(self._buf) >= chunk:
            # The part is the buffer itself, cut at the chunk; what is left over (less than a
            # write) starts the next one: the chunk is not copied (nor on its way: see _Body).
            piece, self._buf = self._buf, self._buf[chunk:]
            del piece[chunk:]
            await self._ship(piece)

    async def _ship(self, data: bytearray) -> None:
        if self._upload_id is None:
            self._upload_id = await self._driver._create_multipart(self._path, self._key)
        number = self._next_part
        self._next_part += 1
        self._inflight.append(
            asyncio.create_task(
                self._driver._upload_part(self._path, self._key, self._upload_id, number, data)
            )
        )
        while len(self._inflight) > PARTS_IN_FLIGHT:
            self._parts.append(await self._inflight.pop(0))

    async def _drain(self) -> None:
        while self._inflight:
            self._parts.append(await self._inflight.pop(0))

    async def commit(self) -> None:
        if self._done:
            raise StorageError(f"commit of a closed writer: {self._path}")
        if self._appendable:
            if len(self._buf) >= MIN_CHUNK_SIZE:
                piece, self._buf = self._buf, bytearray()
                await self._ship(piece)
            await self._drain()
            token = uuid.uuid4().hex
            record = _Record(self._upload_id, self._parts, bytes(self._buf), token)
            await self._driver._write_record(self._path, self._key, record)
            self._token = token
        elif self._upload_id is None:
            await self._driver.put_content(self._path, self._buf)
        else:
            if self._buf:
                piece, self._buf = self._buf, bytearray()
                await self._ship(piece)
            await self._drain()
            await self._driver._complete(self._path, self._key, self._upload_id, self._parts)
        self._done = True
        self._release()

    async def cancel(self) -> None:
        await self._discard_inflight()
        self._done = True
        if self._upload_id is not None:
            await self._driver._abort(self._path, self._key, self._upload_id)
        self._release()
        with contextlib.suppress(PathNotFoundError):
            await self._driver.delete(self._path)

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        await self._discard_inflight()
        if not self._appendable and self._upload_id is not None:
            with contextlib.suppress(StorageError):
                await self._driver._abort(self._path, self._key, self._upload_id)
        self._release()
        # An appendable writer closed without commit leaves the last record in force: the parts
        # it uploaded are not recorded and the next writer overwrites them.

    def _release(self) -> None:
        self._buf = bytearray()
        if self._size - self._start >= TRIM_AFTER:
            memory.trim()

    async def _discard_inflight(self) -> None:
        tasks, self._inflight = self._inflight, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
