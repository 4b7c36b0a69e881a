"""Writing ``docker load`` archives and OCI image layouts (directory or tar).

Output appears only once it is complete: tars are written to a temporary file beside the target
and renamed over it at the end, a new layout directory likewise, and a blob added to an existing
layout goes to a temporary name first. An export that fails half-way leaves nothing that looks
like an image.

The tars are written by a small streaming writer rather than :mod:`tarfile`, because blob bodies
arrive as async streams from a registry and their sizes are known up front from descriptors:
each member's header, its bytes as they come, padding, and two zero blocks at the end.
Timestamps are fixed so that the same image exports to the same bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import uuid
from typing import Any, BinaryIO

from cargohold import mediatypes as mt
from cargohold.atomicfile import AtomicFile, write_atomic
from cargohold.images.files import BLOCK, ArchiveError

MTIME = 0
OCI_LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


class TarWriter:
    """A streaming tar writer: header, data in pieces, padding, end-of-archive."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._left: int | None = None
        self._size = 0

    def _header(self, name: str, size: int, kind: bytes, mode: int) -> None:
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = mode
        info.mtime = MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self.f.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add_dir(self, name: str) -> None:
        self._header(name.rstrip("/") + "/", 0, tarfile.DIRTYPE, 0o755)

    def add_bytes(self, name: str, data: bytes) -> None:
        self.begin(name, len(data))
        self.write(data)
        self.end()

    def begin(self, name: str, size: int) -> None:
        assert self._left is None, "previous member not ended"
        self._header(name, size, tarfile.REGTYPE, 0o644)
        self._left = size
        self._size = size

    def write(self, data: bytes) -> None:
        assert self._left is not None
        if len(data) > self._left:
            raise ArchiveError("more bytes than the descriptor's size arrived")
        self.f.write(data)
        self._left -= len(data)

    def end(self) -> None:
        if self._left:
            raise ArchiveError(f"{self._left} bytes fewer than the descriptor's size arrived")
        pad = -self._size % BLOCK
        if pad:
            self.f.write(b"\0" * pad)
        self._left = None

    def close(self) -> None:
        self.f.write(b"\0" * (2 * BLOCK))


