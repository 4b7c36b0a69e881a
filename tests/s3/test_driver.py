"""The S3 driver against a real S3 wire protocol (moto), beyond the contract every driver keeps
(tests/test_storage.py runs that on S3 too): the registry:2 key layout, directories as
prefixes, multipart copies and appendable (resumable) writers."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
import requests
from support.stores import MotoServer

from cargohold.storage.driver import PathNotFoundError, StorageError
from cargohold.storage.s3 import S3Driver
from cargohold.storage.s3params import MIN_CHUNK_SIZE, parse_s3_params

T = TypeVar("T")
MiB = 1024 * 1024


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def make(moto: MotoServer, bucket: str, **extra: Any) -> S3Driver:
    return S3Driver(parse_s3_params(moto.s3_params(bucket, **extra)))


async def collect(driver: S3Driver, path: str, offset: int = 0) -> bytes:
    return b"".join([c async for c in driver.reader(path, offset)])


def uploads_in_progress(moto: MotoServer, bucket: str) -> list[str]:
    resp = moto.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in resp.get("Uploads", [])]


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    return moto.new_bucket("drv")


def test_directories_are_key_prefixes(moto: MotoServer, bucket: str) -> None:
    """The rest of the contract is tests/test_storage.py's (run on S3 too); what is S3's own:
    a directory is nothing but a prefix, so it vanishes with its last key."""

    async def go() -> None:
        d = make(moto, bucket)
        try:
            await d.put_content("/a/b/c", b"hello")
            await d.put_content("/a/bc", b"sibling")
            assert (await d.stat("/a")).is_dir
            await d.delete("/a/b")
            await d.delete("/a/bc")
            with pytest.raises(PathNotFoundError):
                await d.stat("/a")
            assert moto.keys(bucket) == []
        finally:
            await d.close()

    run(go())


@pytest.mark.parametrize(
    ("rootdirectory", "prefix"),
    [("", ""), ("/", ""), ("/srv/registry", "srv/registry/"), ("srv/registry/", "srv/registry/")],
)
def test_keys_are_registry2s(moto: MotoServer, rootdirectory: str, prefix: str) -> None:
    bucket = moto.new_bucket("keys")

    async def go() -> list[str]:
        d = make(moto, bucket, rootdirectory=rootdirectory)
        try:
            await d.put_content("/docker/registry/v2/repositories/x/_layers/link", b"sha256:0")
            assert await d.list("/") == ["/docker"]
            assert await d.list("/docker/registry/v2") == ["/docker/registry/v2/repositories"]
            return [f.path for f in await d.walk("/docker/registry/v2")]
        finally:
            await d.close()

    walked = run(go())
    assert walked == ["/docker/registry/v2/repositories/x/_layers/link"]
    assert moto.keys(bucket) == [f"{prefix}docker/registry/v2/repositories/x/_layers/link"]


def test_reader_offsets(moto: MotoServer, bucket: str) -> None:
    data = os.urandom(3 * MiB + 17)

    async def go() -> None:
        d = make(moto, bucket)
        try:
            await d.put_content("/blob", data)
            assert await collect(d, "/blob") == data
            assert await collect(d, "/blob", 2 * MiB + 5) == data[2 * MiB + 5 :]
            assert await collect(d, "/blob", len(data)) == b""
            with pytest.raises(PathNotFoundError):
                await collect(d, "/missing")
        finally:
            await d.close()

    run(go())


@pytest.mark.parametrize("size", [10, 6 * MiB + 3])
def test_move_copies_then_deletes(moto: MotoServer, bucket: str, size: int) -> None:
    """Above multipartcopythresholdsize the copy is done with UploadPartCopy parts."""
    data = os.urandom(size)

    async def go() -> None:
        d = make(moto, bucket, multipartcopythresholdsize=MiB, multipartcopychunksize=5 * MiB)
        try:
            await d.put_content("/src/data", data)
            await d.move("/src/data", "/dst/data")
            assert await d.get_content("/dst/data") == data
            with pytest.raises(PathNotFoundError):
                await d.stat("/src/data")
            with pytest.raises(PathNotFoundError):
                await d.move("/src/data", "/elsewhere")
        finally:
            await d.close()

    run(go())
    assert uploads_in_progress(moto, bucket) == []


def test_appending_across_writers_and_processes(moto: MotoServer, bucket: str) -> None:
    """Each session is a new driver, as when every request lands on another replica."""
    chunks = [os.urandom(n) for n in (3 * MiB, 4 * MiB, 12 * MiB + 5, 1)]
    expected = b"".join(chunks)

    async def session(chunk: bytes) -> tuple[int, str | None, str | None]:
        d = make(moto, bucket)
        try:
            w = await d.writer("/up/data", append=True)
            await w.write(chunk[: len(chunk) // 2])
            await w.write(chunk[len(chunk) // 2 :])
            await w.commit()
            await w.close()
            info = await d.stat("/up/data")
            return info.size, info.token, w.token
        finally:
            await d.close()

    total = 0
    for i, chunk in enumerate(chunks):
        size, token, written = run(session(chunk))
        total += len(chunk)
        assert size == total
        assert token == written and token is not None
        # Below one part nothing is a multipart upload yet; from 5 MiB on there is one.
        assert bool(uploads_in_progress(moto, bucket)) == (total >= MIN_CHUNK_SIZE), i

    async def read() -> bytes:
        d = make(moto, bucket)
        try:
            return await collect(d, "/up/data")
        finally:
            await d.close()

    got = run(read())
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(expected).hexdigest()
    assert uploads_in_progress(moto, bucket) == []  # reading finalized it
    head = moto.client().head_object(Bucket=bucket, Key="up/data")
    assert head["ContentLength"] == len(expected) and not head.get("Metadata")


def test_writer_closed_without_commit_changes_nothing(moto: MotoServer, bucket: str) -> None:
    async def go() -> None:
        d = make(moto, bucket)
        try:
            w = await d.writer("/up/data", append=True)
            await w.write(b"a" * (6 * MiB))
            await w.commit()
            await w.close()
            before = await d.stat("/up/data")
            w = await d.writer("/up/data", append=True)
            await w.write(b"b" * (11 * MiB))  # ships a part that is never recorded
            await w.close()
            after = await d.stat("/up/data")
            assert (after.size, after.token) == (before.size, before.token)
            w = await d.writer("/up/data", append=True)
            await w.write(b"c" * 3)
            await w.commit()
            await w.close()
            assert await d.get_content("/up/data") == b"a" * (6 * MiB) + b"ccc"
        finally:
            await d.close()

    run(go())


def test_append_to_an_ordinary_object(moto: MotoServer, bucket: str) -> None:
    """Small objects are read into the tail; large ones are carried over by server-side copy."""
    big, small = os.urandom(6 * MiB), b"tiny"

    async def go() -> None:
        d = make(moto, bucket)
        try:
            for path, start in (("/big", big), ("/small", small)):
                await d.put_content(path, start)
                w = await d.writer(path, append=True)
                assert w.size == len(start)
                await w.write(b"+more")
                await w.commit()
                await w.close()
                assert (await d.stat(path)).size == len(start) + 5
                assert await d.get_content(path) == start + b"+more"
        finally:
            await d.close()

    run(go())


def test_move_and_cancel_of_an_append_record(moto: MotoServer, bucket: str) -> None:
    data = os.urandom(7 * MiB)

    async def go() -> None:
        d = make(moto, bucket)
        try:
            w = await d.writer("/u1/data", append=True)
            await w.write(data)
            await w.commit()
            await w.close()
            await d.move("/u1/data", "/blob/data")  # finalizes, then copies
            assert await d.get_content("/blob/data") == data
            w = await d.writer("/u2/data", append=True)
            await w.write(data)
            await w.commit()
            await w.close()
            await d.delete("/u2")  # deletes the record and aborts its multipart upload
        finally:
            await d.close()

    run(go())
    assert uploads_in_progress(moto, bucket) == []
    assert moto.keys(bucket) == ["blob/data"]


def test_a_part_overwritten_by_a_racing_writer_is_refused(moto: MotoServer, bucket: str) -> None:
    """Two writers resuming the same record: the committed record names its parts by ETag, so
    content mixed from both can never be completed silently."""
    base = b"0" * (6 * MiB)

    async def go() -> None:
        d = make(moto, bucket)
        try:
            w = await d.writer("/race/data", append=True)
            await w.write(base)
            await w.commit()
            await w.close()
            a = await d.writer("/race/data", append=True)
            b = await d.writer("/race/data", append=True)
            await b.write(b"B" * (10 * MiB))  # ships part 2 = B
            await b._drain()  # type: ignore[attr-defined]
            await a.write(b"A" * (10 * MiB))  # overwrites part 2 with A
            await a._drain()  # type: ignore[attr-defined]
            await b.commit()  # the record says part 2 is B's, but S3 holds A's
            await a.close()
            await b.close()
            with pytest.raises(StorageError):
                await d.get_content("/race/data")
        finally:
            await d.close()

    run(go())


def test_presigned_urls_and_health(moto: MotoServer, bucket: str) -> None:
    async def go() -> str | None:
        d = make(moto, bucket)
        try:
            await d.put_content("/docker/registry/v2/blobs/x/data", b"payload")
            await d.check_health()
            return await d.url_for("/docker/registry/v2/blobs/x/data")
        finally:
            await d.close()

    url = run(go())
    assert url is not None and "Signature" in url
    assert requests.get(url, timeout=10).content == b"payload"

    async def broken() -> None:
        d = make(moto, "no-such-bucket-here")
        try:
            await d.check_health()
        finally:
            await d.close()

    with pytest.raises(StorageError):
        run(broken())


def test_params_are_validated() -> None:
    from cargohold.storage.s3params import S3ParamError

    with pytest.raises(S3ParamError, match="required"):
        parse_s3_params({"region": "us-east-1"})
    with pytest.raises(S3ParamError) as info:
        parse_s3_params({"bucket": "b", "region": "r", "chunksize": 1024})
    assert info.value.key == "chunksize"
    with pytest.raises(S3ParamError) as info:
        parse_s3_params({"bucket": "b", "region": "r", "storageclass": "GLACIER"})
    assert info.value.key == "storageclass"
    with pytest.raises(S3ParamError) as info:
        parse_s3_params({"bucket": "b", "region": "eu-west-1", "v4auth": False})
    assert info.value.key == "v4auth"
    p = parse_s3_params(
        {"bucket": "b", "regionendpoint": "minio:9000", "secure": "false", "chunksize": "6291456"}
    )
    assert (p.region, p.endpoint_url, p.chunksize) == ("us-east-1", "http://minio:9000", 6 * MiB)


def test_timeouts_are_durations_or_seconds() -> None:
    from cargohold.storage.s3params import S3ParamError

    base = {"bucket": "b", "region": "r"}
    p = parse_s3_params(base)
    assert (p.connecttimeout, p.readtimeout) == (5.0, 60.0)  # what the driver always used
    p = parse_s3_params({**base, "connecttimeout": "250ms", "readtimeout": "1m30s"})
    assert (p.connecttimeout, p.readtimeout) == (0.25, 90.0)
    p = parse_s3_params({**base, "connecttimeout": 2, "readtimeout": 7.5})
    assert (p.connecttimeout, p.readtimeout) == (2.0, 7.5)
    for key, bad in (("readtimeout", "soon"), ("readtimeout", "0"), ("connecttimeout", "-1s"),
                     ("connecttimeout", True), ("readtimeout", "2h")):  # fmt: skip
        with pytest.raises(S3ParamError) as info:
            parse_s3_params({**base, key: bad})
        assert info.value.key == key, (key, bad)
