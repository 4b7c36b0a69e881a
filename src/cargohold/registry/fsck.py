"""``cargohold fsck``: check a registry:2 store whole, and mend what can be mended.

**What is checked** (filesystem and S3 alike, through the driver):

- every ``_layers`` and revision link points at a blob that exists, and holds the digest its
  path names (an empty or garbled link is a half-written one);
- every tag has a ``current/link`` naming a revision *of its own repository*;
- every manifest's config and layers are blobs linked in its repository (layers with
  ``urls``, foreign layers, may be absent), its index children are revisions of the
  repository (as far as ``validation.manifests.indexes`` requires them), and a manifest with a
  ``subject`` has its referrers link;
- with ``verify_blobs``, every blob's bytes hash to its digest (threads for local files,
  concurrent streams for S3);
- no debris of interrupted writes in the layout proper (``.cargohold-tmp-*`` files and
  trees, which older versions left beside their targets).

**Clean** means none of the above was found. Some things are *not* problems, because every
reader ignores them and interrupted operations leave them by design (``docs/ordering.md``):
blobs and ``_layers`` links that no manifest uses (garbage collection's business), tag index
entries of deleted revisions (registry:2 keeps them too), referrers links whose manifest is
not (or no longer) a revision, uploads in progress, and leftovers under ``_cargohold/tmp`` and
``_cargohold/trash`` (counted and, with repair, removed).

**Repair** never loses anything valid: links to nothing and tags naming no revision of their
repository are removed; half-written links whose target exists are rewritten, links a manifest
needs and whose blob exists are written; debris is removed; a corrupt blob is moved to
``_cargohold/quarantine/`` (registry:2 ignores it) and reported with every manifest that needs
it. Links to a quarantined blob are kept, so that pushing the blob again heals the images.
What cannot be mended (a manifest whose layer is nowhere) is reported and left.

**While servers run**: checking only reads. Repairing takes garbage collection's lease
(``_cargohold/gc/lease``), so it refuses to start while a collection runs and a collection
refuses to start while it repairs; every removal is re-checked on the store right before it is
made, and the paths removed are journalled where running workers drop them from their caches
(as a collection's are).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cargohold.digest import ALGORITHMS, Digest
from cargohold.registry.gc import invalidate_cached
from cargohold.registry.inventory import local_driver
from cargohold.storage import paths
from cargohold.storage.driver import FileInfo, PathNotFoundError, StorageDriver
from cargohold.storage.filesystem import TMP_PREFIX
from cargohold.storage.paths import Kind

LEASE_TTL = 900.0  # as garbage collection's
DEBRIS_AGE = 60.0  # a temporary file younger than this may belong to a write in flight
LEFTOVER_AGE = 600.0  # scratch files of writes in flight are younger than this
REMOTE_CONCURRENCY = 8


class FsckBusy(Exception):
    """Another maintenance run (garbage collection, another repair) holds the lease."""


@dataclass
class Problem:
    kind: str
    path: str
    message: str
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    repair: str | None = None  # what --repair does (or did) about it; None: it cannot
    repaired: bool = False
    needed_by: list[str] = field(default_factory=list)  # "repo@digest" of manifests needing it

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "path": self.path,
            "message": self.message,
            "repair": self.repair,
            "repaired": self.repaired,
            "neededBy": self.needed_by,
        }

    def line(self) -> str:
        where = " ".join(
            f"{k}={v}"
            for k, v in (
                ("repository", self.repository),
                ("tag", self.tag),
                ("digest", self.digest),
            )
            if v
        )
        fix = ""
        if self.repair:
            fix = f" [{'repaired: ' if self.repaired else 'repair would: '}{self.repair}]"
        elif self.repair is None:
            fix = " [cannot be repaired]"
        needed = f"; needed by {', '.join(self.needed_by)}" if self.needed_by else ""
        return f"{self.kind}: {self.message}{needed} ({where}; path {self.path}){fix}"


@dataclass
class FsckReport:
    storage: str
    repair: bool
    verify_blobs: bool
    started: float = 0.0
    finished: float = 0.0
    repositories: int = 0
    manifests: int = 0
    tags: int = 0
    blobs: int = 0
    blobs_verified: int = 0
    problems: list[Problem] = field(default_factory=list)
    leftovers: int = 0  # entries under _cargohold/tmp and _cargohold/trash
    leftovers_removed: int = 0
    quarantined: list[str] = field(default_factory=list)  # digests in quarantine

    @property
    def clean(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "storage": self.storage,
            "repair": self.repair,
            "verifyBlobs": self.verify_blobs,
            "started": self.started,
            "finished": self.finished,
            "repositories": self.repositories,
            "manifests": self.manifests,
            "tags": self.tags,
            "blobs": self.blobs,
            "blobsVerified": self.blobs_verified,
            "problems": [p.to_json() for p in self.problems],
            "leftovers": self.leftovers,
            "leftoversRemoved": self.leftovers_removed,
            "quarantine": self.quarantined,
        }


def format_report(report: FsckReport) -> str:
    lines = [p.line() for p in report.problems]
    verified = f", {report.blobs_verified} verified" if report.verify_blobs else ""
    lines.append(
        f"{report.repositories} repositories, {report.manifests} manifests, {report.tags} tags, "
        f"{report.blobs} blobs{verified}"
    )
    if report.leftovers:
        removed = f", {report.leftovers_removed} removed" if report.repair else ""
        lines.append(
            f"{report.leftovers} leftovers of interrupted writes in _cargohold/tmp and "
            f"_cargohold/trash (ignored by every reader{removed})"
        )
    if report.quarantined:
        lines.append(
            f"{len(report.quarantined)} blobs in quarantine: {', '.join(report.quarantined)}"
        )
    if report.clean:
        lines.append("clean")
    else:
        fixed = sum(p.repaired for p in report.problems)
        tail = f", {fixed} repaired" if report.repair else ""
        lines.append(f"{len(report.problems)} problems{tail}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the walk


@dataclass
class _Repo:
    name: str
    layers: dict[Digest, str] = field(default_factory=dict)  # digest -> link path
    revisions: dict[Digest, str] = field(default_factory=dict)
    tags: dict[str, str | None] = field(default_factory=dict)  # tag -> current link path
    referrers: set[tuple[Digest, Digest]] = field(default_factory=set)  # (subject, referrer)


@dataclass
class _Store:
    repos: dict[str, _Repo] = field(default_factory=dict)
    blobs: dict[Digest, FileInfo] = field(default_factory=dict)
    debris: list[FileInfo] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)  # files the layout has no place for
    leftovers: dict[str, FileInfo] = field(default_factory=dict)
    quarantine: set[Digest] = field(default_factory=set)


def _digest(alg: str, hexpart: str) -> Digest | None:
    if ALGORITHMS.get(alg) != len(hexpart):
        return None
    return Digest.try_parse(f"{alg}:{hexpart}")


def _walk_local(local_root: str, logical: str) -> list[FileInfo]:
    """Every file below, dot-files included; a ``.cargohold-tmp-*`` directory is one entry."""
    out: list[FileInfo] = []
    stack = [(local_root, logical)]
    while stack:
        directory, where = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            child = f"{where}/{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and not entry.name.startswith(TMP_PREFIX):
                stack.append((entry.path, child))
                if entry.name != "_uploads" and where.endswith("/_manifests/tags"):
                    out.append(FileInfo(child, 0, st.st_mtime, True))  # tags are directories
            else:
                out.append(FileInfo(child, st.st_size, st.st_mtime, is_dir))
    return out


async def _walk(driver: StorageDriver, root: str) -> list[FileInfo]:
    fs = local_driver(driver)
    if fs is not None:
        local = fs.local_path(root)
        assert local is not None
        return await asyncio.to_thread(_walk_local, local, root)
    try:
        return await driver.walk(root)
    except PathNotFoundError:
        return []


async def _scan(driver: StorageDriver) -> _Store:
    store = _Store()
    files = await _walk(driver, paths.ROOT)
    root_cut = len(paths.ROOT) + 1
    for info in files:
        parts = info.path[root_cut:].split("/")
        if any(p.startswith(TMP_PREFIX) for p in parts):
            if parts[0] == "_cargohold":
                store.leftovers.setdefault(info.path, info)
            else:
                store.debris.append(info)
            continue
        if parts[0] == "_cargohold":
            if len(parts) >= 3 and parts[1] in ("tmp", "trash"):
                entry = f"{paths.ROOT}/_cargohold/{parts[1]}/{parts[2]}"  # a tree counts once
                if entry not in store.leftovers:
                    store.leftovers[entry] = FileInfo(entry, 0, info.mtime, len(parts) > 3)
            elif len(parts) == 5 and parts[1] == "quarantine" and parts[4] == "data":
                d = _digest(parts[2], parts[3])
                if d is not None:
                    store.quarantine.add(d)
            continue
        _classify(store, parts[0], info)
    return store


def _classify(store: _Store, top: str, info: FileInfo) -> None:
    """One file of ``blobs/`` or ``repositories/``, by the layout's parser."""
    parsed = paths.parse_uncached(info.path)
    kind, d = parsed.kind, parsed.digest
    if kind is Kind.BLOB_DATA and d is not None:
        store.blobs[d] = info
        return
    if parsed.area in ("_uploads", "_pulls"):
        return  # uploads in progress are purging's; pull records are retention's
    if not parsed.name:
        if top in ("blobs", "repositories"):
            store.strays.append(info.path)
        return
    repo = store.repos.get(parsed.name)
    if repo is None:
        repo = store.repos[parsed.name] = _Repo(parsed.name)
    if kind is Kind.LAYER_LINK and d is not None:
        repo.layers[d] = info.path
    elif kind is Kind.REVISION_LINK and d is not None:
        repo.revisions[d] = info.path
    elif kind is Kind.TAG_CURRENT_LINK:
        repo.tags[parsed.tag] = info.path
    elif kind in (Kind.TAG_DIR, Kind.TAG_INDEX_LINK):
        repo.tags.setdefault(parsed.tag, None)  # index entries are history: nothing to check
    elif kind is Kind.REFERRER_LINK and d is not None and parsed.subject is not None:
        repo.referrers.add((parsed.subject, d))
    else:
        store.strays.append(info.path)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True, slots=True)
