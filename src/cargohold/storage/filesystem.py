"""The local filesystem driver: registry:2's ``filesystem`` driver, same files, same places.

Small metadata operations (stat, link files of ~70 bytes, directory listings) run inline on the
event loop: on a local disk they take microseconds, far less than a hop to a thread, and they are
the hot path of manifest and HEAD requests. Bulk data (blob bodies) goes through threads or
``sendfile``; those threads are the driver's own pool of at most ``maxthreads`` (registry:2's
limit on simultaneous blocking filesystem operations, default 100), not asyncio's default pool.

Every write is a rename: content is written under ``_cargohold/tmp`` and renamed into place,
together with any directories it needs (built in ``tmp`` and renamed in as one tree), and a
deleted tree is first renamed into ``_cargohold/trash``. A process killed at any instant thus
leaves nothing half-made in the layout, only leftovers in those two directories, which nothing
reads (``cargohold fsck --repair`` empties them). With ``fsync`` (``storage.filesystem.fsync``)
each file is flushed to disk before its rename and each changed directory after it, so what
was acknowledged survives a power loss too, in the order it was written (``docs/ordering.md``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import fcntl
import heapq
import os
import shutil
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from cargohold import memory
from cargohold.faults import crash_point
from cargohold.storage import paths
from cargohold.storage.driver import (
    FileInfo,
    FileWriter,
    InvalidPathError,
    PathNotFoundError,
    StorageDriver,
    StorageError,
    check_path,
)
from cargohold.storage.fsparams import DEFAULT_ROOTDIRECTORY

READ_CHUNK = 1 << 20
LISTING_CACHE_MIN = 64  # entries; smaller directories are cheaper to list than to track
LISTING_CACHE_ENTRIES = 256
LISTING_SETTLE_NS = 2_000_000_000
SMALL_FILE = 4096
# Settled small files (link files) kept per process, least recently used evicted: ~530 bytes
# each with its full path as the key, so ~8.5 MiB when full. (It was 65,536 first-in first-out,
# ~34 MiB per worker, which a store with churn filled with links long deleted.) Scaled by
# CARGOHOLD_CACHE_SCALE (cargohold.memory).
SMALL_FILE_ENTRIES = memory.scaled(16384)
TMP_PREFIX = ".cargohold-tmp-"
DEFAULT_MAXTHREADS = 100  # registry:2's default

_T = TypeVar("_T")


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(
        self, rootdirectory: str, fsync: bool = False, maxthreads: int = DEFAULT_MAXTHREADS
    ) -> None:
        self.root = os.path.abspath(rootdirectory)
        self.fsync = fsync
        self.maxthreads = maxthreads
        self._pool: ThreadPoolExecutor | None = None  # made on first use: after any fork
        os.makedirs(self.root, exist_ok=True)
        self._scratch = self.root + paths.SCRATCH
        self._trash = self.root + paths.TRASH
        self._small: OrderedDict[str, tuple[tuple[int, int, int], bytes]] = OrderedDict()
        self._listings: OrderedDict[str, tuple[tuple[int, int], builtins.list[str]]] = (
            OrderedDict()
        )
        memory.register("small_files", self, lambda d: (len(d._small), SMALL_FILE_ENTRIES))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FilesystemDriver:
        return cls(
            str(params.get("rootdirectory", DEFAULT_ROOTDIRECTORY)),
            bool(params.get("fsync")),
            int(params.get("maxthreads", DEFAULT_MAXTHREADS)),
        )

    async def run_blocking(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking filesystem call in the driver's pool (at most ``maxthreads``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.maxthreads, thread_name_prefix="cargohold-fs")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _full(self, path: str) -> str:
        check_path(path)
        return self.root + path if path != "/" else self.root

    @contextlib.asynccontextmanager
    async def lock(self, path: str) -> AsyncIterator[None]:
        """``flock`` on the file itself: shared by every worker process on this machine (and by
        replicas on a shared filesystem whose locks work, such as NFSv4)."""
        try:
            fd = os.open(self._full(path), os.O_RDONLY)
        except FileNotFoundError:
            yield  # nothing to lock: the caller's own checks answer for a missing upload
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def local_path(self, path: str) -> str | None:
        return self._full(path)

    async def stat(self, path: str) -> FileInfo:
        return self.stat_sync(path)

    def stat_sync(self, path: str) -> FileInfo:
        try:
            st = os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        is_dir = (st.st_mode & 0o170000) == 0o040000
        return FileInfo(path, 0 if is_dir else st.st_size, st.st_mtime, is_dir)

    async def exists(self, path: str) -> bool:
        try:
            os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True

    async def get_content(self, path: str) -> bytes:
        return self.get_content_sync(path)

    def get_content_sync(self, path: str, keep: bool = True) -> bytes:
        """Small files (link files, ~71 bytes, read on every manifest request) are kept once
        settled and re-validated by one ``stat``: they are only ever replaced by rename, so a
        new inode or mtime means new content (the same racy-mtime rule as listings).

        Not ``keep``: a read that is not kept (nor moved up in the cache): the walks over the
        whole store (garbage collection) read every tag link and manifest once, which would
        only evict the files requests read and leave the walk's copies alive after it."""
        full = self._full(path)
        try:
            st = os.stat(full)
            version = (st.st_ino, st.st_mtime_ns, st.st_size)
            cached = self._small.get(full)
            if cached is not None and cached[0] == version:
                if keep:
                    self._small.move_to_end(full)
                return cached[1]
            with open(full, "rb") as f:
                data = f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFoundError(path) from None
        if keep and len(data) <= SMALL_FILE and time.time_ns() - st.st_mtime_ns > LISTING_SETTLE_NS:
            self._small[full] = (version, data)
            self._small.move_to_end(full)
            if len(self._small) > SMALL_FILE_ENTRIES:
                self._small.popitem(last=False)
        return data

    async def put_content(self, path: str, data: bytes) -> None:
        if len(data) > READ_CHUNK or self.fsync:  # fsync waits for the disk: not on the loop
            await self.run_blocking(self._put_sync, path, data)
        else:
            self._put_sync(path, data)

    def _put_sync(self, path: str, data: bytes) -> None:
        full = self._full(path)
        tmp = self._scratch_path()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            crash_point("fs.put.before-rename")
            self._publish(tmp, full)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _scratch_path(self) -> str:
        name = os.path.join(self._scratch, uuid.uuid4().hex)
        if not os.path.isdir(self._scratch):
            os.makedirs(self._scratch, exist_ok=True)
        return name

    def _publish(self, source: str, full: str) -> None:
        """Rename ``source`` to ``full``; missing parent directories appear with it, at once.

        When the parent is missing, the missing directories are built in scratch space around
        the file and the topmost is renamed into place: no empty directory (say a tag with no
        ``current/link``) is ever visible, not even after a crash. Another process creating the
        same directory meanwhile makes the rename fail; the file is then taken back and the
        whole step retried, now with more of the path in place."""
        for _ in range(16):
            try:
                os.replace(source, full)
            except FileNotFoundError:
                if not os.path.exists(source):
                    raise
            except NotADirectoryError:
                raise InvalidPathError(full[len(self.root) :]) from None
            else:
                if self.fsync:
                    _fsync_dir(os.path.dirname(full))
                return
            self._publish_tree(source, full)
            if not os.path.exists(source):
                return
        raise StorageError(f"cannot create the directories of {full[len(self.root) :]}")

    def _publish_tree(self, source: str, full: str) -> None:
        missing: builtins.list[str] = []
        parent = os.path.dirname(full)
        while not os.path.isdir(parent):
            if len(parent) <= len(self.root):
                raise StorageError(f"storage root {self.root} is missing")
            missing.append(os.path.basename(parent))
            parent = os.path.dirname(parent)
        if not missing:
            return  # the parent appeared meanwhile: the caller's next rename will do
        missing.reverse()
        box = self._scratch_path()
        inner = os.path.join(box, *missing)
        os.makedirs(inner)
        moved = os.path.join(inner, os.path.basename(full))
        os.replace(source, moved)
        try:
            if self.fsync:
                for depth in range(len(missing), 0, -1):
                    _fsync_dir(os.path.join(box, *missing[:depth]))
            os.rename(os.path.join(box, missing[0]), os.path.join(parent, missing[0]))
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            os.replace(moved, source)  # somebody made that directory first: try again
        else:
            if self.fsync:
                _fsync_dir(parent)
        finally:
            shutil.rmtree(box, ignore_errors=True)

    async def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]:
        try:
            f = open(self._full(path), "rb")  # noqa: SIM115 - closed in finally
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        try:
            f.seek(offset)
            while True:
                chunk = await self.run_blocking(f.read, READ_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            f.close()

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        try:
            f = open(full, "ab" if append else "wb")  # noqa: SIM115 - owned by the writer
        except IsADirectoryError:
            raise InvalidPathError(path) from None
        return _FileWriter(f, self.run_blocking)

    async def list(self, path: str) -> list[str]:
        full = self._full(path)
        try:
            st = os.stat(full)
            # A big directory (a repository's 1000 tags) is listed again only when it changed.
            # Its mtime moves with every entry added or removed, but only at the clock's
            # granularity, so a listing is reused only once the directory has been still for
            # longer than that (git's "racy" rule): a change in the same tick is never missed.
            version = (st.st_ino, st.st_mtime_ns)
            cached = self._listings.get(full)
            if cached is not None and cached[0] == version:
                self._listings.move_to_end(full)
                return builtins.list(cached[1])
            names = os.listdir(full)
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None
        base = path.rstrip("/")
        listing = [f"{base}/{n}" for n in names if not n.startswith(".")]
        settled = time.time_ns() - st.st_mtime_ns > LISTING_SETTLE_NS
        if len(listing) >= LISTING_CACHE_MIN and settled:
            self._listings[full] = (version, listing)
            if len(self._listings) > LISTING_CACHE_ENTRIES:
                self._listings.popitem(last=False)
            return builtins.list(listing)
        return listing

    def list_names(self, path: str) -> builtins.list[str]:
        """Child names only: the cheap form the tag and catalog listings need."""
        try:
            return [n for n in os.listdir(self._full(path)) if not n.startswith(".")]
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFoundError(path) from None

    async def list_after(self, path: str, after: str, limit: int) -> builtins.list[str]:
        # A whole directory read, so in a thread (only tests and tools page a local directory
        # this way: the catalog of a filesystem store walks the layout itself).
        return await self.run_blocking(self._list_after_sync, self._full(path), after, limit)

    @staticmethod
    def _list_after_sync(full: str, after: str, limit: int) -> builtins.list[str]:
        try:
            with os.scandir(full) as entries:
                names = [
                    e.name
                    for e in entries
                    if e.name > after
                    and not e.name.startswith(".")
                    and e.is_file(follow_symlinks=False)
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []
        return heapq.nsmallest(limit, names)

    async def move(self, source: str, dest: str) -> None:
        src, dst = self._full(source), self._full(dest)
        try:
            if self.fsync:
                await self.run_blocking(self._publish_durably, src, dst)
            else:
                self._publish(src, dst)
        except FileNotFoundError:
            if not os.path.exists(src):
                raise PathNotFoundError(source) from None
            raise
        except OSError as e:
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR):
                raise StorageError(f"cannot move {source} to {dest}: {e}") from e
            raise

    async def delete(self, path: str) -> None:
        full = self._full(path)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                # Renamed out of the layout first: readers, and a crash, never see half a tree.
                doomed = self._doomed_path(full)
                os.rename(full, doomed)
                if self.fsync:
                    await self.run_blocking(_fsync_dir, os.path.dirname(full))
                crash_point("fs.delete.after-rename")
                await self.run_blocking(shutil.rmtree, doomed, True)
            else:
                os.unlink(full)
                if self.fsync:
                    await self.run_blocking(_fsync_dir, os.path.dirname(full))
        except FileNotFoundError:
            raise PathNotFoundError(path) from None

    def _publish_durably(self, src: str, dst: str) -> None:
        _fsync_file(src)
        self._publish(src, dst)
        _fsync_dir(os.path.dirname(src))

    def _doomed_path(self, full: str) -> str:
        if full.startswith(self._trash + "/") or full == self._trash:
            return os.path.join(os.path.dirname(full), TMP_PREFIX + uuid.uuid4().hex)
        if not os.path.isdir(self._trash):
            os.makedirs(self._trash, exist_ok=True)
        return os.path.join(self._trash, uuid.uuid4().hex)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def walk_sync(self, path: str) -> builtins.list[str]:
        """All file paths below ``path`` (for GC and tools; not used on request paths)."""
        full = self._full(path)
        out: builtins.list[str] = []
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = dirpath[len(self.root) :] or "/"
            for name in filenames:
                if not name.startswith("."):
                    out.append(f"{rel.rstrip('/')}/{name}")
        return out


class _FileWriter(FileWriter):
    """Upload data: with ``fsync`` it is synced once, when :meth:`FilesystemDriver.move`
    publishes it (before the 201), not after every chunk (a 202 promises less)."""

    def __init__(self, f: Any, blocking: Callable[..., Any]) -> None:
        self._f = f
        self.run_blocking = blocking
        self._size = os.fstat(f.fileno()).st_size

    @property
    def size(self) -> int:
        return self._size

    async def write(self, data: bytes | memoryview) -> None:
        if len(data) >= 65536:
            await self.run_blocking(self._f.write, data)
        else:
            self._f.write(data)
        self._size += len(data)

    async def commit(self) -> None:
        self._f.flush()

    async def truncate(self, size: int) -> None:
        self._f.flush()
        os.ftruncate(self._f.fileno(), size)
        self._f.seek(size)
        self._size = size

    async def cancel(self) -> None:
        name = self._f.name
        self._f.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)

    async def close(self) -> None:
        self._f.close()


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Make a directory's entries (a rename into or out of it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
