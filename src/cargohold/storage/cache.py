"""The blob descriptor cache (``storage.cache.blobdescriptor``) as a layer over the driver.

registry:2 caches blob descriptors: digest → size, and whether a repository links a digest.
cargohold caches the same facts at the one place every request goes through, the driver, so the
domain code stays unaware of it: the answers of ``stat`` for

- ``blobs/<alg>/<xx>/<hex>/data`` (a blob's size),
- ``repositories/<name>/_layers/<alg>/<hex>/link`` (the repository links the blob),
- ``repositories/<name>/_manifests/revisions/<alg>/<hex>/link`` (it has the manifest),

and the content of ``repositories/<name>/_manifests/tags/<tag>/current/link`` (tag → digest,
Redis only: a per-process copy would serve a moved tag from another replica's stale memory).

Only what exists is cached; a miss always asks the store. Writes through this layer update the
entry (put) or drop it (move, commit); deletes leave a short tombstone that refuses refills, so a
reader racing a delete cannot put a stale "exists" back. A delete of a directory that may hold
cached entries (a repository, ``blobs/``) drops every entry below it. Entries also expire
(:data:`TTL`), which bounds what another program writing to the same store (registry:2 during a
migration, an offline garbage collection) can leave stale.

Keys are ``cargohold:<namespace>:<path>`` where the namespace is a hash of the storage identity
(driver, endpoint, bucket, root directory): registries on different storage never share entries,
even through one Redis. The cache only accelerates: a backend that fails answers "miss" and is
skipped for a moment (see :mod:`cargohold.storage.rediscache`), and every request still works.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable

from cargohold import memory
from cargohold.coalesce import Coalescer
from cargohold.storage import paths
from cargohold.storage.driver import FileInfo, FileWriter, PathNotFoundError, StorageDriver
from cargohold.storage.wrapper import DriverWrapper

TOMBSTONE = "\x00"
TOMBSTONE_SECONDS = 30.0
MAX_CONTENT = 256  # tag links hold a digest string

KIND_BLOB = "blob"
KIND_LAYER = "layer"
KIND_REVISION = "revision"
KIND_TAG = "tag"
_FILES = {
    paths.Kind.BLOB_DATA: KIND_BLOB,
    paths.Kind.LAYER_LINK: KIND_LAYER,
    paths.Kind.REVISION_LINK: KIND_REVISION,
    paths.Kind.TAG_CURRENT_LINK: KIND_TAG,
}
# Directories holding exactly one cached file: deleting one drops just that entry.
_DIRS = {
    paths.Kind.BLOB_DIR: "/data",
    paths.Kind.LAYER_DIR: "/link",
    paths.Kind.REVISION_DIR: "/link",
    paths.Kind.TAG_DIR: "/current/link",
}
# Seconds an entry lives, per kind and backend (None: until evicted).
TTL: dict[str, dict[str, float | None]] = {
    "redis": {KIND_BLOB: 24 * 3600.0, KIND_LAYER: 3600.0, KIND_REVISION: 3600.0, KIND_TAG: 300.0},
    "inmemory": {KIND_BLOB: None, KIND_LAYER: 60.0, KIND_REVISION: 60.0},
}


def classify(path: str) -> str | None:
    return _FILES.get(paths.parse(path).kind)


def _may_hold_entries(path: str) -> bool:
    """Whether a directory could contain cached files (so deleting it must drop them)."""
    if paths.ROOT.startswith(path.rstrip("/") + "/") or path in ("/", paths.ROOT):
        return True
    if path == paths.REPOSITORIES or path.startswith(paths.BLOBS):
        return True
    parsed = paths.parse(path)
    return parsed.kind is paths.Kind.REPOSITORY_DIR or parsed.area in ("_layers", "_manifests")


def namespace(identity: str) -> str:
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


class CacheBackend(abc.ABC):
    """Where entries live. Failures are the backend's to absorb: it answers as for a miss."""

    kind = "abstract"

    @abc.abstractmethod
    async def get(self, key: str) -> str | None:
        """The value, or None (absent, tombstoned, or the backend is unavailable)."""

    @abc.abstractmethod
    async def fill(self, key: str, value: str, ttl: float | None) -> None:
        """Store ``value`` unless the key holds anything (a value or a tombstone)."""

    @abc.abstractmethod
    async def put(self, key: str, value: str, ttl: float | None) -> None:
        """Store ``value`` whatever the key holds (write-through after a store write)."""

    @abc.abstractmethod
    async def invalidate(self, key: str) -> None:
        """Replace the entry with a tombstone that refuses :meth:`fill` for a while."""

    @abc.abstractmethod
    async def forget(self, key: str) -> None: ...

    @abc.abstractmethod
    async def forget_prefix(self, prefix: str) -> None: ...

    async def check(self) -> str:
        """ "ok", or why the backend is unavailable (for /debug/health)."""
        return "ok"

    async def close(self) -> None:
        return None