class _Refs:
    blobs: tuple[tuple[Digest, bool], ...] = ()  # (digest, foreign: has urls)
    children: tuple[tuple[Digest, dict[str, Any] | None], ...] = ()  # (digest, platform)
    subject: Digest | None = None


def _descriptors(items: Any) -> list[dict[str, Any]]:
    return [x for x in items if isinstance(x, dict)] if isinstance(items, list) else []


def _references(data: bytes) -> _Refs:
    """Raises ValueError for content that is not a manifest."""
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    subject = None
    if isinstance(doc.get("subject"), dict):
        subject = Digest.try_parse(str(doc["subject"].get("digest", "")))
    if doc.get("schemaVersion") == 1:
        blobs = [
            (d, False)
            for x in _descriptors(doc.get("fsLayers"))
            if (d := Digest.try_parse(str(x.get("blobSum", ""))))
        ]
        return _Refs(blobs=tuple(dict.fromkeys(blobs)))
    if "manifests" in doc:
        children = [
            (d, x.get("platform") if isinstance(x.get("platform"), dict) else None)
            for x in _descriptors(doc.get("manifests"))
            if (d := Digest.try_parse(str(x.get("digest", ""))))
        ]
        return _Refs(children=tuple(children), subject=subject)
    if "config" not in doc and "layers" not in doc and "blobs" not in doc:
        raise ValueError("neither an image manifest nor an index")
    items = _descriptors([doc.get("config")]) + _descriptors(doc.get("layers"))
    items += _descriptors(doc.get("blobs"))
    blobs = [
        (d, bool(x.get("urls"))) for x in items if (d := Digest.try_parse(str(x.get("digest", ""))))
    ]
    return _Refs(blobs=tuple(dict.fromkeys(blobs)), subject=subject)


