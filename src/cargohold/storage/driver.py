"""The storage-driver interface, in the spirit of distribution's ``registry/storage/driver``.

A driver knows nothing of images: it stores bytes under slash-separated paths. It is small on
purpose so that another backend (S3) only has to implement these few operations. Paths are
always absolute ("/docker/registry/v2/...") and built by :mod:`cargohold.storage.paths` from
validated components; drivers still refuse ``..`` as a second line of defence.
"""

from __future__ import annotations

import abc
import builtins
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar


class StorageError(Exception):
    """A backend failure that is not the caller's fault (disk full, permissions, network)."""

    transient = False  # True: the store is down or overloaded now; clients get 503, not 500


class StorageUnavailableError(StorageError):
    """The store did not answer, or answered that it is failing (S3's 500/503 ``SlowDown``),
    after the driver's own retries. The request may succeed later, so clients get 503, not 500;
    nothing the request meant to write is acknowledged."""

    transient = True


class PathNotFoundError(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"path not found: {path}")
        self.path = path


class InvalidPathError(StorageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"invalid path: {path!r}")
        self.path = path


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    mtime: float
    is_dir: bool
    # Changes whenever the content is rewritten, where the driver can tell (S3: the writer's
    # nonce or the ETag); None where it cannot. Lets a cached hash state prove it is current.
    token: str | None = None


def check_path(path: str) -> str:
    """Absolute, no empty, ``.`` or ``..`` component (nor any dot-file: the layout has none)."""
    if path == "/":
        return path
    if path[:1] != "/" or "//" in path or "/." in path or path[-1] == "/" or "\x00" in path:
        raise InvalidPathError(path)
    return path


class FileWriter(abc.ABC):
    """Appends to a file; nothing is visible at the final path until :meth:`commit`.

    Writers for the upload area write in place (the upload's own ``data`` file is private to the
    upload); ``commit`` makes the bytes durable for the next request, ``cancel`` throws them away.
    :meth:`write` must not keep ``data`` once it returns: uploads reuse their buffers.
    """

    @property
    @abc.abstractmethod
    def size(self) -> int: ...

    @abc.abstractmethod
    async def write(self, data: bytes | memoryview) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def cancel(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    def token(self) -> str | None:
        """After :meth:`commit`, the :attr:`FileInfo.token` a stat of the file now reports."""
        return None

    async def truncate(self, size: int) -> None:
        """Drop everything after ``size`` bytes: a chunk that turned out malformed is undone.

        Only writers that write in place need it; a writer that keeps nothing until
        :meth:`commit` (S3) has nothing to undo and may leave this as it is."""
        return None


D = TypeVar("D", bound="StorageDriver")


class StorageDriver(abc.ABC):
    name: str = "abstract"

    def layer(self, kind: type[D]) -> D | None:
        """The driver of type ``kind`` in this stack (itself, or one it wraps), or None.

        The cache and the repository index wrap the backend; code that needs one of them (to
        drop cache entries) or the backend itself (to walk a local directory directly) asks for
        it by type instead of walking ``inner`` attributes."""
        return self if isinstance(self, kind) else None

    @abc.abstractmethod
    async def stat(self, path: str) -> FileInfo:
        """Raise :class:`PathNotFoundError` when nothing is there."""

    async def exists(self, path: str) -> bool:
        """Whether there is a file or directory at ``path``: a :meth:`stat` that drivers may
        answer more cheaply (it runs on every manifest request, for the revision link)."""
        try:
            await self.stat(path)
        except PathNotFoundError:
            return False
        return True

    @abc.abstractmethod
    async def get_content(self, path: str) -> bytes: ...

    @abc.abstractmethod
    async def put_content(self, path: str, data: bytes) -> None:
        """Replace the whole file atomically: readers see the old or the new content, never half."""

    @abc.abstractmethod
    def reader(self, path: str, offset: int = 0) -> AsyncIterator[bytes]: ...

    @abc.abstractmethod
    async def writer(self, path: str, append: bool = False) -> FileWriter: ...

    @abc.abstractmethod
    async def list(self, path: str) -> list[str]:
        """Full paths of the direct children; :class:`PathNotFoundError` if ``path`` is absent."""

    @abc.abstractmethod
    async def list_after(self, path: str, after: str, limit: int) -> builtins.list[str]:
        """The names of the files directly in directory ``path`` that sort after ``after``
        (byte order of their UTF-8, which is Python's ``str`` order), the first ``limit`` of
        them in that order; [] when there are none or no such directory.

        What a page of a large directory costs on an object store: one ``ListObjectsV2`` with
        ``StartAfter`` and ``MaxKeys`` (up to 1000 names), however many names come before
        ``after`` (the repository index answers ``_catalog?last=`` with it). Other drivers
        may read the whole directory."""

    @abc.abstractmethod
    async def move(self, source: str, dest: str) -> None:
        """Atomically replace ``dest`` with ``source``."""

    @abc.abstractmethod
    async def delete(self, path: str) -> None:
        """Delete a file or a whole tree; :class:`PathNotFoundError` if absent."""

    def lock(self, path: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Exclusive, cross-process lock named by ``path`` (the upload's data file), held while
        an upload checks its offset and appends, so a chunk sent twice at once on two
        connections to two workers is taken once. Drivers without such a lock (object stores)
        rely on their own conditional writes instead; the default locks nothing."""
        return contextlib.nullcontext()

    async def url_for(self, path: str, method: str = "GET") -> str | None:
        """A URL the client can fetch directly (redirect), or None to stream through us."""
        return None

    def local_path(self, path: str) -> str | None:
        """The local file behind ``path`` when the driver has one, so bodies can use sendfile."""
        return None

    @property
    def identity(self) -> str:
        """Names the stored data (driver, location, root): equal identities share one store."""
        return f"{self.name}|{self.local_path('/') or ''}"

    async def walk(self, path: str) -> builtins.list[FileInfo]:
        """Every file below ``path`` (any order); [] if absent. Not for hot paths: drivers with
        a flat namespace (S3) override this with one listing per 1000 keys."""
        out: builtins.list[FileInfo] = []
        try:
            children = await self.list(path)
        except PathNotFoundError:
            return out
        for child in children:
            try:
                info = await self.stat(child)
            except PathNotFoundError:
                continue
            if info.is_dir:
                out.extend(await self.walk(child))
            else:
                out.append(info)
        return out

    async def check_health(self) -> None:
        """Raise :class:`StorageError` when the backend cannot be reached."""
        with contextlib.suppress(PathNotFoundError):
            await self.stat("/")

    async def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections (called once when the process stops)."""