class InMemoryCache(CacheBackend):
    """A bounded LRU in this process (registry:2's ``inmemory``)."""

    kind = "inmemory"

    def __init__(self, size: int = 10_000) -> None:
        self.size = max(size, 16)
        self._entries: OrderedDict[str, tuple[float | None, str]] = OrderedDict()
        memory.register("blob_descriptors", self, lambda c: (len(c._entries), c.size))

    def _live(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires < time.monotonic():
            del self._entries[key]
            return None
        return value

    def _set(self, key: str, value: str, ttl: float | None) -> None:
        self._entries[key] = (None if ttl is None else time.monotonic() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    async def get(self, key: str) -> str | None:
        value = self._live(key)
        if value is None or value == TOMBSTONE:
            return None
        self._entries.move_to_end(key)
        return value

    async def fill(self, key: str, value: str, ttl: float | None) -> None:
        if self._live(key) is None:
            self._set(key, value, ttl)

    async def put(self, key: str, value: str, ttl: float | None) -> None:
        self._set(key, value, ttl)

    async def invalidate(self, key: str) -> None:
        self._set(key, TOMBSTONE, TOMBSTONE_SECONDS)

    async def forget(self, key: str) -> None:
        self._entries.pop(key, None)

    async def forget_prefix(self, prefix: str) -> None:
        for key in [k for k in self._entries if k.startswith(prefix)]:
            del self._entries[key]


def _encode(info: FileInfo) -> str:
    return f"{info.size}|{info.mtime}|{info.token or ''}"


def _decode(path: str, value: str) -> FileInfo | None:
    try:
        size, mtime, token = value.split("|", 2)
        return FileInfo(path, int(size), float(mtime), False, token or None)
    except ValueError:
        return None


class CachingDriver(DriverWrapper):
    """Answers the hot existence and size questions from a :class:`CacheBackend`."""

    def __init__(self, inner: StorageDriver, backend: CacheBackend) -> None:
        super().__init__(inner)
        self.backend = backend
        self.prefix = f"cargohold:{namespace(inner.identity)}:"
        self.ttl = TTL.get(backend.kind, TTL["redis"])
        # Store stats under way, by key: concurrent misses of one file (a pull storm's clients
        # all ask for the same few blobs at once, before any answer is cached) share one
        # request. Only "it exists, this size" is shared: a caller that joined a request
        # answering "absent" asks again itself, since the file may have been written since that
        # request left (by another replica). A delete or move through this layer (or another
        # process's, reported to :meth:`invalidate`) empties the table, so no caller arriving
        # after it joins a request that may predate it.
        self._inflight: Coalescer[str, FileInfo] = Coalescer()

    def _key(self, path: str) -> str:
        return self.prefix + path

    async def invalidate(self, stale: Iterable[str]) -> None:
        """Drop the entries of files changed behind this layer (by another process)."""
        self._inflight.clear()
        for path in stale:
            await self.backend.invalidate(self._key(path))

    async def stat(self, path: str) -> FileInfo:
        kind = classify(path)
        if kind is None or kind == KIND_TAG or kind not in self.ttl:
            return await self.inner.stat(path)
        key = self._key(path)
        cached = await self.backend.get(key)
        if cached is not None:
            info = _decode(path, cached)
            if info is not None:
                return info
        task = self._inflight.running(key)
        if task is not None:
            with contextlib.suppress(PathNotFoundError):
                return await asyncio.shield(task)
            return await self.inner.stat(path)  # "absent" may be older than this request
        task = self._inflight.start(key, self._stat_and_fill(path, key, self.ttl[kind]))
        return await asyncio.shield(task)  # one caller cancelled leaves the others their answer

    async def exists(self, path: str) -> bool:
        """A cached file's existence from the cache (the revision link every manifest request
        checks: on S3 a HEAD each time otherwise); anything else as the store answers it."""
        kind = classify(path)
        if kind is None or kind == KIND_TAG or kind not in self.ttl:
            return await self.inner.exists(path)
        try:
            await self.stat(path)
        except PathNotFoundError:
            return False
        return True

    async def _stat_and_fill(self, path: str, key: str, ttl: float | None) -> FileInfo:
        info = await self.inner.stat(path)
        # Not filled when a delete emptied the table meanwhile: the answer may predate it.
        if not info.is_dir and self._inflight.running(key) is asyncio.current_task():
            await self.backend.fill(key, _encode(info), ttl)
        return info

    async def get_content(self, path: str) -> bytes:
        kind = classify(path)
        if kind != KIND_TAG or kind not in self.ttl:
            return await self.inner.get_content(path)
        key = self._key(path)
        cached = await self.backend.get(key)
        if cached is not None:
            return cached.encode()
        data = await self.inner.get_content(path)
        if len(data) <= MAX_CONTENT:
            await self.backend.fill(key, data.decode("latin-1"), self.ttl[kind])
        return data

    async def put_content(self, path: str, data: bytes) -> None:
        await self.inner.put_content(path, data)
        kind = classify(path)
        if kind is None or kind not in self.ttl:
            return
        key = self._key(path)
        if kind == KIND_TAG:
            if len(data) <= MAX_CONTENT:
                await self.backend.put(key, data.decode("latin-1"), self.ttl[kind])
            else:
                await self.backend.invalidate(key)
        else:
            info = FileInfo(path, len(data), time.time(), False)
            await self.backend.put(key, _encode(info), self.ttl[kind])

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        writer = await self.inner.writer(path, append)
        if classify(path) is None:
            return writer
        return _InvalidatingWriter(writer, self.backend, self._key(path))

    async def move(self, source: str, dest: str) -> None:
        await self.inner.move(source, dest)
        self._inflight.clear()
        if classify(source) is not None:
            await self.backend.invalidate(self._key(source))
        if classify(dest) is not None:
            # Blobs are content-addressed: a cached size for dest can only be right already.
            await self.backend.forget(self._key(dest))

    async def delete(self, path: str) -> None:
        try:
            await self.inner.delete(path)
        finally:
            await self._dropped(path)

    async def _dropped(self, path: str) -> None:
        self._inflight.clear()
        if classify(path) is not None:
            await self.backend.invalidate(self._key(path))
            return
        suffix = _DIRS.get(paths.parse(path).kind)
        if suffix is not None:
            await self.backend.invalidate(self._key(path + suffix))
            return
        if _may_hold_entries(path):
            await self.backend.forget_prefix(self._key(path.rstrip("/") + "/"))

    async def close(self) -> None:
        try:
            await self.backend.close()
        finally:
            await self.inner.close()


class _InvalidatingWriter(FileWriter):
    """Drops the cache entry of the file once the new content is committed (or cancelled)."""

    def __init__(self, inner: FileWriter, backend: CacheBackend, key: str) -> None:
        self._inner = inner
        self._backend = backend
        self._key = key

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def token(self) -> str | None:
        return self._inner.token

    async def write(self, data: bytes | memoryview) -> None:
        await self._inner.write(data)

    async def truncate(self, size: int) -> None:
        await self._inner.truncate(size)

    async def commit(self) -> None:
        try:
            await self._inner.commit()
        finally:
            await self._backend.invalidate(self._key)

    async def cancel(self) -> None:
        try:
            await self._inner.cancel()
        finally:
            await self._backend.invalidate(self._key)

    async def close(self) -> None:
        await self._inner.close()
