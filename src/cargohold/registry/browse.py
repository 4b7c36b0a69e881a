"""What a person browsing the registry wants to know, read from the store in one go per page.

The web UI (:mod:`cargohold.ui`) asks this module, never ``/v2/``, so a page costs one batch of
store reads instead of a browser crawling the API:

- :meth:`Browser.tag_rows`: every tag of a repository with its digest, push time (the mtime of
  the tag's ``current/link``, retention's definition), last recorded pull (``_pulls/<tag>``),
  size and platforms. On a filesystem store the links of many repositories are read in one
  thread hop with ``os.scandir``; elsewhere through the driver, a few requests at a time.
- :meth:`Browser.manifest_summary`: what pulling a manifest fetches (the manifest, its config
  and layers, an index's children), by digest. Manifests are immutable, so summaries are kept
  by digest (bounded) and never invalidated; they are parsed from the blob directly, so browsing
  10,000 repositories does not evict the hot manifests of the pull path from its cache.
- :meth:`Snapshot.first_names`: the first names in catalog order, read from the repository
  index (or the directory walk) only as far as a page sorted by name needs: the first page of
  100,000 repositories on S3 is one listing, and a worker reads nothing at start.
- :class:`Snapshot`: the repository names and a per-repository summary (tag count, size,
  last push) of *all* repositories, which a search, sorting by name descending, or sorting by
  size or push time across 10,000 repositories needs; each is read on the first request that
  needs it (names: one listing per 1,000 repositories; summaries: every repository's tags), not
  before. It is per worker, served stale-while-revalidate: older than
  :data:`SNAPSHOT_TTL` seconds, the next request gets the old one and starts a rebuild in the
  background, so no page ever waits for more than its own rows, and a push made through another
  worker or replica moves a repository in the sort order within ``SNAPSHOT_TTL`` plus one
  rebuild. Pushes and deletes made through the same worker are applied to it at once
  (:attr:`ManifestStore.listeners`). The rows a page shows are always read fresh; only the
  order may lag.

A repository's size here is the bytes a pull of all its tags fetches, each blob counted once
(``cargohold du`` also counts untagged revisions and splits shared blobs; the storage page shows
that).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.catalog import order_key
from cargohold.registry.core import Registry
from cargohold.registry.inventory import local_driver
from cargohold.registry.manifests import Manifest, link_digest, parse_manifest
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import TMP_PREFIX, FilesystemDriver

log = logging.getLogger("cargohold.ui")

SNAPSHOT_TTL = 15.0
FIRST_NAMES_MAX = 5_000  # deeper than this, a page by name reads every name (and learns the total)
SUMMARY_CACHE = 200_000  # manifest summaries kept (a few hundred bytes each)
_CONCURRENCY = 16  # store requests in flight for one page, on drivers that are not local


def platform_name(platform: dict[str, Any] | None) -> str:
    if not platform:
        return "unknown"
    parts = [str(platform.get("os") or "?"), str(platform.get("architecture") or "?")]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(parts)


@dataclass(frozen=True, slots=True)
class ManifestSummary:
    media_type: str
    artifact_type: str | None
    blobs: dict[str, int]  # digest -> size of everything a pull fetches, manifest included
    platforms: tuple[str, ...] = ()  # of an index's children

    @property
    def size(self) -> int:
        return sum(self.blobs.values())


@dataclass(slots=True)
class TagRow:
    name: str
    digest: str | None  # None: the link is unreadable or names a manifest that is gone
    pushed: float
    pulled: float | None = None
    size: int = 0
    media_type: str = ""
    platforms: tuple[str, ...] = ()
    blobs: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RepoSummary:
    name: str
    tags: int
    size: int
    pushed: float  # 0: no tag

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "tags": self.tags, "size": self.size, "pushed": self.pushed}


def summarize(name: str, rows: Iterable[TagRow]) -> RepoSummary:
    blobs: dict[str, int] = {}
    count, pushed = 0, 0.0
    for row in rows:
        count += 1
        pushed = max(pushed, row.pushed)
        blobs.update(row.blobs)
    return RepoSummary(name, count, sum(blobs.values()), pushed)


# A tag as read from the store: name, current/link mtime, link content (None: unreadable).
RawTag = tuple[str, float, bytes | None]


def _scan_local(tags_dir: str, pulls_dir: str) -> tuple[list[RawTag], dict[str, float]]:
    tags: list[RawTag] = []
    try:
        entries = list(os.scandir(tags_dir))
    except (FileNotFoundError, NotADirectoryError):
        entries = []
    for entry in entries:
        if entry.name.startswith((".", TMP_PREFIX)):
            continue
        link = os.path.join(entry.path, "current", "link")
        try:
            with open(link, "rb") as f:
                mtime = os.fstat(f.fileno()).st_mtime
                tags.append((entry.name, mtime, f.read(200)))
        except (FileNotFoundError, NotADirectoryError):
            continue  # being deleted, or a half-made tag directory: not a tag
    pulls: dict[str, float] = {}
    try:
        for entry in os.scandir(pulls_dir):
            try:
                pulls[entry.name] = entry.stat().st_mtime
            except FileNotFoundError:
                continue
    except (FileNotFoundError, NotADirectoryError):
        pass
    return tags, pulls


def _scan_local_many(
    fs: FilesystemDriver, names: list[str]
) -> dict[str, tuple[list[RawTag], dict[str, float]]]:
    out = {}
    for name in names:
        tags_dir, pulls_dir = fs.local_path(paths.tags(name)), fs.local_path(paths.pulls(name))
        assert tags_dir is not None and pulls_dir is not None
        out[name] = _scan_local(tags_dir, pulls_dir)
    return out


async def _scan_driver(
    driver: StorageDriver, name: str, limit: asyncio.Semaphore
) -> tuple[list[RawTag], dict[str, float]]:
    async with limit:
        try:
            entries = await driver.list(paths.tags(name))
        except PathNotFoundError:
            entries = []

    async def one(entry: str) -> RawTag | None:
        tag = entry.rsplit("/", 1)[-1]
        link = paths.tag_current_link(name, tag)
        async with limit:
            try:
                info = await driver.stat(link)
                return tag, info.mtime, await driver.get_content(link)
            except PathNotFoundError:
                return None

    found = await asyncio.gather(*(one(e) for e in entries))
    pulls: dict[str, float] = {}
    async with limit:
        try:
            for entry in await driver.list(paths.pulls(name)):
                pulls[entry.rsplit("/", 1)[-1]] = (await driver.stat(entry)).mtime
        except PathNotFoundError:
            pass
    return [t for t in found if t is not None], pulls


class Browser:
    """Reads for the UI; one per worker (it holds the summary cache and the snapshot)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.driver = registry.driver
        self._summaries: OrderedDict[Digest, ManifestSummary] = OrderedDict()
        # link file content -> (digest, summary): what every tag row needs, found in one step
        self._by_link: dict[bytes, tuple[str, ManifestSummary]] = {}
        self.snapshot = Snapshot(self)
        registry.manifests.listeners.append(self.snapshot.changed)

    # -- manifests -----------------------------------------------------------------------------

    async def load(self, digest: Digest) -> Manifest:
        """A manifest by digest, parsed from its blob (not through the pull path's cache)."""
        try:
            data = await self.registry.blobs.get(digest)
        except PathNotFoundError:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, detail={"digest": str(digest)}
            ) from None
        return parse_manifest(data, None, digest)

    async def manifest_summary(self, digest: Digest, depth: int = 0) -> ManifestSummary | None:
        cached = self._summaries.get(digest)
        if cached is not None:
            self._summaries.move_to_end(digest)
            return cached
        try:
            m = await self.load(digest)
        except RegistryError:
            return None
        blobs = {str(m.digest): len(m.data)}
        for d in m.blobs:
            blobs[str(d.digest)] = d.size
        platforms: list[str] = []
        for child in m.children:
            platforms.append(platform_name(child.platform))
            sub = await self.manifest_summary(child.digest, depth + 1) if depth < 2 else None
            if sub is not None:
                blobs.update(sub.blobs)
            else:
                blobs[str(child.digest)] = child.size
        artifact = m.artifact_type or (m.blobs[0].media_type if m.blobs else None)
        summary = ManifestSummary(m.media_type, artifact, blobs, tuple(platforms))
        self._summaries[digest] = summary
        if len(self._summaries) > SUMMARY_CACHE:
            self._summaries.popitem(last=False)
        return summary

    # -- tags ----------------------------------------------------------------------------------

    async def _raw_tags(self, names: list[str]) -> dict[str, tuple[list[RawTag], dict[str, float]]]:
        fs = local_driver(self.driver)
        if fs is not None:
            return await asyncio.to_thread(_scan_local_many, fs, names)
        limit = asyncio.Semaphore(_CONCURRENCY)
        scanned = await asyncio.gather(*(_scan_driver(self.driver, n, limit) for n in names))
        return dict(zip(names, scanned, strict=True))

    async def _rows(self, raw: list[RawTag], pulls: dict[str, float]) -> list[TagRow]:
        rows = []
        by_link = self._by_link
        for tag, mtime, content in raw:
            # Most links were seen before: one bytes-keyed lookup, no parsing, no coroutine.
            known = by_link.get(content) if content is not None else None
            if known is not None:
                digest_s, summary = known
                rows.append(
                    TagRow(
                        tag,
                        digest_s,
                        mtime,
                        pulls.get(tag),
                        summary.size,
                        summary.media_type,
                        summary.platforms,
                        summary.blobs,
                    )
                )
                continue
            digest = link_digest(content) if content is not None else None
            row = TagRow(tag, str(digest) if digest else None, mtime, pulls.get(tag))
            if digest is not None:
                found = await self.manifest_summary(digest)
                if found is None:
                    row.digest = None
                else:
                    row.size, row.media_type = found.size, found.media_type
                    row.platforms, row.blobs = found.platforms, found.blobs
                    if content is not None and len(by_link) < SUMMARY_CACHE:
                        by_link[content] = (str(digest), found)
            rows.append(row)
        return rows

    async def tag_rows(self, name: str) -> list[TagRow]:
        """Every tag of ``name``, in name order."""
        raw, pulls = (await self._raw_tags([name]))[name]
        rows = await self._rows(raw, pulls)
        rows.sort(key=lambda r: r.name)
        return rows

    async def summaries(self, names: list[str]) -> dict[str, RepoSummary]:
        """Fresh summaries of ``names`` (the rows of one page), one batch of reads."""
        out: dict[str, RepoSummary] = {}
        for name, (raw, pulls) in (await self._raw_tags(names)).items():
            out[name] = summarize(name, await self._rows(raw, pulls))
        self.snapshot.update(out.values())
        return out

    async def repository_exists(self, name: str) -> bool:
        return await self.driver.exists(paths.manifests(name))


