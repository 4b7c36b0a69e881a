"""The repository catalog, found by walking ``repositories/`` the way registry:2 does.

A directory is a repository when it has a ``_manifests`` child; nothing below a ``_``-prefixed
directory is ever a repository. Names are ordered component by component (``a/b`` before ``a-c``),
as registry:2 orders them, and pagination's ``last`` compares the same way.
"""

from __future__ import annotations

import bisect
import itertools
import os
import sys
from collections.abc import Iterator

from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import FilesystemDriver


async def list_repositories(driver: StorageDriver, marker: str = "_manifests") -> list[str]:
    """Repositories having a ``marker`` child (``_uploads`` finds those with uploads)."""
    if isinstance(driver, FilesystemDriver):
        # In a thread: a walk of a large store would stall every request of this worker.
        return await driver.run_blocking(page_local, driver, None, sys.maxsize, marker)
    found: list[str] = []
    await _walk(driver, paths.REPOSITORIES, "", found, marker)
    return sorted(found, key=order_key)


def order_key(name: str) -> list[str]:
    return name.split("/")


def page_local(
    driver: FilesystemDriver, last: str | None, limit: int, marker: str = "_manifests"
) -> list[str]:
    """Up to ``limit`` repositories after ``last``, walking only as far as the page needs.

    Like registry:2, a ``_catalog?n=100`` of a store with thousands of repositories reads a few
    hundred directories, not all of them: the walk is depth first with sorted children, which
    is exactly the component-wise order, and skips every subtree that sorts before ``last``.

    It keeps no more than it must while it runs: of each directory only its subdirectories'
    names (not a ``DirEntry`` per entry), with one level per path component on an explicit
    stack rather than a recursive closure. A page of a namespace of thousands of repositories
    otherwise holds a few hundred bytes per entry for the whole walk, and concurrent pages
    (each in a thread of its own) leave that peak behind in the worker's heap.
    """
    local = driver.local_path(paths.REPOSITORIES)
    assert local is not None
    after = order_key(last) if last else None
    found: list[str] = []
    top = iter(_listing(local, marker)[1])
    levels: list[tuple[str, list[str], Iterator[str]]] = [(local, [], top)]
    while levels:
        directory, parts, pending = levels[-1]
        name = next(pending, None)
        if name is None:
            levels.pop()
            continue
        path, child = os.path.join(directory, name), [*parts, name]
        is_repo, subdirs = _listing(path, marker)
        if is_repo and (after is None or child > after):
            found.append("/".join(child))
            if len(found) >= limit:
                break
        skip = 0
        if after is not None and len(after) > len(child) and child == after[: len(child)]:
            skip = bisect.bisect_left(subdirs, after[len(child)])  # they sort before ``last``
        levels.append((path, child, itertools.islice(subdirs, skip, None)))
    return found


def _listing(directory: str, marker: str) -> tuple[bool, list[str]]:
    """Whether ``directory`` has a ``marker`` entry, and its sorted subdirectories that can
    hold repositories (not ``_``- or ``.``-prefixed; symbolic links are not followed)."""
    has_marker = False
    subdirs: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name == marker:
                    has_marker = True
                elif not name.startswith(("_", ".")) and entry.is_dir(follow_symlinks=False):
                    subdirs.append(name)
    except (FileNotFoundError, NotADirectoryError):
        return False, []
    subdirs.sort()
    return has_marker, subdirs


async def _walk(
    driver: StorageDriver, path: str, prefix: str, found: list[str], marker: str
) -> None:
    try:
        children = await driver.list(path)
    except PathNotFoundError:
        return
    names = [c.rsplit("/", 1)[-1] for c in children]
    if prefix and marker in names:
        found.append(prefix[:-1])
    for child, n in zip(children, names, strict=True):
        if not n.startswith(("_", ".")):
            info = await driver.stat(child)
            if info.is_dir:
                await _walk(driver, child, f"{prefix}{n}/", found, marker)
