"""Never serve a corrupt blob: each blob file is hashed once per process, while it is sent.

A blob's bytes can rot on disk (or be overwritten by hand) after they were verified at upload.
Hashing every download would double the cost of the hottest path, so each worker verifies a
blob file once per *identity* (device, inode, mtime, size: blobs are only ever replaced by a
rename, which changes the inode) and remembers the verdict. The first download of a file sends
all its bytes but the last with ``sendfile`` while a thread hashes the file; the last byte goes
only once the hash matched. If it does not, the connection is aborted, so the client sees a
short body and an error, never a silently wrong blob; later requests for that file get a 500
at once. Rot that leaves mtime and inode alike after a verdict was cached is not seen until the
worker restarts (or by ``cargohold fsck --verify-blobs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections import OrderedDict

from cargohold import memory
from cargohold.digest import Digest

log = logging.getLogger("cargohold.integrity")

Identity = tuple[int, int, int, int]
# Verdicts kept per process, least recently used evicted: ~250 bytes each, so ~16 MiB when
# full. Generous on purpose: an evicted verdict costs hashing the whole blob again at its next
# download. Files replaced or deleted leave stale identities that simply age out.
VERDICTS = memory.scaled(65536)
READ = 1 << 20


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class BlobVerifier:
    def __init__(self, entries: int = VERDICTS) -> None:
        self.entries = entries
        self._verdicts: OrderedDict[Identity, bool] = OrderedDict()
        self._pending: dict[Identity, asyncio.Future[bool]] = {}
        memory.register("blob_verdicts", self, lambda v: (len(v._verdicts), v.entries))

    def known(self, key: Identity) -> bool | None:
        """True (verified), False (corrupt) or None (not hashed yet in this process)."""
        return self._verdicts.get(key)

    def trust(self, key: Identity) -> None:
        """Take the file as verified without hashing it again: its bytes were hashed as they
        were written, moments ago (a mirror's fetch, before it published the file)."""
        self._verdicts[key] = True
        while len(self._verdicts) > self.entries:
            self._verdicts.popitem(last=False)

    def check(self, key: Identity, fd: int, digest: Digest) -> asyncio.Future[bool]:
        """The verdict on the open file ``fd`` (hashed from a duplicate of it in a thread,
        so the caller may close its own meanwhile); one hashing per identity at a time."""
        known = self._verdicts.get(key)
        loop = asyncio.get_running_loop()
        if known is not None:
            done: asyncio.Future[bool] = loop.create_future()
            done.set_result(known)
            return done
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        own = os.dup(fd)
        future = loop.run_in_executor(None, _hash_fd, own, key[3], digest.algorithm)
        result: asyncio.Future[bool] = loop.create_future()
        self._pending[key] = result

        def finished(job: asyncio.Future[str]) -> None:
            self._pending.pop(key, None)
            exc = job.exception()
            if exc is not None:
                result.set_exception(exc)
                result.exception()  # retrieved: a verdict nobody awaits anymore is no error
                return
            ok = job.result() == digest.hex
            if not ok:
                log.error(
                    "blob %s is corrupt: its bytes hash to %s:%s (run cargohold fsck)",
                    digest,
                    digest.algorithm,
                    job.result(),
                )
            self._verdicts[key] = ok
            while len(self._verdicts) > self.entries:
                self._verdicts.popitem(last=False)
            result.set_result(ok)

        future.add_done_callback(finished)
        return result


def _hash_fd(fd: int, size: int, algorithm: str) -> str:
    """Hash ``size`` bytes of ``fd`` with ``pread`` (no shared offset), then close it."""
    try:
        hasher = hashlib.new(algorithm)
        buf = bytearray(min(READ, max(size, 1)))
        view = memoryview(buf)
        offset = 0
        while offset < size:
            n = os.preadv(fd, [view[: min(len(buf), size - offset)]], offset)
            if not n:
                break
            hasher.update(view[:n])
            offset += n
        return hasher.hexdigest()
    finally:
        os.close(fd)