class Snapshot:
    """Names and summaries of every repository, stale-while-revalidate (module docstring)."""

    def __init__(self, browser: Browser, ttl: float = SNAPSHOT_TTL) -> None:
        self.browser = browser
        self.ttl = ttl
        self.names: list[str] | None = None
        self.names_at = 0.0
        self.summaries: dict[str, RepoSummary] = {}
        self.summaries_at = 0.0  # 0: never built
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def update(self, summaries: Iterable[RepoSummary]) -> None:
        if self.summaries_at:
            for s in summaries:
                self.summaries[s.name] = s

    def changed(self, name: str) -> None:
        """A push or delete through this process (ManifestStore's listener): the repository is
        listed at once, and its summary is read again by the next page that needs it."""
        self.summaries.pop(name, None)
        names = self.names
        if names is not None:
            at = bisect.bisect_left(names, order_key(name), key=order_key)
            if at == len(names) or names[at] != name:
                names.insert(at, name)

    async def _build_names(self) -> None:
        self.names = await self.browser.registry.repositories()
        self.names_at = time.monotonic()

    async def _build_all(self) -> None:
        async with self._lock:
            await self._build_names()
            assert self.names is not None
            built: dict[str, RepoSummary] = {}
            for start in range(0, len(self.names), 200):  # let other requests in between
                chunk = self.names[start : start + 200]
                for name, (raw, pulls) in (await self.browser._raw_tags(chunk)).items():
                    built[name] = summarize(name, await self.browser._rows(raw, pulls))
                await asyncio.sleep(0)
            self.summaries, self.summaries_at = built, time.monotonic()

    def _refresh_later(self, everything: bool) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._quietly(everything))

    async def _quietly(self, everything: bool) -> None:
        """A background rebuild: a store error is logged, and the next page tries again."""
        try:
            await (self._build_all() if everything else self._build_names())
        except Exception as exc:
            log.warning("web UI: could not refresh the repository summaries: %s", exc)

    async def first_names(
        self, count: int, visible: Callable[[list[str]], list[str]] | None = None
    ) -> tuple[list[str], int | None]:
        """The first ``count`` repositories (of those ``visible`` keeps) in catalog order, and
        how many there are in all when that is known (None: more than ``count``).

        Names still fresh in the snapshot answer at once, with the total. Otherwise they are read
        from the store only as far as ``count`` + 1 (one listing of the repository index, or a
        walk that stops), so neither a worker's start nor the first page reads every name."""
        names = self.names
        if names is not None and time.monotonic() - self.names_at <= self.ttl:
            everything = visible(names) if visible is not None else names
            return everything[:count], len(everything)
        if count <= FIRST_NAMES_MAX:
            page = await self.browser.registry.repositories_page(None, count + 1, visible)
            if page is not None:
                return (page[:count], None) if len(page) > count else (page, len(page))
        everything = await self.repository_names()
        if visible is not None:
            everything = visible(everything)
        return everything[:count], len(everything)

    async def repository_names(self) -> list[str]:
        """Every name (for a search, or an order other than by name ascending): read on the
        first request that needs them, then stale-while-revalidate."""
        if self.names is None:
            await self._build_names()
        elif time.monotonic() - self.names_at > self.ttl:
            self._refresh_later(everything=bool(self.summaries_at))
        assert self.names is not None
        return self.names

    async def all_summaries(self, names: list[str]) -> dict[str, RepoSummary]:
        """A summary for each of ``names`` (those missing from the snapshot read now)."""
        if not self.summaries_at:
            if self._task is not None and not self._task.done():
                await asyncio.shield(self._task)
            if not self.summaries_at:
                await self._build_all()
        elif time.monotonic() - self.summaries_at > self.ttl:
            self._refresh_later(everything=True)
        missing = [n for n in names if n not in self.summaries]
        if missing:
            await self.browser.summaries(missing)
        return {n: self.summaries[n] for n in names if n in self.summaries}