def _atomic_file(path: str) -> AtomicFile:
    """The archive being written, under a temporary name until it is complete."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ArchiveError(f"cannot write {path}: {directory} is not a directory")
    return AtomicFile(os.path.abspath(path))


# --------------------------------------------------------------------------- docker load


class DockerArchiveWriter:
    """A ``docker save``-format tar: ``manifest.json``, ``<config>.json``, ``<diff_id>.tar``.

    Layers are stored uncompressed and named by their diff_id, configs by their digest (the image
    ID), the way docker and skopeo write them; ``docker load`` and ``skopeo docker-archive:`` read
    it. Identical layers shared by several images are written once.
    """

    def __init__(self, path: str) -> None:
        self._file = _atomic_file(path)
        self.tar = TarWriter(self._file.file)
        self._entries: list[dict[str, Any]] = []
        self._written: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self._written

    def add_bytes(self, name: str, data: bytes) -> None:
        if name not in self._written:
            self.tar.add_bytes(name, data)
            self._written.add(name)

    def begin(self, name: str, size: int) -> None:
        self.tar.begin(name, size)

    def write(self, data: bytes) -> None:
        self.tar.write(data)

    def end(self, name: str) -> None:
        self.tar.end()
        self._written.add(name)

    def add_image(self, config: str, repo_tags: list[str], layers: list[str]) -> None:
        self._entries.append({"Config": config, "RepoTags": repo_tags, "Layers": layers})

    def commit(self) -> None:
        self.tar.add_bytes("manifest.json", json.dumps(self._entries).encode())
        self.tar.close()
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()


# --------------------------------------------------------------------------- OCI layout


def blob_name(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"blobs/{alg}/{hexpart}"


class OciLayoutWriter:
    """An OCI image layout, as a tar (``-o X.tar``) or a directory (anything else).

    A directory that already holds a layout is added to, as ``skopeo copy ... oci:DIR:tag``
    does: new blobs are added, an ``index.json`` entry with the same ref name is replaced.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.is_tar = path.endswith(".tar")
        self.entries: list[dict[str, Any]] = []
        self._written: set[str] = set()
        self._tar_file: AtomicFile | None = None
        self._tar: TarWriter | None = None
        self._dir: str | None = None
        self._new_dir: str | None = None
        self._existing_index: list[dict[str, Any]] = []
        self._current: AtomicFile | None = None
        if self.is_tar:
            self._tar_file = _atomic_file(path)
            self._tar = TarWriter(self._tar_file.file)
            self._tar.add_bytes("oci-layout", OCI_LAYOUT_FILE)
            self._tar.add_dir("blobs")
            self._tar.add_dir("blobs/sha256")
            return
        if os.path.exists(path):
            if not os.path.isdir(path):
                raise ArchiveError(f"{path} exists and is not a directory")
            if os.listdir(path):
                if not os.path.isfile(os.path.join(path, "index.json")):
                    raise ArchiveError(f"{path} is a non-empty directory and not an OCI layout")
                try:
                    with open(os.path.join(path, "index.json"), "rb") as f:
                        self._existing_index = list(json.load(f).get("manifests") or [])
                except (ValueError, AttributeError) as e:
                    raise ArchiveError(f"{path}/index.json is not valid: {e}") from None
            self._dir = path
        else:
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ArchiveError(f"cannot write {path}: {parent} is not a directory")
            self._new_dir = os.path.join(
                parent, f".{os.path.basename(os.path.abspath(path))}.tmp-{uuid.uuid4().hex[:8]}"
            )
            os.mkdir(self._new_dir)
            self._dir = self._new_dir
        os.makedirs(os.path.join(self._dir, "blobs", "sha256"), exist_ok=True)

    def has(self, digest: str) -> bool:
        if digest in self._written:
            return True
        if self._dir is not None and self._new_dir is None:
            return os.path.isfile(os.path.join(self._dir, blob_name(digest)))
        return False

    def begin(self, digest: str, size: int) -> None:
        name = blob_name(digest)
        if self._tar is not None:
            self._tar.begin(name, size)
            return
        assert self._dir is not None
        final = os.path.join(self._dir, name)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        self._current = AtomicFile(final, fsync=False)

    def write(self, data: bytes) -> None:
        if self._tar is not None:
            self._tar.write(data)
        else:
            assert self._current is not None
            self._current.file.write(data)

    def end(self, digest: str) -> None:
        if self._tar is not None:
            self._tar.end()
        else:
            assert self._current is not None
            current, self._current = self._current, None
            current.commit()
        self._written.add(digest)

    def drop_partial(self) -> None:
        if self._current is not None:
            current, self._current = self._current, None
            current.abort()

    def add_bytes(self, digest: str, data: bytes) -> None:
        if self.has(digest):
            return
        self.begin(digest, len(data))
        self.write(data)
        self.end(digest)

    def add_ref(self, descriptor: dict[str, Any]) -> None:
        self.entries.append(descriptor)

    def _index(self) -> bytes:
        names = {
            (d.get("annotations") or {}).get(mt.REF_NAME)
            for d in self.entries
            if (d.get("annotations") or {}).get(mt.REF_NAME)
        }
        kept = [
            d
            for d in self._existing_index
            if not (isinstance(d, dict) and (d.get("annotations") or {}).get(mt.REF_NAME) in names)
        ]
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": kept + self.entries}
        return json.dumps(index, indent=2).encode()

    def commit(self) -> None:
        index = self._index()
        if self._tar is not None and self._tar_file is not None:
            self._tar.add_bytes("index.json", index)
            self._tar.close()
            self._tar_file.commit()
            return
        assert self._dir is not None
        with open(os.path.join(self._dir, "oci-layout"), "wb") as f:
            f.write(OCI_LAYOUT_FILE)
        write_atomic(os.path.join(self._dir, "index.json"), index, fsync=False)
        if self._new_dir is not None:
            os.rename(self._new_dir, self.path)

    def abort(self) -> None:
        self.drop_partial()
        if self._tar_file is not None:
            self._tar_file.abort()
        if self._new_dir is not None:
            shutil.rmtree(self._new_dir, ignore_errors=True)
