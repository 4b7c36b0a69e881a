"""What an S3 driver holds and copies (issue 14 point 6, a replica's memory floor): the botocore
data its session keeps, request bodies sent without copies, malloc trimmed after large writes.
Behaviour is checked against moto; the memory itself is not measured here (a shared machine's
RSS is noise), only the structures that decide it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
from typing import Any

import botocore.loaders
import pytest
import requests
from support.stores import MotoServer

from cargohold.storage import s3
from cargohold.storage.s3 import ENDPOINT_SERVICES, S3Driver, _Body
from cargohold.storage.s3params import MIN_CHUNK_SIZE, parse_s3_params

MiB = 1024 * 1024


def make(moto: MotoServer, **extra: Any) -> S3Driver:
    return S3Driver(parse_s3_params(moto.s3_params(moto.new_bucket("mem"), **extra)))


def test_the_session_keeps_only_what_an_s3_client_reads(moto: MotoServer) -> None:
    """botocore's own data has every service's endpoints and the S3 API reference's text; the
    driver's client works (put, get, a presigned URL followed) from a session holding neither."""
    full = botocore.loaders.create_loader()
    assert len(full.load_data("endpoints")["partitions"][0]["services"]) > 100
    op = full.load_service_model("s3", "service-2")["operations"]["PutObject"]
    assert op["documentation"]

    async def go() -> tuple[Any, str]:
        d = make(moto)
        try:
            await d.put_content("/a/b", b"hello")
            assert await d.get_content("/a/b") == b"hello"
            url = await d.url_for("/a/b")
            assert url is not None
            client = await d._client()
            return client, url
        finally:
            await d.close()

    client, url = asyncio.run(go())
    assert requests.get(url, timeout=30).content == b"hello"
    services = {
        name
        for partition in client._loader.load_data("endpoints")["partitions"]
        for name in partition["services"]
    }
    assert "s3" in services and services <= ENDPOINT_SERVICES
    model = client.meta.service_model
    assert model.operation_model("PutObject").documentation == ""
    assert model.shape_for("PutObjectRequest").documentation == ""
    assert "Bucket" in model.shape_for("PutObjectRequest").members  # members are all there


def test_a_body_reads_seeks_and_streams_without_copying() -> None:
    """botocore reads a body to sign it and seeks back (also before a retry); aiohttp then
    iterates it: each pass sends every byte, from where the body stands."""
    data = bytearray(os.urandom(600_000))
    body = _Body(data)
    assert len(body) == len(data)
    assert body.read(10) == bytes(data[:10]) and body.tell() == 10
    assert body.read() == bytes(data[10:]) and body.read(5) == b""
    assert body.seek(0) == 0 and body.seek(-100, 2) == len(data) - 100
    body.seek(0)

    async def drain() -> tuple[bytes, list[memoryview]]:
        pieces = [piece async for piece in body]
        return b"".join(pieces), pieces

    sent, pieces = asyncio.run(drain())
    assert sent == data and all(p.obj is data for p in pieces)  # views of the buffer itself
    assert asyncio.run(drain())[0] == b""  # consumed: a retry seeks first
    body.seek(0)
    assert asyncio.run(drain())[0] == data


@pytest.mark.parametrize("appendable", [False, True])
def test_writes_of_any_size_arrive_whole(moto: MotoServer, appendable: bool) -> None:
    """Parts are cut from the writer's buffer at the chunk size, whatever the writes: small
    ones, one larger than two chunks, a tail; read back byte for byte (appendable: across a
    commit and a second writer)."""
    blob = os.urandom(3 * MIN_CHUNK_SIZE + 123_457)
    sizes = [1_000_000, 2 * MIN_CHUNK_SIZE + 77, 4096, 1]
    cuts = [0]
    for size in sizes:
        cuts.append(min(len(blob), cuts[-1] + size))
    cuts.append(len(blob))

    async def go() -> bytes:
        d = make(moto, chunksize=MIN_CHUNK_SIZE)
        try:
            spans = list(itertools.pairwise(cuts))
            half = len(spans) // 2
            w = await d.writer("/up/data", append=appendable)
            for a, b in spans[:half]:
                await w.write(memoryview(blob)[a:b])
            if appendable:
                await w.commit()
                w = await d.writer("/up/data", append=True)
                assert w.size == spans[half][0]
            for a, b in spans[half:]:
                await w.write(blob[a:b])
            await w.commit()
            assert (await d.stat("/up/data")).size == len(blob)
            return await d.get_content("/up/data")
        finally:
            await d.close()

    got = asyncio.run(go())
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()


def test_a_writer_that_took_megabytes_trims_malloc(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """glibc keeps freed part buffers (up to twice the chunk size) until told: a writer that
    received TRIM_AFTER or more hands them back when it ends, committed or closed; a small one
    (a link file, a manifest) does not pay for a trim."""
    trims: list[int] = []
    real_trim = s3.memory.trim
    monkeypatch.setattr(s3.memory, "trim", lambda: trims.append(1) or real_trim())

    async def go() -> list[int]:
        d = make(moto, chunksize=MIN_CHUNK_SIZE)
        try:
            counts = []
            w = await d.writer("/small")
            await w.write(b"x" * 1000)
            await w.commit()
            counts.append(len(trims))
            w = await d.writer("/large")
            await w.write(os.urandom(MIN_CHUNK_SIZE + s3.TRIM_AFTER))
            await w.commit()
            counts.append(len(trims))
            w = await d.writer("/abandoned")
            await w.write(os.urandom(s3.TRIM_AFTER))
            await w.close()
            counts.append(len(trims))
            return counts
        finally:
            await d.close()

    assert asyncio.run(go()) == [0, 1, 2]
