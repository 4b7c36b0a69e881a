"""cargohold.memory: the cache scale, the occupancy of registered caches, malloc_trim."""

from __future__ import annotations

import functools
import gc
import json
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest

from cargohold import memory

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def scale_env(monkeypatch):
    def set_scale(value: str | None) -> None:
        if value is None:
            monkeypatch.delenv(memory.SCALE_ENV, raising=False)
        else:
            monkeypatch.setenv(memory.SCALE_ENV, value)
        memory.scale.cache_clear()

    yield set_scale
    memory.scale.cache_clear()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 1.0), ("", 1.0), ("0.25", 0.25), ("2", 2.0), ("0", 1.0), ("-1", 1.0), ("x", 1.0)],
)
def test_scale_is_a_positive_number_or_one(scale_env, raw, expected):
    scale_env(raw)
    assert memory.scale() == expected


def test_scaled_bounds_never_drop_below_the_minimum(scale_env):
    scale_env("0.001")
    assert memory.scaled(65536) == 66
    assert memory.scaled(4096) == memory.MIN_ENTRIES
    scale_env("0.5")
    assert memory.scaled(4096) == 2048


class Owner:
    def __init__(self, bound: int) -> None:
        self.entries: OrderedDict[int, int] = OrderedDict()
        self.bound = bound
        memory.register("test_owner_cache", self, lambda o: (len(o.entries), o.bound))


def test_occupancy_sums_live_owners_and_forgets_the_dead():
    a, b = Owner(10), Owner(20)
    a.entries.update({1: 1, 2: 2})
    b.entries[3] = 3
    assert memory.occupancy()["test_owner_cache"] == (3, 30)
    del a
    gc.collect()
    assert memory.occupancy()["test_owner_cache"] == (1, 20)
    del b
    gc.collect()
    assert "test_owner_cache" not in memory.occupancy()


def test_lru_caches_report_their_size_and_bound():
    @functools.lru_cache(maxsize=8)
    def square(x: int) -> int:
        return x * x

    memory.register_lru("test_squares", square)
    for i in range(12):
        square(i)
    assert memory.occupancy()["test_squares"] == (8, 8)


@pytest.mark.parametrize("scale", ["1", "0.015625"])
def test_the_real_caches_take_the_scale_from_the_environment(scale):
    """A fresh process with CARGOHOLD_CACHE_SCALE: every cache of a worker registers, with the
    bound memory.COSTS documents, scaled (the environment is read once, at import, as the
    workers do)."""
    code = (
        "import json, tempfile\n"
        "from cargohold import memory\n"
        "from cargohold.api import manifests\n"
        "from cargohold.registry.integrity import BlobVerifier\n"
        "from cargohold.config import ValidationConfig\n"
        "from cargohold.registry.manifests import ManifestStore\n"
        "from cargohold.storage.filesystem import FilesystemDriver\n"
        "from cargohold.storage.cache import InMemoryCache\n"
        "d = FilesystemDriver(tempfile.mkdtemp())\n"
        "v = BlobVerifier()\n"
        "m = ManifestStore(d, None, ValidationConfig())\n"
        "c = InMemoryCache(10000)\n"
        "print(json.dumps(memory.occupancy()))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, memory.SCALE_ENV: scale}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    got = {name: bound for name, (_, bound) in json.loads(out).items()}
    expected = {
        name: max(16, round(bound * float(scale))) for name, (bound, _) in memory.COSTS.items()
    }
    expected["blob_descriptors"] = 10000  # a configured size (blobdescriptorsize) is not scaled
    assert got == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_trim_calls_glibc_malloc_trim():
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    assert memory.trim() is True


ARENA_PROBE = """
import ctypes, os, sys, tempfile, threading
from cargohold import memory
limited = None if os.environ.get("PROBE_UNCAPPED") else memory.limit_arenas()
alive = threading.Barrier(8)
def grab():
    block = bytearray(200_000)  # beyond pymalloc: malloc, from this thread's arena
    block[0] = 1
    alive.wait()  # all eight at once: an exited thread's arena would be reused
threads = [threading.Thread(target=grab) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
fd, path = tempfile.mkstemp()
os.close(fd)
fp = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(fp))
libc.fclose(ctypes.c_void_p(fp))
print(limited, open(path).read().count("<heap nr="))
os.remove(path)
"""


def _arenas(env_extra: dict[str, str]) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env.update({"PYTHONPATH": SRC, **env_extra})
    out = subprocess.run(
        [sys.executable, "-c", ARENA_PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_limit_arenas_caps_the_arenas_threads_get():
    """Eight threads that each malloc get arenas of their own, unless capped (the workers cap
    them at memory.ARENAS); an operator's MALLOC_ARENA_MAX is left alone."""
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.skip("not glibc")
    assert _arenas({}) == ("True", memory.ARENAS)
    assert _arenas({"PROBE_UNCAPPED": "1"})[1] > memory.ARENAS  # not capped: one per thread
    limited, arenas = _arenas({"MALLOC_ARENA_MAX": "4"})
    assert (limited, arenas) == ("False", 4)
