"""Random access to the files of an image archive: a directory, a tar, or a gzip'd tar.

Both archive formats need random access: a ``docker save`` tar carries ``manifest.json`` near
its end, and an OCI layout is read from ``index.json`` down to the blobs it names. A plain tar on
disk is indexed once (member name → offset and size) and read with ``pread``-style slices, so
several threads can hash several layers at once; a gzip'd tar is first decompressed into a
temporary file, because gzip cannot seek.

Indexing is also the first line of defence against broken archives: a member whose data runs past
the end of the file, or a tar without its end-of-archive marker, is refused here with a message
that says the archive is truncated, before a single byte reaches a registry.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLOCK = 512
MAX_LINK_DEPTH = 16


class ArchiveError(Exception):
    """The input is not a usable image archive; the message tells the user what is wrong."""


def clean_name(name: str) -> str:
    """Normalise a member path (``./x``, ``/x``, ``a//b``) so lookups don't depend on spelling."""
    name = posixpath.normpath("/" + name.replace("\\", "/")).lstrip("/")
    return "" if name == "." else name


class Files(Protocol):
    """A read-only view of the files of an archive, by normalised relative path."""

    description: str

    def exists(self, name: str) -> bool: ...

    def size(self, name: str) -> int: ...

    def open(self, name: str) -> BinaryIO:
        """A new handle of its own (safe to use from another thread), at offset 0."""
        ...

    def close(self) -> None: ...


def read_small(files: Files, name: str, limit: int = 16 << 20) -> bytes:
    """A whole (JSON) file, refusing anything implausibly large for metadata."""
    size = files.size(name)
    if size > limit:
        raise ArchiveError(f"{name} in {files.description} is {size} bytes: too large")
    with files.open(name) as f:
        data = f.read()
    if len(data) != size:
        raise ArchiveError(f"{name} in {files.description} is truncated")
    return data


class DirFiles:
    """An extracted archive or OCI layout directory; nothing may resolve outside of it."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.description = root

    def _path(self, name: str) -> str:
        cleaned = clean_name(name)
        full = os.path.realpath(os.path.join(self.root, cleaned))
        if cleaned == "" or os.path.commonpath([self.root, full]) != self.root:
            raise ArchiveError(f"{name!r} points outside of {self.description}")
        return full

    def exists(self, name: str) -> bool:
        try:
            return os.path.isfile(self._path(name))
        except ArchiveError:
            return False

    def size(self, name: str) -> int:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            raise ArchiveError(f"{name} is missing from {self.description}") from None

    def open(self, name: str) -> BinaryIO:
        try:
            return open(self._path(name), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ArchiveError(f"{name} is missing from {self.description}") from None

    def close(self) -> None:
        pass


class _Slice(io.RawIOBase):
    """``size`` bytes at ``offset`` of a file, through a handle of its own."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        super().__init__()
        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._f.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        want = min(len(view), self._left)
        if want <= 0:
            return 0
        got = self._f.readinto(view[:want])
        if not got:
            raise ArchiveError("the archive ended in the middle of a file: it is truncated")
        self._left -= got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


class TarFiles:
    """An uncompressed tar on disk, indexed once; members are read in place."""

    def __init__(self, path: str, description: str | None = None) -> None:
        self.path = path
        self.description = description or path
        self._members: dict[str, tarfile.TarInfo] = {}
        self._index()

    def _index(self) -> None:
        file_size = os.path.getsize(self.path)
        end = 0
        try:
            with tarfile.open(self.path, mode="r:") as tar:
                while True:
                    info = tar.next()
                    if info is None:
                        break
                    name = clean_name(info.name)
                    if name:
                        self._members[name] = info
                    if info.isreg():
                        data_end = info.offset_data + info.size
                        if data_end > file_size:
                            raise ArchiveError(
                                f"{self.description} is truncated: {info.name} needs "
                                f"{info.size} bytes but the file ends {data_end - file_size} "
                                "bytes too early"
                            )
                        end = info.offset_data + -(-info.size // BLOCK) * BLOCK
                    else:
                        end = info.offset_data
        except tarfile.TarError as e:
            raise ArchiveError(f"{self.description} is not a valid tar archive ({e})") from None
        except EOFError:
            raise ArchiveError(f"{self.description} is truncated") from None
        if not self._members:
            raise ArchiveError(f"{self.description} is empty or not a tar archive")
        # Every tar writer (Go's archive/tar, GNU tar, Python) ends with two zero blocks; a tar cut
        # exactly between two members is only recognisable by their absence.
        with open(self.path, "rb") as f:
            f.seek(end)
            trailer = f.read(2 * BLOCK)
        if len(trailer) < 2 * BLOCK or trailer.strip(b"\0"):
            raise ArchiveError(
                f"{self.description} is truncated: the tar has no end-of-archive marker"
            )

    def _resolve(self, name: str) -> tarfile.TarInfo:
        cleaned = clean_name(name)
        for _ in range(MAX_LINK_DEPTH):
            info = self._members.get(cleaned)
            if info is None:
                raise ArchiveError(f"{name} is missing from {self.description}")
            if info.isreg():
                return info
            if info.issym():
                target = posixpath.join(posixpath.dirname(cleaned), info.linkname)
                cleaned = clean_name(target)
            elif info.islnk():
                cleaned = clean_name(info.linkname)
            else:
                raise ArchiveError(f"{name} in {self.description} is not a regular file")
        raise ArchiveError(f"{name} in {self.description}: too many levels of links")

    def exists(self, name: str) -> bool:
        try:
            self._resolve(name)
        except ArchiveError:
            return False
        return True

    def size(self, name: str) -> int:
        return self._resolve(name).size

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        return io.BufferedReader(_Slice(self.path, info.offset_data, info.size), CHUNK)

    def close(self) -> None:
        pass


class SpooledTarFiles(TarFiles):
    """A gzip'd tar decompressed into a temporary file, removed on close."""

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def open_files(
    path: str, tmpdir: str, on_gunzip: Callable[[int], Callable[[int], None]] | None = None
) -> tuple[Files, bool]:
    """Open a directory, tar or gzip'd tar; returns the view and whether input was compressed.

    ``on_gunzip(size)`` is called when a gzip'd archive has to be decompressed first and returns
    the callback that is told of every compressed byte read.
    """
    if os.path.isdir(path):
        return DirFiles(path), False
    try:
        with open(path, "rb") as f:
            head = f.read(BLOCK)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file or directory") from None
    except OSError as e:
        raise ArchiveError(f"{path}: {e.strerror or e}") from None
    if head.startswith(GZIP_MAGIC):
        spool = os.path.join(tmpdir, "archive.tar")
        on_bytes = on_gunzip(os.path.getsize(path)) if on_gunzip is not None else None
        gunzip_file(path, spool, on_bytes)
        return SpooledTarFiles(spool, path), True
    if head.startswith(ZSTD_MAGIC):
        raise ArchiveError(
            f"{path} is zstd-compressed, which is not supported: decompress it first (zstd -d)"
        )
    if len(head) < BLOCK or head[257:262] != b"ustar":
        if not head:
            raise ArchiveError(f"{path} is empty")
        raise ArchiveError(f"{path} is neither a tar archive, a gzip'd tar, nor a directory")
    return TarFiles(path), False


def gunzip_file(src: str, dst: str, on_bytes: Callable[[int], None] | None = None) -> None:
    """Decompress ``src`` into ``dst``; every gzip error becomes a clear :class:`ArchiveError`."""

    def counted(f: BinaryIO) -> Iterator[bytes]:
        for chunk in _read_chunks(f):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            for chunk in gunzip_chunks(counted(fin)):
                fout.write(chunk)
    except ArchiveError as e:
        raise ArchiveError(f"{src}: {e}") from None


def _read_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


class Gunzip:
    """Decompresses a (possibly multi-member) gzip stream fed chunk by chunk.

    The one place cargohold inflates gzip, for whole archives and for single layers. Output
    comes in pieces of at most :data:`CHUNK` bytes whatever the input: a small crafted layer
    that inflates a thousandfold costs one chunk of memory at a time, not its whole expansion.
    The CRC and length in each member's trailer are checked by zlib, so a flipped byte anywhere
    is caught here rather than when someone pulls the image; truncation and corruption raise
    :class:`ArchiveError` naming ``what``. Zero padding after the last member is ignored.
    """

    def __init__(self, what: str = "gzip data") -> None:
        self.what = what
        self._d = zlib.decompressobj(wbits=31)
        self._mid_member = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        d = self._d
        try:
            while data:
                self._mid_member = True
                out = d.decompress(data, CHUNK)
                if out:
                    yield out
                while d.unconsumed_tail:
                    out = d.decompress(d.unconsumed_tail, CHUNK)
                    if out:
                        yield out
                if not d.eof:
                    return
                rest = d.unused_data
                d = self._d = zlib.decompressobj(wbits=31)
                self._mid_member = False
                data = rest if rest.strip(b"\0") else b""  # another member follows
        except zlib.error as e:
            raise ArchiveError(f"{self.what} is corrupt ({e})") from None

    def finish(self) -> bytes:
        """What is left; raises if the stream stopped inside a member."""
        try:
            tail = self._d.flush()
        except zlib.error as e:
            raise ArchiveError(f"{self.what} is corrupt ({e})") from None
        if self._mid_member and not self._d.eof:
            raise ArchiveError(f"{self.what} is truncated (its gzip stream ends before its end)")
        return tail


def gunzip_chunks(chunks: Iterator[bytes], what: str = "gzip data") -> Iterator[bytes]:
    """Decompress a gzip stream (see :class:`Gunzip`), pieces of at most :data:`CHUNK` bytes."""
    gunzip = Gunzip(what)
    for chunk in chunks:
        yield from gunzip.feed(chunk)
    tail = gunzip.finish()
    if tail:
        yield tail