# --------------------------------------------------------------------------- blob hashing


def _hash_local(path: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            hasher.update(view[:n])
    return hasher.hexdigest()


async def _hash_remote(driver: StorageDriver, path: str, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    async for chunk in driver.reader(path):
        await asyncio.to_thread(hasher.update, chunk)
    return hasher.hexdigest()


Progress = Callable[[int, int], None]  # (bytes done, bytes total)


# --------------------------------------------------------------------------- the checker


class Fsck:
    def __init__(
        self,
        driver: StorageDriver,
        *,
        index_children: str = "all",
        platform_list: list[dict[str, Any]] | None = None,
        progress: Callable[[int], Progress] | None = None,
        threads: int | None = None,
    ) -> None:
        self.driver = driver
        self.index_children = index_children
        self.platform_list = platform_list or []
        self.progress = progress  # called with the total byte count, returns the per-blob hook
        self.threads = threads or max(os.cpu_count() or 1, 1)
        self._removed: list[str] = []
        self._quarantined_now: set[Digest] = set()
        self._targets: dict[str, dict[str, Digest | None]] = {}
        self._manifests: dict[Digest, _Refs | None] = {}

    # -- the run -----------------------------------------------------------------------------

    async def run(self, *, repair: bool = False, verify_blobs: bool = False) -> FsckReport:
        report = FsckReport(self.driver.identity, repair, verify_blobs)
        report.started = time.time()
        owner = f"fsck-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        keeper: asyncio.Task[None] | None = None
        if repair:
            await self._acquire_lease(owner)
            keeper = asyncio.create_task(self._keep_lease(owner))
        try:
            store = await _scan(self.driver)
            report.blobs = len(store.blobs)
            report.repositories = sum(1 for r in store.repos.values() if r.revisions or r.tags)
            if verify_blobs:
                await self._verify_blobs(store, report, repair)
            await self._check_debris(store, report, repair)
            for name in sorted(store.repos):
                await self._check_repo(store, store.repos[name], report, repair)
            await self._leftovers(store, report, repair)
            report.quarantined = sorted(str(d) for d in store.quarantine)
            if repair and self._removed:
                await self._journal(owner)
        finally:
            if keeper is not None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
            if repair:
                await self._release_lease(owner)
            report.finished = time.time()
        return report

    # -- blobs -------------------------------------------------------------------------------

    async def _verify_blobs(self, store: _Store, report: FsckReport, repair: bool) -> None:
        digests = sorted(store.blobs, key=str)
        total = sum(store.blobs[d].size for d in digests)
        advance = self.progress(total) if self.progress is not None else None
        fs = local_driver(self.driver)
        bad: list[Digest] = []
        pool: ThreadPoolExecutor | None = None
        if fs is not None:
            # Local files are hashed in threads (hashlib releases the GIL), remote ones as
            # streams; either way as many at once as the store can feed.
            pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fsck")
            limit = asyncio.Semaphore(self.threads)
        else:
            limit = asyncio.Semaphore(REMOTE_CONCURRENCY)
        loop = asyncio.get_running_loop()

        async def digest_of(d: Digest) -> str:
            if fs is None:
                return await _hash_remote(self.driver, paths.blob_data(d), d.algorithm)
            local = fs.local_path(paths.blob_data(d))
            assert local is not None
            return await loop.run_in_executor(pool, _hash_local, local, d.algorithm)

        async def verify(d: Digest) -> None:
            async with limit:
                try:
                    actual = await digest_of(d)
                except (FileNotFoundError, PathNotFoundError):
                    return  # deleted meanwhile (a collection): nothing to verify
            if actual != d.hex:
                bad.append(d)
            report.blobs_verified += 1
            if advance is not None:
                advance(store.blobs[d].size, total)

        try:
            await asyncio.gather(*(verify(d) for d in digests))
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        for d in sorted(bad, key=str):
            problem = Problem(
                "blob-corrupt",
                paths.blob_data(d),
                "the blob's bytes do not match its digest",
                digest=str(d),
                repair=f"moved to {paths.quarantine_data(d)}",
                needed_by=self._needing(store, d),
            )
            if not await self._unchanged(store.blobs[d]):
                continue  # rewritten since it was hashed (a push of the same blob): look again
            report.problems.append(problem)
            if repair:
                await self.driver.move(paths.blob_data(d), paths.quarantine_data(d))
                self._removed.append(paths.blob_data(d))
                problem.repaired = True
            if repair:
                del store.blobs[d]
                store.quarantine.add(d)
                self._quarantined_now.add(d)

    async def _unchanged(self, seen: FileInfo) -> bool:
        try:
            now = await self.driver.stat(seen.path)
        except PathNotFoundError:
            return False
        # (object stores list and HEAD the modification time with different precisions)
        return now.size == seen.size and abs(now.mtime - seen.mtime) < 1.0

    def _needing(self, store: _Store, d: Digest) -> list[str]:
        """Manifests (``repo@digest``) that are, or reference, blob ``d`` (from what the walk
        saw; manifests are read lazily, so this reads those not read yet)."""
        out: list[str] = []
        for name in sorted(store.repos):
            repo = store.repos[name]
            for m in sorted(repo.revisions, key=str):
                if m == d:
                    out.append(f"{name}@{m}")
                    continue
                refs = self._manifests.get(m)
                if refs is None and m not in self._manifests:
                    refs = self._read_manifest_sync(store, m)
                if refs is not None and (
                    any(b == d for b, _ in refs.blobs) or any(c == d for c, _ in refs.children)
                ):
                    out.append(f"{name}@{m}")
        return out

    def _read_manifest_sync(self, store: _Store, m: Digest) -> _Refs | None:
        fs = local_driver(self.driver)
        if fs is None or m not in store.blobs:
            return None
        local = fs.local_path(paths.blob_data(m))
        assert local is not None
        try:
            with open(local, "rb") as f:
                refs: _Refs | None = _references(f.read(4 * 1024 * 1024 + 1))
        except (OSError, ValueError):
            refs = None
        self._manifests[m] = refs
        return refs

    async def _manifest(self, store: _Store, m: Digest) -> _Refs | None:
        if m in self._manifests:
            return self._manifests[m]
        refs: _Refs | None
        try:
            refs = _references(await self.driver.get_content(paths.blob_data(m)))
        except (PathNotFoundError, ValueError):
            refs = None
        self._manifests[m] = refs
        return refs

    # -- debris and leftovers ----------------------------------------------------------------

    async def _check_debris(self, store: _Store, report: FsckReport, repair: bool) -> None:
        now = time.time()
        for info in store.debris:
            young = now - info.mtime < DEBRIS_AGE
            problem = Problem(
                "debris",
                info.path,
                "a temporary file or tree of an interrupted write or delete",
                repository=_repo_of(info.path),
                repair="removed" if not young else None,
            )
            if young:
                problem.message += f" (younger than {DEBRIS_AGE:.0f}s: it may be in flight)"
            report.problems.append(problem)
            if repair and not young and await self._remove_debris(info):
                problem.repaired = True
        for path in store.strays:
            report.problems.append(
                Problem(
                    "unexpected-file",
                    path,
                    "a file the registry:2 layout has no place for",
                    repository=_repo_of(path),
                )
            )

    async def _remove_debris(self, info: FileInfo) -> bool:
        """Debris has a dot-name, which driver paths refuse: removed by its local path."""
        fs = local_driver(self.driver)
        if fs is None:
            return False
        local = fs.root + info.path
        if info.is_dir:
            await asyncio.to_thread(shutil.rmtree, local, True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(local)
        return True

    async def _leftovers(self, store: _Store, report: FsckReport, repair: bool) -> None:
        report.leftovers = len(store.leftovers)
        if not repair:
            return
        now = time.time()
        for info in store.leftovers.values():
            in_trash = info.path.startswith(paths.TRASH + "/")
            if not in_trash and now - info.mtime < LEFTOVER_AGE:
                continue  # a write in flight, perhaps
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(info.path)
            report.leftovers_removed += 1

    # -- repositories ------------------------------------------------------------------------

    async def _check_repo(
        self, store: _Store, repo: _Repo, report: FsckReport, repair: bool
    ) -> None:
        name = repo.name
        report.manifests += len(repo.revisions)
        report.tags += len(repo.tags)
        targets = self._targets[name] = {}
        for tag, path in repo.tags.items():
            if path is not None:
                with contextlib.suppress(PathNotFoundError):
                    raw = await self.driver.get_content(path)
                    targets[tag] = Digest.try_parse(raw.decode("ascii", "replace").strip())
        # _layers links
        for d, path in sorted(repo.layers.items(), key=lambda kv: str(kv[0])):
            await self._check_link(store, report, repair, name, d, path, "layer")
        # revisions: link, content, references
        for d, path in sorted(repo.revisions.items(), key=lambda kv: str(kv[0])):
            ok = await self._check_link(store, report, repair, name, d, path, "revision")
            if ok:
                await self._check_manifest(store, repo, d, report, repair)
        # tags
        for tag, path in sorted(repo.tags.items()):
            await self._check_tag(store, repo, tag, path, report, repair)

    async def _check_link(
        self,
        store: _Store,
        report: FsckReport,
        repair: bool,
        name: str,
        d: Digest,
        path: str,
        what: str,
    ) -> bool:
        """A ``_layers`` or revision link: target present, content right. True if usable."""
        if d not in store.blobs:
            quarantined = d in store.quarantine
            if d in self._quarantined_now:
                return False  # reported as blob-corrupt by this run, with what needs it
            problem = Problem(
                f"{what}-dangling",
                path,
                f"the {what} link names a blob that is "
                + ("in quarantine (corrupt); push it again" if quarantined else "missing"),
                repository=name,
                digest=str(d),
                repair=None if quarantined else "link removed",
            )
            if what == "revision":
                problem.needed_by = [f"{name}:{t}" for t in self._tags_of(store, name, d)]
            elif quarantined:
                problem.needed_by = [n for n in self._needing(store, d) if n.startswith(name + "@")]
            if not await self._confirm_missing(d, path):
                return True
            report.problems.append(problem)
            if repair and not quarantined:
                await self._remove(path.rsplit("/", 1)[0])
                problem.repaired = True
                repo = store.repos[name]
                (repo.layers if what == "layer" else repo.revisions).pop(d, None)
            return False
        try:
            raw = await self.driver.get_content(path)
        except PathNotFoundError:
            return False  # removed meanwhile
        if raw.decode("ascii", "replace").strip() != str(d):
            problem = Problem(
                "link-invalid",
                path,
                f"the {what} link holds {raw[:80]!r} instead of its digest (half-written)",
                repository=name,
                digest=str(d),
                repair="link rewritten",
            )
            report.problems.append(problem)
            if repair:
                await self.driver.put_content(path, str(d).encode())
                problem.repaired = True
        return True

    async def _confirm_missing(self, d: Digest, link: str) -> bool:
        """Right before calling a link dangling: the link is still there, the blob still not."""
        return await self.driver.exists(link) and not await self.driver.exists(paths.blob_data(d))

    def _tags_of(self, store: _Store, name: str, d: Digest) -> list[str]:
        return sorted(t for t, target in self._targets.get(name, {}).items() if target == d)

    async def _check_manifest(
        self, store: _Store, repo: _Repo, m: Digest, report: FsckReport, repair: bool
    ) -> None:
        name = repo.name
        refs = await self._manifest(store, m)
        path = paths.revision_link(name, m)
        if refs is None:
            report.problems.append(
                Problem(
                    "manifest-unreadable",
                    paths.blob_data(m),
                    "the revision's blob is not a manifest",
                    repository=name,
                    digest=str(m),
                )
            )
            return
        for b, foreign in refs.blobs:
            if b in repo.layers and b in store.blobs:
                continue
            if foreign and b not in store.blobs:
                continue
            link = paths.layer_link(name, b)
            if await self._now_present(store, repo.layers, b, link):
                continue  # written after the walk passed by (a push in flight)
            if b in store.blobs:
                message = f"manifest {m} references blob {b}, which the repository does not link"
                problem = Problem("reference-unlinked", link, message, repair="link written")
                await self._relink(report, repair, problem, name, m, b, repo.layers)
            elif b in repo.layers and b in store.quarantine:
                continue  # reported once, as layer-dangling (quarantined)
            else:
                report.problems.append(
                    Problem(
                        "reference-missing",
                        paths.blob_data(b),
                        f"manifest {m} references blob {b}, which is "
                        + ("in quarantine (corrupt)" if b in store.quarantine else "missing")
                        + "; push the image again",
                        repository=name,
                        digest=str(b),
                        needed_by=[f"{name}@{m}"],
                    )
                )
        for c, platform in refs.children:
            if c in repo.revisions or not self._child_required(platform):
                continue
            link = paths.revision_link(name, c)
            if await self._now_present(store, repo.revisions, c, link):
                continue
            if c in store.blobs and await self._manifest(store, c) is not None:
                message = f"index {m} names manifest {c}, which is not a revision of the repository"
                problem = Problem("child-unlinked", link, message, repair="revision link written")
                await self._relink(report, repair, problem, name, m, c, repo.revisions)
            else:
                report.problems.append(
                    Problem(
                        "child-missing",
                        link,
                        f"index {m} names manifest {c}, which is missing; push the image again",
                        repository=name,
                        digest=str(c),
                        needed_by=[f"{name}@{m}"],
                    )
                )
        if refs.subject is not None and (refs.subject, m) not in repo.referrers:
            link = paths.referrer_link(name, refs.subject, m)
            problem = Problem(
                "referrer-unlinked",
                link,
                f"manifest {m} has subject {refs.subject} but no referrers link",
                repository=name,
                digest=str(m),
                repair="link written",
            )
            if not await self.driver.exists(link) and await self.driver.exists(path):
                report.problems.append(problem)
                if repair:
                    await self.driver.put_content(link, str(m).encode())
                    problem.repaired = True

    async def _now_present(
        self, store: _Store, links: dict[Digest, str], d: Digest, link: str
    ) -> bool:
        """Whether the store has the link and its blob *now*: the walk is no snapshot, and a
        push may have written them after it passed their directories."""
        if not await self.driver.exists(link) or not await self.driver.exists(paths.blob_data(d)):
            return False
        links[d] = link
        if d not in store.blobs:
            with contextlib.suppress(PathNotFoundError):
                store.blobs[d] = await self.driver.stat(paths.blob_data(d))
        return True

    async def _relink(
        self,
        report: FsckReport,
        repair: bool,
        problem: Problem,
        name: str,
        manifest: Digest,
        d: Digest,
        links: dict[Digest, str],
    ) -> None:
        """A link ``manifest`` needs, whose content exists: report it, and write it back."""
        problem.repository, problem.digest = name, str(d)
        problem.needed_by = [f"{name}@{manifest}"]
        report.problems.append(problem)
        if repair:
            await self.driver.put_content(problem.path, str(d).encode())
            links[d] = problem.path
            problem.repaired = True

    def _child_required(self, platform: dict[str, Any] | None) -> bool:
        if self.index_children == "none":
            return False
        if self.index_children == "list":
            p = platform or {}
            return any(
                p.get("architecture") == w.get("architecture") and p.get("os") == w.get("os")
                for w in self.platform_list
            )
        return True

    async def _check_tag(
        self,
        store: _Store,
        repo: _Repo,
        tag: str,
        path: str | None,
        report: FsckReport,
        repair: bool,
    ) -> None:
        name = repo.name
        tag_dir = paths.tag_dir(name, tag)
        current = paths.tag_current_link(name, tag)
        problem = await self._tag_problem(store, repo, tag, current if path else None)
        if problem is None:
            return
        # Re-read: a push or delete may have moved the tag since the walk.
        problem = await self._tag_problem(store, repo, tag, current, reread=True)
        if problem is None:
            return
        report.problems.append(problem)
        if repair:
            await self._remove(tag_dir)
            problem.repaired = True

    async def _tag_problem(
        self, store: _Store, repo: _Repo, tag: str, current: str | None, reread: bool = False
    ) -> Problem | None:
        name = repo.name
        tag_dir = paths.tag_dir(name, tag)
        incomplete = Problem(
            "tag-incomplete",
            tag_dir,
            "the tag has no current/link",
            repository=name,
            tag=tag,
            repair="tag removed",
        )
        if current is None:
            return incomplete
        try:
            raw = await self.driver.get_content(current)
        except PathNotFoundError:
            if reread and not await self.driver.exists(tag_dir):
                return None  # deleted meanwhile
            return incomplete
        d = Digest.try_parse(raw.decode("ascii", "replace").strip())
        if d is None:
            return Problem(
                "tag-dangling",
                current,
                f"the tag's current/link holds {raw[:80]!r}, not a digest",
                repository=name,
                tag=tag,
                repair="tag removed",
            )
        if d in repo.revisions and (
            not reread or await self.driver.exists(paths.revision_link(name, d))
        ):
            return None
        if reread and await self.driver.exists(paths.revision_link(name, d)):
            return None
        others = sorted(n for n, r in store.repos.items() if n != name and d in r.revisions)
        if others:
            return Problem(
                "tag-foreign",
                current,
                f"the tag names {d}, a revision of {', '.join(others[:3])} but not of {name}",
                repository=name,
                tag=tag,
                digest=str(d),
                repair="tag removed",
            )
        return Problem(
            "tag-dangling",
            current,
            f"the tag names {d}, which is not a revision of the repository",
            repository=name,
            tag=tag,
            digest=str(d),
            repair="tag removed",
        )

    # -- store writes --------------------------------------------------------------------------

    async def _remove(self, path: str) -> None:
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(path)
        self._removed.append(path)
        self._removed.append(f"{path}/link")
        self._removed.append(f"{path}/current/link")

    async def _journal(self, owner: str) -> None:
        """Running workers drop these paths from their caches (see gc.InvalidationWatcher)."""
        await invalidate_cached(self.driver, self._removed)
        doc = {"id": owner, "digests": [], "paths": self._removed}
        await self.driver.put_content(paths.gc_deleted(owner), json.dumps(doc).encode())

    async def _acquire_lease(self, owner: str) -> None:
        try:
            doc = json.loads(await self.driver.get_content(paths.GC_LEASE))
            if float(doc.get("expires", 0)) > time.time():
                raise FsckBusy(
                    f"{doc.get('owner')} holds the maintenance lease ({paths.GC_LEASE}) "
                    "until it finishes; try again later"
                )
        except (PathNotFoundError, ValueError):
            pass
        doc = {"owner": owner, "expires": time.time() + LEASE_TTL}
        await self.driver.put_content(paths.GC_LEASE, json.dumps(doc).encode())

    async def _keep_lease(self, owner: str) -> None:
        """A long repair keeps its lease; one that dies lets it expire within LEASE_TTL."""
        while True:
            await asyncio.sleep(LEASE_TTL / 5)
            doc = {"owner": owner, "expires": time.time() + LEASE_TTL}
            await self.driver.put_content(paths.GC_LEASE, json.dumps(doc).encode())

    async def _release_lease(self, owner: str) -> None:
        with contextlib.suppress(PathNotFoundError, ValueError):
            doc = json.loads(await self.driver.get_content(paths.GC_LEASE))
            if doc.get("owner") == owner:
                await self.driver.delete(paths.GC_LEASE)


def _repo_of(path: str) -> str | None:
    prefix = paths.REPOSITORIES + "/"
    if not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    i = next((i for i, part in enumerate(parts) if part.startswith("_")), 0)
    return "/".join(parts[:i]) or None
