"""The storage drivers against one contract: what the domain layer relies on from any driver."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from support.stores import MotoServer

from cargohold.storage.driver import InvalidPathError, PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import FilesystemDriver
from cargohold.storage.inmemory import InMemoryDriver
from cargohold.storage.s3 import S3Driver
from cargohold.storage.s3params import parse_s3_params

T = TypeVar("T")


@pytest.fixture(params=["filesystem", "inmemory", "s3"])
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StorageDriver]:
    """Every driver, one contract. S3 runs against moto's real S3 wire protocol (started only
    when an S3 case is selected); its own behaviour beyond the contract is in tests/s3."""
    if request.param == "filesystem":
        yield FilesystemDriver(str(tmp_path / "root"))
    elif request.param == "inmemory":
        yield InMemoryDriver()
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        yield S3Driver(parse_s3_params(moto.s3_params(moto.new_bucket("contract"))))


def run(driver: StorageDriver, coro: Coroutine[Any, Any, T]) -> T:
    """Run a test's body and close the driver in the same event loop (S3's client lives in it)."""

    async def main() -> T:
        try:
            return await coro
        finally:
            await driver.close()

    return asyncio.run(main())


async def _collect(driver: StorageDriver, path: str, offset: int = 0) -> bytes:
    return b"".join([c async for c in driver.reader(path, offset)])


def test_put_get_stat_list_delete(driver: StorageDriver) -> None:
    async def go() -> None:
        await driver.put_content("/a/b/c", b"hello")
        await driver.put_content("/a/b/d", b"x" * 10)
        await driver.put_content("/a/bc", b"sibling with a common string prefix")
        assert await driver.get_content("/a/b/c") == b"hello"
        info = await driver.stat("/a/b/c")
        assert (info.size, info.is_dir) == (5, False)
        assert info.mtime > 0
        assert (await driver.stat("/a/b")).is_dir
        assert (await driver.stat("/a")).is_dir
        assert sorted(await driver.list("/a/b")) == ["/a/b/c", "/a/b/d"]
        assert sorted(await driver.list("/a")) == ["/a/b", "/a/bc"]
        # (the filesystem driver writes through docker/registry/v2/_cargohold/tmp)
        assert set(await driver.list("/")) - {"/docker"} == {"/a"}
        await driver.put_content("/a/b/c", b"replaced")
        assert await driver.get_content("/a/b/c") == b"replaced"
        for missing in ("/a/b/nope", "/a/b/c/deeper"):
            with pytest.raises(PathNotFoundError):
                await driver.stat(missing)
        with pytest.raises(PathNotFoundError):
            await driver.get_content("/a/b")  # a directory has no content
        with pytest.raises(PathNotFoundError):
            await driver.list("/nothing/here")
        await driver.delete("/a/b")  # a directory: everything below goes
        with pytest.raises(PathNotFoundError):
            await driver.stat("/a/b/c")
        with pytest.raises(PathNotFoundError):
            await driver.list("/a/b")
        with pytest.raises(PathNotFoundError):
            await driver.delete("/a/b")
        assert await driver.get_content("/a/bc")  # not below /a/b

    run(driver, go())


def test_walk_finds_every_file_below(driver: StorageDriver) -> None:
    async def go() -> None:
        for path in ("/w/a/1", "/w/a/b/2", "/w/c/3", "/wx/4"):
            await driver.put_content(path, path.encode())
        found = await driver.walk("/w")
        assert sorted((f.path, f.size, f.is_dir) for f in found) == [
            ("/w/a/1", 6, False),
            ("/w/a/b/2", 8, False),
            ("/w/c/3", 6, False),
        ]
        assert await driver.walk("/absent") == []

    run(driver, go())


def test_exists_answers_like_stat(driver: StorageDriver) -> None:
    async def go() -> None:
        await driver.put_content("/x/y/file", b"1")
        for path, there in [
            ("/x/y/file", True),
            ("/x/y", True),
            ("/x/y/other", False),
            ("/x/y/file/under-a-file", False),
            ("/nowhere", False),
        ]:
            assert await driver.exists(path) is there, path
        with pytest.raises(InvalidPathError):
            await driver.exists("/x/../../etc/passwd")

    run(driver, go())


def test_writer_append_commit_cancel_and_reader_offset(driver: StorageDriver) -> None:
    async def go() -> None:
        w = await driver.writer("/up/data")
        await w.write(b"abc")
        await w.write(b"d" * 100_000)
        await w.commit()
        await w.close()
        w = await driver.writer("/up/data", append=True)
        assert w.size == 100_003
        await w.write(b"tail")
        await w.commit()
        await w.close()
        assert await _collect(driver, "/up/data") == b"abc" + b"d" * 100_000 + b"tail"
        assert await _collect(driver, "/up/data", 100_003) == b"tail"
        await driver.move("/up/data", "/blobs/x/data")
        with pytest.raises(PathNotFoundError):
            await driver.stat("/up/data")
        assert (await driver.stat("/blobs/x/data")).size == 100_007
        w = await driver.writer("/up/other")
        await w.write(b"zzz")
        await w.cancel()
        with pytest.raises(PathNotFoundError):
            await driver.get_content("/up/other")
        with pytest.raises(PathNotFoundError):
            await driver.move("/nope", "/elsewhere")

    run(driver, go())


def test_list_after_pages_a_directory_in_byte_order(driver: StorageDriver) -> None:
    """What the repository index pages ``_catalog`` with: files only (not what lies in
    subdirectories), strictly after ``after``, in byte order, at most ``limit``."""
    files = ["a", "a!b", "a!b!c", "a-c", "a.b", "a_b", "ab", "b", "z9", "z10", "lib!x-y.z"]

    async def go() -> None:
        for name in files:
            await driver.put_content(f"/d/idx/{name}", b"")
        for sub in ("a0/x", "m/n/o", "zz/y"):  # directories in between: never listed
            await driver.put_content(f"/d/idx/{sub}", b"")
        await driver.put_content("/d/idx2/aa", b"")  # a sibling with a common string prefix
        ordered = sorted(files)
        assert ordered.index("a!b!c") < ordered.index("a-c")  # "!" sorts below "-"
        assert await driver.list_after("/d/idx", "", 100) == ordered
        for limit in (1, 2, 3, 7):
            seen: list[str] = []
            after = ""
            while page := await driver.list_after("/d/idx", after, limit):
                assert len(page) <= limit
                seen += page
                after = page[-1]
            assert seen == ordered, limit
        for after in ("a!b", "a!a", "a-", "lib", "z", "zzz", "0"):
            expected = [f for f in ordered if f > after]
            assert await driver.list_after("/d/idx", after, 4) == expected[:4], after
        assert await driver.list_after("/d/idx", "", 0) == []
        assert await driver.list_after("/d/nothing", "", 10) == []
        with pytest.raises(InvalidPathError):
            await driver.list_after("/d/../etc", "", 10)

    run(driver, go())


@pytest.mark.parametrize(
    "bad", ["relative", "/a/../../etc/passwd", "/a/./b", "/a//b", "/a/", "/a/.hidden", "/a\x00b"]
)
def test_paths_cannot_escape_the_root(driver: StorageDriver, bad: str, tmp_path: Path) -> None:
    async def go() -> None:
        with pytest.raises(InvalidPathError):
            await driver.put_content(bad, b"x")
        with pytest.raises(InvalidPathError):
            await driver.stat(bad)

    run(driver, go())
    outside = [p for p in tmp_path.rglob("*") if "root" not in p.parts]
    assert outside == []


def test_filesystem_layout_is_plain_files(tmp_path: Path) -> None:
    """registry:2 must be able to read what we write: plain files at the plain paths."""
    driver = FilesystemDriver(str(tmp_path))
    run(driver, driver.put_content("/docker/registry/v2/x/link", b"sha256:abc"))
    assert (tmp_path / "docker/registry/v2/x/link").read_bytes() == b"sha256:abc"
    assert [p.name for p in (tmp_path / "docker/registry/v2/x").iterdir()] == ["link"]


def test_big_listings_are_reused_only_while_the_directory_is_unchanged(tmp_path: Path) -> None:
    import os
    import time

    driver = FilesystemDriver(str(tmp_path))
    base = tmp_path / "d"
    base.mkdir()
    for i in range(100):
        (base / f"t{i}").mkdir()
    os.utime(base, ns=(0, 1_000_000_000))  # long settled: the listing may be kept
    first = run(driver, driver.list("/d"))
    assert len(first) == 100
    (base / "new").mkdir()  # moves the directory's mtime to now
    assert "/d/new" in run(driver, driver.list("/d"))
    os.utime(base, ns=(0, 2_000_000_000))
    run(driver, driver.list("/d"))
    (base / "t5").rmdir()
    listed = run(driver, driver.list("/d"))
    assert "/d/t5" not in listed and len(listed) == 100
    # A directory changed within the last moments is never cached, so a second change that
    # lands in the same clock tick (same mtime) is still seen.
    recent = time.time_ns()
    os.utime(base, ns=(recent, recent))
    run(driver, driver.list("/d"))
    (base / "same-tick").mkdir()
    os.utime(base, ns=(recent, recent))
    assert "/d/same-tick" in run(driver, driver.list("/d"))


def test_small_file_cache_sees_every_replacement(tmp_path: Path) -> None:
    import os

    driver = FilesystemDriver(str(tmp_path))
    run(driver, driver.put_content("/r/link", b"sha256:old"))
    link = tmp_path / "r/link"
    os.utime(link, ns=(0, 1_000_000_000))  # settled: now cached
    assert run(driver, driver.get_content("/r/link")) == b"sha256:old"
    assert run(driver, driver.get_content("/r/link")) == b"sha256:old"
    run(driver, driver.put_content("/r/link", b"sha256:new"))  # rename: new inode and mtime
    assert run(driver, driver.get_content("/r/link")) == b"sha256:new"
    run(driver, driver.delete("/r/link"))
    with pytest.raises(PathNotFoundError):
        run(driver, driver.get_content("/r/link"))


def test_small_file_cache_is_a_bounded_lru(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from cargohold.storage import filesystem

    monkeypatch.setattr(filesystem, "SMALL_FILE_ENTRIES", 3)
    driver = FilesystemDriver(str(tmp_path))
    for i in range(5):
        run(driver, driver.put_content(f"/r/{i}/link", b"sha256:%d" % i))
        os.utime(tmp_path / f"r/{i}/link", ns=(0, 1_000_000_000))  # settled: cacheable
    full = [driver._full(f"/r/{i}/link") for i in range(5)]
    for i in (0, 1, 2):
        run(driver, driver.get_content(f"/r/{i}/link"))
    run(driver, driver.get_content("/r/0/link"))  # a hit: 0 is now the most recently used
    for i in (3, 4):
        run(driver, driver.get_content(f"/r/{i}/link"))
    assert list(driver._small) == [full[0], full[3], full[4]]


def test_filesystem_maxthreads_bounds_its_blocking_calls(tmp_path: Path) -> None:
    """``storage.filesystem.maxthreads`` (registry:2: simultaneous blocking filesystem calls) is
    the size of the driver's own pool: with 40 calls held, exactly 25 run, the rest wait."""
    import threading

    driver = FilesystemDriver.from_params({"rootdirectory": str(tmp_path), "maxthreads": 25})
    gate = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, most at once

    def held() -> str:
        with lock:
            running[0] += 1
            running[1] = max(running)
        gate.wait(60)
        with lock:
            running[0] -= 1
        return threading.current_thread().name

    async def scenario() -> list[str]:
        calls = [asyncio.ensure_future(driver.run_blocking(held)) for _ in range(40)]
        for _ in range(6000):  # wait for the pool to fill, bounded
            if running[0] >= 25:
                break
            await asyncio.sleep(0.01)
        assert running[0] == 25
        gate.set()
        names = await asyncio.gather(*calls)
        # and the driver's own bulk writes go through the same pool
        big = b"x" * (2 << 20)
        await driver.put_content("/big", big)
        await driver.close()
        return names

    names = asyncio.run(scenario())
    assert running[1] == 25
    assert all(name.startswith("cargohold-fs") for name in names)
    assert (tmp_path / "big").stat().st_size == 2 << 20
