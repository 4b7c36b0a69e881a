"""A worker's memory: the bounds of its caches, and freed memory handed back to the system.

Every cache a worker keeps on its hot paths (parsed manifests, small link files, blob
verdicts...) is bounded, and together they are what a worker's memory grows by once it serves:
at the default bounds and with small images, about 43 MiB per worker when all are full, 47 on
S3 with the in-memory blob descriptor cache (:data:`COSTS`, measured with tracemalloc). Under
churn they fill at very different speeds: in ``bench/soak.py`` the link caches are full within
minutes while the blob verdicts (one per blob file downloaded) take over an hour. Resident
memory therefore keeps rising for as long as a cache is filling, which a short soak cannot
tell from a leak.

``CARGOHOLD_CACHE_SCALE`` (a positive number, default 1) multiplies every bound below: less
memory per worker on a small machine (0.25), or, in the soak, caches that are full after its
warm-up so that growth after that is a leak (1/64). Each cache registers here, so
:func:`occupancy` can show how full they are (the ``cargohold_cache_entries`` gauges).

:func:`trim` asks glibc to return the free memory it keeps (``malloc_trim``): cheap, and run by
each worker now and then and after an online garbage collection (whose store inventory, the
largest short-lived allocation, is built in a child process: :mod:`cargohold.registry.gcchild`;
trimming cannot return memory that a few survivors pin in CPython's arenas). Measured in the
soak it gives back 1-3 MiB per worker each time; it is no cure for growth and does nothing on
other C libraries.

:func:`limit_arenas` caps glibc's malloc arenas (``M_ARENA_MAX``) at :data:`ARENAS`. glibc
gives threads arenas of their own (up to 8 per core), and each keeps its own free memory: as
the storage thread pool grows under load, every new thread can add one, which the soak showed
as a slow rise in free-but-kept memory (mallinfo2: 9-12 MiB free per worker and rising, 3-4
MiB with two arenas; each worker ~5 MiB smaller). Python allocates under the GIL, so the
threads hardly contend for an arena. ``MALLOC_ARENA_MAX`` in the environment wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cargohold.memory")

ARENAS = 2
M_ARENA_MAX = -8  # mallopt parameter, <malloc.h>

SCALE_ENV = "CARGOHOLD_CACHE_SCALE"
MIN_ENTRIES = 16

# name -> (bound at scale 1, measured bytes per entry with small images): the documentation of
# what a full cache costs; the bounds themselves live beside each cache and pass through scaled().
COSTS: dict[str, tuple[int, int]] = {
    "blob_verdicts": (65536, 260),  # registry/integrity.py: a miss re-hashes a whole blob
    "small_files": (16384, 580),  # storage/filesystem.py: link files, keyed by full path
    "manifests": (4096, 2400),  # registry/manifests.py: parsed manifests (also a byte bound)
    "link_digests": (4096, 460),  # registry/manifests.py: link file contents -> Digest
    "paths": (4096, 720),  # storage/paths.py: parsed storage paths
    "manifest_headers": (4096, 900),  # api/manifests.py: response headers by digest
    "blob_descriptors": (10000, 390),  # storage/cache.py inmemory (blobdescriptorsize), S3
}


@functools.cache
def scale() -> float:
    """``CARGOHOLD_CACHE_SCALE``, read once per process (1 when unset or not a positive number)."""
    raw = os.environ.get(SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        log.warning("%s=%r is not a positive number: ignored", SCALE_ENV, raw)
        return 1.0
    return value


def scaled(entries: int) -> int:
    """A cache bound scaled by ``CARGOHOLD_CACHE_SCALE``, never below MIN_ENTRIES."""
    return max(MIN_ENTRIES, round(entries * scale()))


_caches: dict[str, list[Callable[[], tuple[int, int] | None]]] = {}


def register(name: str, owner: Any, sizer: Callable[[Any], tuple[int, int]]) -> None:
    """Make the cache of ``owner`` (held weakly: registering keeps nothing alive) visible to
    :func:`occupancy` as ``name``; ``sizer(owner)`` gives its (entries, bound)."""
    ref = weakref.ref(owner)

    def read() -> tuple[int, int] | None:
        alive = ref()
        return None if alive is None else sizer(alive)

    _caches.setdefault(name, []).append(read)


def register_lru(name: str, cached: Any) -> None:
    """A ``functools.lru_cache`` function (module-level: lives as long as the process)."""

    def read() -> tuple[int, int]:
        info = cached.cache_info()
        return info.currsize, info.maxsize or 0

    _caches.setdefault(name, []).append(read)


def occupancy() -> dict[str, tuple[int, int]]:
    """(entries, bound) of each registered cache of this process, summed over the live
    instances of a name; owners that are gone are dropped."""
    out: dict[str, tuple[int, int]] = {}
    for name, readers in _caches.items():
        entries = bound = 0
        alive = []
        for read in readers:
            got = read()
            if got is None:
                continue
            alive.append(read)
            entries += got[0]
            bound += got[1]
        readers[:] = alive
        if alive:
            out[name] = (entries, bound)
    return out


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None."""
    libc = _libc()
    if libc is None:
        return None
    fn = libc.malloc_trim
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


@functools.cache
def _libc() -> Any:
    """The C library, when it is glibc (None elsewhere: musl, macOS...)."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        if os.confstr("CS_GNU_LIBC_VERSION"):
            return ctypes.CDLL(None)
    return None


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap malloc's arenas; call before the process starts threads. False where not glibc or
    where ``MALLOC_ARENA_MAX`` is set (glibc read it at start)."""
    libc = _libc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)))


def trim() -> bool:
    """Return the free memory malloc keeps to the system; False where that is not possible.
    Cheap enough for the event loop: well under a millisecond for a worker's heap (measured
    0.5 ms on a fragmented 290 MiB process)."""
    fn = _malloc_trim()
    if fn is None:
        return False
    fn(0)
    return True
