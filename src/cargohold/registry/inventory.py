"""A snapshot of what the store holds: repositories, their links, and the blobs, with mtimes.

Garbage collection, ``cargohold du`` and retention all start from the same walk of the layout
(:mod:`cargohold.storage.paths`). Digests are taken from the link *paths*, as they are written
(``.../revisions/sha256/<hex>/link`` holds ``sha256:<hex>``); only the tags' ``current/link``
files are read, since their content is what they mean. ``_uploads`` is never descended into.

Filesystem stores are walked with ``os.scandir`` in a thread; any other driver is walked with
``list`` and ``stat``, or with the driver's own ``walk(path) -> list[FileInfo]`` when it has one
(one listing call per page instead of a stat per file, for object stores).
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field

from cargohold.digest import Digest
from cargohold.storage import paths
from cargohold.storage.driver import FileInfo, PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import TMP_PREFIX, FilesystemDriver

WalkFn = Callable[[str], Awaitable[list[FileInfo]]]
Found = tuple[str, int, float]  # path, size, mtime


@dataclass
class RepoInventory:
    name: str
    revisions: dict[Digest, float] = field(default_factory=dict)  # digest -> link mtime
    tags: dict[str, Digest | None] = field(default_factory=dict)  # tag -> current (None: bad)
    tag_mtimes: dict[str, float] = field(default_factory=dict)  # tag -> current/link mtime
    tag_index: dict[str, set[Digest]] = field(default_factory=dict)  # tag -> index entries
    layers: dict[Digest, float] = field(default_factory=dict)  # digest -> _layers link mtime
    referrers: dict[Digest, set[Digest]] = field(default_factory=dict)  # subject -> referrers
    pulls: dict[str, float] = field(default_factory=dict)  # tag -> last recorded pull
    has_manifests: bool = False

    def tagged(self) -> set[Digest]:
        return {d for d in self.tags.values() if d is not None}


@dataclass(frozen=True, slots=True)
class BlobEntry:
    size: int
    mtime: float


@dataclass
class Inventory:
    repos: dict[str, RepoInventory] = field(default_factory=dict)
    blobs: dict[Digest, BlobEntry] = field(default_factory=dict)

    def repo(self, name: str) -> RepoInventory:
        inv = self.repos.get(name)
        if inv is None:
            inv = self.repos[name] = RepoInventory(name)
        return inv


def local_driver(driver: StorageDriver) -> FilesystemDriver | None:
    """The filesystem driver under any cache or index layers (reads may bypass them)."""
    return driver.layer(FilesystemDriver)


async def walk_files(driver: StorageDriver, root: str, prune: frozenset[str]) -> list[FileInfo]:
    """Every file below ``root`` (absent root: none), skipping directories named in ``prune``."""
    fs = local_driver(driver)
    if fs is not None:
        local = fs.local_path(root)
        assert local is not None
        return await asyncio.to_thread(_walk_local, local, root, prune)
    try:
        found = await driver.walk(root)
    except PathNotFoundError:
        return []
    return [
        f for f in found if not f.is_dir and not prune.intersection(f.path[len(root) :].split("/"))
    ]


def _walk_local(local_root: str, root: str, prune: frozenset[str]) -> list[FileInfo]:
    return [
        FileInfo(path, size, mtime, False)
        for path, size, mtime in _iter_local(local_root, root, prune)
    ]


def _iter_local(local_root: str, root: str, prune: frozenset[str]) -> Iterator[Found]:
    """(path, size, mtime) of each file as the walk finds it: the scans below consume them one
    by one, so a walk of the whole store never holds a record of every file at once."""
    stack = [(local_root, root)]
    while stack:
        directory, logical = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.startswith(TMP_PREFIX):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            child = f"{logical}/{name}"
            if stat_mod.S_ISDIR(st.st_mode):
                if name not in prune:
                    stack.append((entry.path, child))
            elif stat_mod.S_ISREG(st.st_mode):
                yield child, st.st_size, st.st_mtime


async def walk_found(driver: StorageDriver, root: str, prune: frozenset[str]) -> Iterable[Found]:
    """What :func:`walk_files` finds, as (path, size, mtime); lazily on a filesystem store,
    where it must then be consumed in a thread (``asyncio.to_thread``)."""
    fs = local_driver(driver)
    if fs is not None:
        local = fs.local_path(root)
        assert local is not None
        return _iter_local(local, root, prune)
    return ((f.path, f.size, f.mtime) for f in await walk_files(driver, root, prune))


async def read_once(driver: StorageDriver, path: str) -> bytes:
    """The content of ``path`` for a walk over the whole store, which reads each file once: on
    a filesystem store read past the small-file cache, so the walk neither evicts what requests
    read nor leaves its own copies alive after it (they pinned the GC worker's memory)."""
    fs = local_driver(driver)
    if fs is not None:
        return fs.get_content_sync(path, keep=False)
    return await driver.get_content(path)


async def read_link(driver: StorageDriver, path: str) -> Digest | None:
    try:
        raw = await read_once(driver, path)
    except PathNotFoundError:
        return None
    return Digest.try_parse(raw.decode("ascii", "replace").strip())


async def scan_repositories(
    driver: StorageDriver, since: float | None = None
) -> dict[str, RepoInventory]:
    """Every repository's links. With ``since``, only links written at or after that time
    (the re-check of online GC), and tag links are read only for those."""
    found = await walk_found(driver, paths.REPOSITORIES, frozenset({"_uploads"}))
    fs = local_driver(driver)
    if fs is not None:
        repos, tag_links = await asyncio.to_thread(_index_links, found, since)
        await asyncio.to_thread(_read_tags_local, fs, tag_links)
    else:
        repos, tag_links = _index_links(found, since)
        for repo, tag, path in tag_links:
            repo.tags[tag] = await read_link(driver, path)
    return repos


def _index_links(
    found: Iterable[Found], since: float | None
) -> tuple[dict[str, RepoInventory], list[tuple[RepoInventory, str, str]]]:
    """The repositories' links from a walk of ``repositories/``, and the tag links to read."""
    repos: dict[str, RepoInventory] = {}
    tag_links: list[tuple[RepoInventory, str, str]] = []
    K = paths.Kind
    for path, _size, mtime in found:
        if since is not None and mtime < since:
            continue
        p = paths.parse_uncached(path)
        if not p.area:
            continue
        repo = repos.get(p.name)
        if repo is None:
            repo = repos[p.name] = RepoInventory(p.name)
        if p.area == "_manifests":
            repo.has_manifests = True
        if p.kind is K.REVISION_LINK and p.digest is not None:
            repo.revisions[p.digest] = mtime
        elif p.kind is K.TAG_CURRENT_LINK:
            tag_links.append((repo, p.tag, path))
            repo.tag_mtimes[p.tag] = mtime
        elif p.kind is K.TAG_INDEX_LINK and p.digest is not None:
            repo.tag_index.setdefault(p.tag, set()).add(p.digest)
        elif p.kind is K.LAYER_LINK and p.digest is not None:
            repo.layers[p.digest] = mtime
        elif p.kind is K.REFERRER_LINK and p.subject is not None and p.digest is not None:
            repo.referrers.setdefault(p.subject, set()).add(p.digest)
        elif p.kind is K.PULL_RECORD:
            repo.pulls[p.tag] = mtime
    return repos, tag_links


def _read_tags_local(
    driver: FilesystemDriver, tag_links: list[tuple[RepoInventory, str, str]]
) -> None:
    for repo, tag, path in tag_links:
        try:
            raw = driver.get_content_sync(path, keep=False)
        except PathNotFoundError:
            repo.tags[tag] = None
            continue
        repo.tags[tag] = Digest.try_parse(raw.decode("ascii", "replace").strip())


async def scan_blobs(driver: StorageDriver) -> dict[Digest, BlobEntry]:
    """``blobs/<alg>/<xx>/<hex>/data`` → size and mtime of the data file."""
    found = await walk_found(driver, paths.BLOBS, frozenset())
    if local_driver(driver) is not None:
        return await asyncio.to_thread(_index_blobs, found)
    return _index_blobs(found)


def _index_blobs(found: Iterable[Found]) -> dict[Digest, BlobEntry]:
    blobs: dict[Digest, BlobEntry] = {}
    for path, size, mtime in found:
        p = paths.parse_uncached(path)
        if p.kind is paths.Kind.BLOB_DATA and p.digest is not None:
            blobs[p.digest] = BlobEntry(size, mtime)
    return blobs


async def scan(driver: StorageDriver) -> Inventory:
    repos = await scan_repositories(driver)
    blobs = await scan_blobs(driver)
    return Inventory(repos=repos, blobs=blobs)
