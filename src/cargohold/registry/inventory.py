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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cargohold.digest import ALGORITHMS, Digest
from cargohold.storage import paths
from cargohold.storage.driver import FileInfo, PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import TMP_PREFIX, FilesystemDriver

WalkFn = Callable[[str], Awaitable[list[FileInfo]]]


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


def _digest(alg: str, hexpart: str) -> Digest | None:
    length = ALGORITHMS.get(alg)
    if length is None or len(hexpart) != length:
        return None
    return Digest.try_parse(f"{alg}:{hexpart}")


def local_driver(driver: StorageDriver) -> FilesystemDriver | None:
    """The filesystem driver under any cache or index layers (reads may bypass them)."""
    node: Any = driver
    while node is not None and not isinstance(node, FilesystemDriver):
        node = getattr(node, "inner", None)
    return node if isinstance(node, FilesystemDriver) else None


async def walk_files(driver: StorageDriver, root: str, prune: frozenset[str]) -> list[FileInfo]:
    """Every file below ``root`` (absent root: none), skipping directories named in ``prune``."""
    fs = local_driver(driver)
    if fs is not None:
        local = fs.local_path(root)
        assert local is not None
        return await asyncio.to_thread(_walk_local, local, root, prune)
    walk: Any = getattr(driver, "walk", None)
    if walk is not None:
        try:
            found: list[FileInfo] = await walk(root)
        except PathNotFoundError:
            return []
        return [
            f
            for f in found
            if not f.is_dir and not prune.intersection(f.path[len(root) :].split("/"))
        ]
    out: list[FileInfo] = []
    await _walk_generic(driver, root, prune, out)
    return out


def _walk_local(local_root: str, root: str, prune: frozenset[str]) -> list[FileInfo]:
    out: list[FileInfo] = []
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
                out.append(FileInfo(child, st.st_size, st.st_mtime, False))
    return out


async def _walk_generic(
    driver: StorageDriver, path: str, prune: frozenset[str], out: list[FileInfo]
) -> None:
    try:
        children = await driver.list(path)
    except PathNotFoundError:
        return
    for child in children:
        name = child.rsplit("/", 1)[-1]
        if name.startswith(".") or name in prune:
            continue
        try:
            info = await driver.stat(child)
        except PathNotFoundError:
            continue
        if info.is_dir:
            await _walk_generic(driver, child, prune, out)
        else:
            out.append(info)


async def read_link(driver: StorageDriver, path: str) -> Digest | None:
    try:
        raw = await driver.get_content(path)
    except PathNotFoundError:
        return None
    return Digest.try_parse(raw.decode("ascii", "replace").strip())


async def scan_repositories(
    driver: StorageDriver, since: float | None = None
) -> dict[str, RepoInventory]:
    """Every repository's links. With ``since``, only links written at or after that time
    (the re-check of online GC), and tag links are read only for those."""
    files = await walk_files(driver, paths.REPOSITORIES, frozenset({"_uploads"}))
    repos: dict[str, RepoInventory] = {}
    tag_links: list[tuple[RepoInventory, str, str]] = []
    base = len(paths.REPOSITORIES) + 1
    for info in files:
        if since is not None and info.mtime < since:
            continue
        parts = info.path[base:].split("/")
        i = next((i for i, part in enumerate(parts) if part.startswith("_")), 0)
        if i == 0:
            continue
        name = "/".join(parts[:i])
        kind, rest = parts[i], parts[i + 1 :]
        repo = repos.get(name)
        if repo is None:
            repo = repos[name] = RepoInventory(name)
        if kind == "_manifests":
            repo.has_manifests = True
            if len(rest) == 4 and rest[0] == "revisions" and rest[3] == "link":
                d = _digest(rest[1], rest[2])
                if d is not None:
                    repo.revisions[d] = info.mtime
            elif len(rest) == 4 and rest[0] == "tags" and rest[2:] == ["current", "link"]:
                tag_links.append((repo, rest[1], info.path))
                repo.tag_mtimes[rest[1]] = info.mtime
            elif len(rest) == 6 and rest[0] == "tags" and rest[2] == "index" and rest[5] == "link":
                d = _digest(rest[3], rest[4])
                if d is not None:
                    repo.tag_index.setdefault(rest[1], set()).add(d)
        elif kind == "_layers" and len(rest) == 3 and rest[2] == "link":
            d = _digest(rest[0], rest[1])
            if d is not None:
                repo.layers[d] = info.mtime
        elif kind == "_referrers" and len(rest) == 5 and rest[4] == "link":
            subject, d = _digest(rest[0], rest[1]), _digest(rest[2], rest[3])
            if subject is not None and d is not None:
                repo.referrers.setdefault(subject, set()).add(d)
        elif kind == "_pulls" and len(rest) == 1:
            repo.pulls[rest[0]] = info.mtime
    fs = local_driver(driver)
    if fs is not None:
        await asyncio.to_thread(_read_tags_local, fs, tag_links)
    else:
        for repo, tag, path in tag_links:
            repo.tags[tag] = await read_link(driver, path)
    return repos


def _read_tags_local(
    driver: FilesystemDriver, tag_links: list[tuple[RepoInventory, str, str]]
) -> None:
    for repo, tag, path in tag_links:
        try:
            raw = driver.get_content_sync(path)
        except PathNotFoundError:
            repo.tags[tag] = None
            continue
        repo.tags[tag] = Digest.try_parse(raw.decode("ascii", "replace").strip())


async def scan_blobs(driver: StorageDriver) -> dict[Digest, BlobEntry]:
    """``blobs/<alg>/<xx>/<hex>/data`` → size and mtime of the data file."""
    files = await walk_files(driver, paths.BLOBS, frozenset())
    blobs: dict[Digest, BlobEntry] = {}
    base = len(paths.BLOBS) + 1
    for info in files:
        parts = info.path[base:].split("/")
        if len(parts) != 4 or parts[3] != "data" or parts[2][:2] != parts[1]:
            continue
        d = _digest(parts[0], parts[2])
        if d is not None:
            blobs[d] = BlobEntry(info.size, info.mtime)
    return blobs


async def scan(driver: StorageDriver) -> Inventory:
    repos = await scan_repositories(driver)
    blobs = await scan_blobs(driver)
    return Inventory(repos=repos, blobs=blobs)
