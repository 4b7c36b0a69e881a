"""The repository catalog, found by walking ``repositories/`` the way registry:2 does.

A directory is a repository when it has a ``_manifests`` child; nothing below a ``_``-prefixed
directory is ever a repository. Names are ordered component by component (``a/b`` before ``a-c``),
as registry:2 orders them, and pagination's ``last`` compares the same way.
"""

from __future__ import annotations

import os
import sys

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
    """
    local = driver.local_path(paths.REPOSITORIES)
    assert local is not None
    after = order_key(last) if last else None
    found: list[str] = []

    def visit(directory: str, parts: list[str]) -> bool:
        """False once the page is full."""
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return True
        is_repo = bool(parts) and any(e.name == marker for e in entries)
        if is_repo and (after is None or parts > after):
            found.append("/".join(parts))
            if len(found) >= limit:
                return False
        for entry in entries:
            name = entry.name
            if name.startswith(("_", ".")) or not entry.is_dir(follow_symlinks=False):
                continue
            child = [*parts, name]
            if after is not None and child < after[: len(child)]:
                continue  # everything below sorts before ``last``
            if not visit(entry.path, child):
                return False
        return True

    visit(local, [])
    return found


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
