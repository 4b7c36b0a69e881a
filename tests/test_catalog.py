"""The catalog's early-stopping walk pages exactly as sorting the whole list would."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from cargohold.registry.catalog import list_repositories, order_key, page_local
from cargohold.storage.filesystem import FilesystemDriver

NAMES = [
    "a", "a/b", "a/b/c", "a-c", "a.b", "a_b", "ab", "b", "b/a", "b-a/x", "c/d/e", "c/d-e",
    "z9", "z10", "lib/alpine", "lib/alpine-edge", "lib/alpine/sub",
]  # fmt: skip


@pytest.fixture
def driver(tmp_path: Path) -> FilesystemDriver:
    root = tmp_path / "docker/registry/v2/repositories"
    for name in NAMES:
        (root / name / "_manifests").mkdir(parents=True)
    # Not repositories: an upload-only directory and names under a `_` directory.
    (root / "only-uploads/_uploads").mkdir(parents=True)
    (root / "a/_layers/sha256/x/_manifests").mkdir(parents=True)
    return FilesystemDriver(str(tmp_path))


def test_full_walk_matches_component_order(driver: FilesystemDriver) -> None:
    listed = asyncio.run(list_repositories(driver))
    assert listed == sorted(NAMES, key=order_key)
    assert listed.index("a/b/c") < listed.index("a-c")  # component order, not plain string order


@pytest.mark.parametrize("seed", range(20))
def test_pages_agree_with_the_sorted_list(driver: FilesystemDriver, seed: int) -> None:
    everything = sorted(NAMES, key=order_key)
    rnd = random.Random(seed)
    last = rnd.choice([None, *everything, "a/a", "b0", "lib", "zz", "0"])
    limit = rnd.randint(1, len(NAMES) + 2)
    after = [n for n in everything if last is None or order_key(n) > order_key(last)]
    assert page_local(driver, last, limit) == after[:limit]


def test_paging_through_everything(driver: FilesystemDriver) -> None:
    seen: list[str] = []
    last = None
    while page := page_local(driver, last, 3):
        seen += page
        last = page[-1]
    assert seen == sorted(NAMES, key=order_key)


def test_walks_never_run_on_the_event_loop(tmp_path: Path) -> None:
    """The catalog (whole, filtered or a page) and upload purging walk ``repositories/`` in a
    thread: on the loop, a large store would stall every request of the worker meanwhile."""
    import os
    import threading

    from cargohold.config import Config
    from cargohold.registry.core import Registry

    root = tmp_path / "docker/registry/v2/repositories"
    for name in NAMES:
        (root / name / "_manifests").mkdir(parents=True)
    (root / "a/b/_uploads").mkdir(parents=True)
    config = Config()
    config.storage.params.update(rootdirectory=str(tmp_path), maxthreads=25)
    walked_on: set[str] = set()
    real_scandir = os.scandir

    def scandir(path: str):  # type: ignore[no-untyped-def]
        if str(path).startswith(str(root)):
            walked_on.add(threading.current_thread().name)
        return real_scandir(path)

    async def scenario() -> None:
        reg = Registry(config)
        assert await reg.repositories() == sorted(NAMES, key=order_key)
        assert await reg.repositories_page("a", 3) == ["a/b", "a/b/c", "a-c"]
        await reg.purge_uploads()
        await reg.close()

    os.scandir = scandir  # type: ignore[assignment]
    try:
        asyncio.run(scenario())
    finally:
        os.scandir = real_scandir
    assert walked_on, "no walk seen"
    assert threading.main_thread().name not in walked_on, walked_on


def test_a_page_holds_a_name_per_entry_and_leaves_no_cycles(tmp_path: Path) -> None:
    """A page of a namespace of thousands of repositories holds, while it walks, the names of
    the largest directory's subdirectories and little else (tracemalloc's peak: ~67 bytes an
    entry, where a ``DirEntry`` with its name and path kept ~260), and what it allocated is
    freed as it returns, not left for the cyclic GC: concurrent pages run in threads, and
    whatever each holds at once stays in the worker's heap as its high-water mark."""
    import gc
    import tracemalloc

    entries = 2000
    root = tmp_path / "docker/registry/v2/repositories/ns"
    for i in range(entries):
        (root / f"r{i:04d}" / "_manifests").mkdir(parents=True)
    driver = FilesystemDriver(str(tmp_path))
    page_local(driver, None, 100)  # first use: whatever the driver sets up once
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        page = page_local(driver, "ns/r0999", 100)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        unreachable = gc.collect()
        gc.enable()
    assert page == [f"ns/r{i:04d}" for i in range(1000, 1100)]
    assert peak < 100 * entries, f"{peak / entries:.0f} bytes per directory entry"
    assert unreachable == 0, "the walk left reference cycles behind"


def test_a_worker_walks_for_at_most_local_walks_pages_at_once(tmp_path: Path) -> None:
    """A burst of catalog pages (and whole listings) waits its turn for the driver's threads:
    counted as the walks are handed to them, while the first ones are held inside."""
    import threading
    from typing import Any

    from cargohold.config import Config
    from cargohold.registry import core

    root = tmp_path / "docker/registry/v2/repositories"
    for name in NAMES:
        (root / name / "_manifests").mkdir(parents=True)
    config = Config()
    config.storage.params.update(rootdirectory=str(tmp_path))
    release = threading.Event()
    handed: list[int] = []
    in_flight = 0

    async def scenario() -> None:
        nonlocal in_flight
        reg = core.Registry(config)
        base = reg.layers.base
        assert isinstance(base, FilesystemDriver)
        real = base.run_blocking

        def held(fn: Any, *args: Any) -> Any:
            release.wait(60)
            return fn(*args)

        async def counting(fn: Any, *args: Any) -> Any:
            nonlocal in_flight
            in_flight += 1
            handed.append(in_flight)
            try:
                return await real(held, fn, *args)
            finally:
                in_flight -= 1

        base.run_blocking = counting  # type: ignore[method-assign]
        burst = [asyncio.ensure_future(reg.repositories_page(None, 3)) for _ in range(6)]
        burst.append(asyncio.ensure_future(reg.repositories()))
        for _ in range(5):  # every task reaches its first wait
            await asyncio.sleep(0)
        assert in_flight == core.LOCAL_WALKS, in_flight
        release.set()
        pages = await asyncio.gather(*burst)
        assert pages[:6] == [sorted(NAMES, key=order_key)[:3]] * 6
        assert pages[6] == sorted(NAMES, key=order_key)
        await reg.close()

    asyncio.run(scenario())
    assert len(handed) == 7 and max(handed) == core.LOCAL_WALKS, handed
