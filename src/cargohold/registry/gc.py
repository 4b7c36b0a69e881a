"""Garbage collection: registry:2's mark and sweep, also safe while the registry serves.

**Mark** (as ``registry garbage-collect``): for every repository, every manifest revision whose
blob exists is marked, with what it references: the config and layers of an image, the children
of an index (recursively: a child's layers are marked too, which registry:2 2.8 forgets with
``--delete-untagged``), and the ``fsLayers`` of old schema 1 manifests. With
``delete_untagged``, a manifest that no tag points at is not a root: it is kept only when a
kept index references it (or, cargohold's referrers, when it refers to a kept manifest), and is
otherwise deleted as registry:2 does it: its tag index entries and its revision link removed.

**Sweep**: every blob under ``blobs/`` that is not marked is deleted, with the ``_layers``
links that point to it in every repository.

**Online** (the registry keeps serving pushes and pulls), three more rules keep every push that
completes whole:

1. *Grace period.* Nothing younger than ``grace_period`` is collected: not a blob whose data
   was written (or re-pushed: uploads refresh it) recently, not a blob a repository linked
   recently (a push in progress), not an untagged manifest whose revision was written recently
   (the children of an index are pushed before the index). Uploads in progress live under
   ``_uploads``, which GC never touches (upload purging does).
2. *Condemn, settle, re-check.* Deletions go in batches. A batch is first *published*
   (``_cargohold/gc/condemned/<batch>``); GC then waits ``settle`` seconds, re-scans every link
   written since the mark started (new revisions, moved tags, new ``_layers`` links) and marks
   what they reference; only then does it delete.
3. *Claims.* A writer that is about to rely on an existing blob or manifest (manifest PUT,
   upload completion of a blob that already exists, cross-repository mount) first looks for
   published batches (:class:`Fence`). If what it needs is condemned, it writes a claim and waits
   until the batch is over: GC checks for a claim right before each deletion and keeps what is
   claimed (with everything a claimed manifest references). After the wait the writer checks
   again, so it either finds the blob, re-writes it from the upload it holds, or answers an error
   that says the blob is unknown: it never reports success for an image missing a blob.

A writer that looked before the batch was published finishes its few link writes well within
``settle`` and is found by the re-scan. Offline runs (the CLI) skip all of this, as registry:2
does: the registry must not be serving, or be read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cargohold.digest import Digest
from cargohold.faults import crash_point
from cargohold.registry import inventory
from cargohold.registry.catalog import order_key
from cargohold.registry.inventory import BlobEntry, RepoInventory
from cargohold.registry.manifests import MAX_MANIFEST_SIZE
from cargohold.storage import paths
from cargohold.storage.cache import CachingDriver
from cargohold.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("cargohold.gc")

BATCH_SIZE = 2000
BATCH_TIMEOUT = 600.0  # a published batch is void after this long (a GC that died mid-batch)
LEASE_TTL = 900.0
RESCAN_MARGIN = 5.0  # seconds of clock slack when asking "written since the mark started?"
JOURNAL_KEEP = 3600.0  # how long the list of deleted digests stays for other workers


class GCError(Exception):
    """GC refused to sweep (unreadable manifest, another collection running...)."""


class GCBusy(GCError):
    pass


@dataclass
class GCOptions:
    dry_run: bool = False
    delete_untagged: bool = False
    online: bool = False
    grace_period: float = 0.0  # seconds
    settle: float = 0.0  # seconds between publishing a batch and deleting it (online)
    batch_size: int = BATCH_SIZE
    # Retention's hooks: delete untagged manifests of these repositories only (when not
    # delete_untagged everywhere), treat these tags as already gone, or leave blobs alone.
    untagged_repos: frozenset[str] = frozenset()
    ignored_tags: dict[str, set[str]] = field(default_factory=dict)
    sweep_blobs: bool = True


@dataclass
class GCReport:
    id: str
    dry_run: bool
    delete_untagged: bool
    online: bool
    started: float = 0.0
    finished: float = 0.0
    repositories: int = 0
    manifests_marked: int = 0
    blobs_marked: int = 0
    blobs_total: int = 0
    manifests_deleted: list[tuple[str, str]] = field(default_factory=list)
    blobs_deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    layer_links_removed: int = 0
    kept_recent: int = 0  # unreferenced but inside the grace period
    kept_rescued: int = 0  # condemned, then found referenced or claimed before deletion
    retention: dict[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dryRun": self.dry_run,
            "deleteUntagged": self.delete_untagged,
            "online": self.online,
            "started": self.started,
            "finished": self.finished,
            "repositories": self.repositories,
            "manifestsMarked": self.manifests_marked,
            "blobsMarked": self.blobs_marked,
            "blobsTotal": self.blobs_total,
            "manifestsDeleted": [{"repository": r, "digest": d} for r, d in self.manifests_deleted],
            "blobsDeleted": self.blobs_deleted,
            "bytesFreed": self.bytes_freed,
            "layerLinksRemoved": self.layer_links_removed,
            "keptRecent": self.kept_recent,
            "keptRescued": self.kept_rescued,
            "retention": self.retention,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class References:
    """What a manifest keeps alive: blobs (config, layers) and child manifests (an index)."""

    blobs: tuple[Digest, ...] = ()
    children: tuple[Digest, ...] = ()
    subject: Digest | None = None


def _digests(items: Any, key: str) -> list[Digest]:
    out: list[Digest] = []
    if not isinstance(items, list):
        return out
    for item in items:
        if isinstance(item, dict) and isinstance(item.get(key), str):
            d = Digest.try_parse(item[key])
            if d is not None:
                out.append(d)
    return out


def references_of(data: bytes) -> References:
    """The references of any manifest registry:2 may have stored, schema 1 included.

    Raises ValueError for content that is not a manifest: GC must not guess.
    """
    doc = json.loads(data)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    subject = None
    if isinstance(doc.get("subject"), dict):
        subject = Digest.try_parse(str(doc["subject"].get("digest", "")))
    if doc.get("schemaVersion") == 1:
        return References(blobs=tuple(_digests(doc.get("fsLayers"), "blobSum")))
    if "manifests" in doc:
        return References(children=tuple(_digests(doc.get("manifests"), "digest")), subject=subject)
    blobs: list[Digest] = []
    if isinstance(doc.get("config"), dict):
        blobs += _digests([doc["config"]], "digest")
    blobs += _digests(doc.get("layers"), "digest")
    blobs += _digests(doc.get("blobs"), "digest")  # OCI 1.1-rc artifact manifests
    if not blobs and "config" not in doc and "layers" not in doc and "blobs" not in doc:
        raise ValueError("neither an image manifest nor an index")
    return References(blobs=tuple(blobs), subject=subject)


# --------------------------------------------------------------------------- the writers' side


async def invalidate_cached(driver: StorageDriver, stale: Iterable[str]) -> None:
    """Drop ``stale`` paths from the blob descriptor cache wrapped around the driver, if any."""
    cache = driver.layer(CachingDriver)
    if cache is not None:
        await cache.invalidate(stale)


@dataclass(frozen=True, slots=True)
class _Batch:
    id: str
    expires: float
    digests: frozenset[Digest]


class Fence:
    """What writers consult before relying on existing content (see the module docstring).

    Costs two directory listings per call (``_cargohold/gc/deleted``, to drop what other
    processes' collections deleted from this process's caches, and ``_cargohold/gc/condemned``)
    when no collection is deleting anything: two ``ENOENT`` on a local disk, two LIST on S3.
    """

    POLL = 0.1

    def __init__(
        self,
        driver: StorageDriver,
        watcher: InvalidationWatcher | None = None,
        max_wait: float = BATCH_TIMEOUT,
    ) -> None:
        self.driver = driver
        self.watcher = watcher
        self.max_wait = max_wait
        self._parsed: dict[str, tuple[float, int, _Batch]] = {}

    async def _batches(self) -> list[_Batch]:
        try:
            names = await self.driver.list(paths.GC_CONDEMNED)
        except PathNotFoundError:
            self._parsed.clear()
            return []
        now = time.time()
        batches: list[_Batch] = []
        for path in names:
            try:
                info = await self.driver.stat(path)
                cached = self._parsed.get(path)
                if cached is not None and cached[:2] == (info.mtime, info.size):
                    batch = cached[2]
                else:
                    doc = json.loads(await self.driver.get_content(path))
                    batch = _Batch(
                        str(doc["id"]),
                        float(doc["expires"]),
                        frozenset(
                            d for d in map(Digest.try_parse, doc["digests"]) if d is not None
                        ),
                    )
                    self._parsed[path] = (info.mtime, info.size, batch)
            except (PathNotFoundError, ValueError, KeyError, TypeError):
                continue  # finished meanwhile, or being written: the next look sees it
            if batch.expires > now:
                batches.append(batch)
        # Only batches still listed are kept: a finished collection's batch (its digests, up to
        # everything it deleted) is dropped at the next look, not when 64 had piled up.
        listed = set(names)
        for path in [p for p in self._parsed if p not in listed]:
            del self._parsed[path]
        return batches

    async def guard(self, digests: Iterable[Digest], name: str | None = None) -> set[Digest]:
        """Claim whatever of ``digests`` a running collection has condemned and wait until
        its batch is over. Returns the digests that were condemned: the caller must check
        again that they exist before relying on them (their cache entries are dropped).

        First, whatever other processes' collections deleted is dropped from this process's
        caches, so what the caller checks next is the store's answer, not a stale one."""
        if self.watcher is not None:
            await self.watcher.poll()
        batches = await self._batches()
        if not batches:
            return set()
        wanted = set(digests)
        hit: set[Digest] = set()
        for batch in batches:
            mine = wanted & batch.digests
            if not mine:
                continue
            stamp = str(time.time()).encode()
            for d in mine:
                await self.driver.put_content(paths.gc_claim(batch.id, d), stamp)
            log.info(
                "waiting for garbage collection batch %s (%d digests claimed)", batch.id, len(mine)
            )
            hit |= mine
            await self._wait_over(batch)
            if self.watcher is not None:
                await self.watcher.poll()
        if hit:
            stale = [paths.blob_data(d) for d in hit]
            if name is not None:
                stale += [paths.layer_link(name, d) for d in hit]
                stale += [paths.revision_link(name, d) for d in hit]
            await invalidate_cached(self.driver, stale)
        return hit

    async def _wait_over(self, batch: _Batch) -> None:
        deadline = min(batch.expires, time.time() + self.max_wait)
        while time.time() < deadline:
            try:
                await self.driver.stat(paths.gc_condemned(batch.id))
            except PathNotFoundError:
                return
            await asyncio.sleep(self.POLL)


class InvalidationWatcher:
    """Follows the digests other processes' collections deleted, to drop them from caches."""

    def __init__(
        self, driver: StorageDriver, forget: Callable[[set[Digest]], None] | None = None
    ) -> None:
        self.driver = driver
        self.forget = forget
        self._seen: set[str] | None = None
        self._lock = asyncio.Lock()

    async def poll(self) -> int:
        try:
            names = set(await self.driver.list(paths.GC_DELETED))
        except PathNotFoundError:
            names = set()
        if self._seen is None:  # the first look only learns what is already there
            self._seen = names
            return 0
        if names <= self._seen:
            return 0
        async with self._lock:
            count = 0
            for path in sorted(names - self._seen):
                try:
                    doc = json.loads(await self.driver.get_content(path))
                except (PathNotFoundError, ValueError):
                    continue
                digests = {d for d in map(Digest.try_parse, doc.get("digests", [])) if d}
                count += len(digests)
                await invalidate_cached(self.driver, [str(p) for p in doc.get("paths", [])])
                if self.forget is not None:
                    self.forget(digests)
                self._seen.add(path)
            self._seen &= names
        return count

    async def run(self, interval: float = 2.0) -> None:
        while True:
            try:
                await self.poll()
            except Exception:
                log.exception("cache invalidation poll failed")
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------- the collector


@dataclass
class Marks:
    marked: set[Digest] = field(default_factory=set)
    manifests: set[Digest] = field(default_factory=set)
    deletable: list[tuple[str, Digest]] = field(default_factory=list)


Emit = Callable[[str], None]


class GarbageCollector:
    def __init__(
        self,
        driver: StorageDriver,
        *,
        forget: Callable[[set[Digest]], None] | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.driver = driver
        self.forget = forget
        self.emit: Emit = emit or (lambda line: None)
        self._refs: dict[Digest, References | None] = {}
        self._removed: list[str] = []  # link and data files deleted, for other caches

    # -- references --------------------------------------------------------------------------

    async def _references(self, d: Digest, strict: bool = True) -> References | None:
        """None when the blob is gone (or, not ``strict``, is not a manifest at all); GCError
        when a manifest cannot be read: GC must not guess what it references."""
        if d in self._refs:
            return self._refs[d]
        try:
            size = (await self.driver.stat(paths.blob_data(d))).size
            if size > MAX_MANIFEST_SIZE:
                if strict:
                    raise GCError(f"manifest {d} is {size} bytes; nothing was deleted")
                return None
            data = await inventory.read_once(self.driver, paths.blob_data(d))
        except PathNotFoundError:
            self._refs[d] = None
            return None
        try:
            refs: References | None = references_of(data)
        except (ValueError, UnicodeDecodeError) as e:
            if not strict:
                return None
            raise GCError(f"cannot read manifest {d}: {e}; nothing was deleted") from None
        self._refs[d] = refs
        return refs

    async def mark_manifest(
        self, d: Digest, mark: Marks, repo: RepoInventory | None, strict: bool = True
    ) -> None:
        """Mark ``d`` and everything it keeps alive (index children recursively, referrers
        inside ``repo``). Not ``strict``: ``d`` may be any blob (a claim)."""
        stack = [(d, strict)]
        while stack:
            current, must_be_manifest = stack.pop()
            if current in mark.manifests:
                continue
            mark.marked.add(current)
            refs = await self._references(current, must_be_manifest)
            if refs is None:
                continue
            mark.manifests.add(current)
            mark.marked.update(refs.blobs)
            for child in refs.children:
                mark.marked.add(child)
                stack.append((child, True))
            if repo is not None:
                stack.extend((r, True) for r in repo.referrers.get(current, ()))

    async def _mark(
        self,
        repos: dict[str, RepoInventory],
        blobs: dict[Digest, BlobEntry],
        opts: GCOptions,
        now: float,
        report: GCReport,
    ) -> Marks:
        mark = Marks()
        cutoff = now - opts.grace_period
        candidates: list[tuple[str, Digest]] = []
        for name in sorted(repos, key=order_key):
            repo = repos[name]
            if not repo.has_manifests:
                continue
            report.repositories += 1
            self.emit(name)
            present = [d for d in sorted(repo.revisions, key=str) if d in blobs]
            ignored = opts.ignored_tags.get(name, set())
            tagged = {d for t, d in repo.tags.items() if d is not None and t not in ignored}
            delete_untagged = opts.delete_untagged or name in opts.untagged_repos
            for d in present:
                untagged = d not in tagged
                if delete_untagged and untagged and repo.revisions[d] < cutoff:
                    candidates.append((name, d))
                    continue
                self.emit(f"{name}: marking manifest {d} ")
                await self.mark_manifest(d, mark, repo)
        # An untagged manifest that a kept index (of any repository) names, or that refers to a
        # kept manifest of its own repository, stays.
        changed = True
        while changed:
            changed = False
            remaining: list[tuple[str, Digest]] = []
            for name, d in candidates:
                repo = repos[name]
                subject = (await self._references(d) or References()).subject
                if d in mark.marked or (subject is not None and subject in mark.manifests):
                    await self.mark_manifest(d, mark, repo)
                    changed = True
                else:
                    remaining.append((name, d))
            candidates = remaining
        for name, d in candidates:
            self.emit(f"manifest eligible for deletion: {name}@{d}")
        mark.deletable = candidates
        return mark

    # -- the run -----------------------------------------------------------------------------

    async def run(self, opts: GCOptions) -> GCReport:
        run_id = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]
        report = GCReport(run_id, opts.dry_run, opts.delete_untagged, opts.online)
        report.started = time.time()
        self._refs = {}
        lease = opts.online and not opts.dry_run
        if lease:
            await self._acquire_lease(run_id)
        try:
            await self._run(opts, report)
        finally:
            if lease:
                await self._release_lease(run_id)
            report.finished = time.time()
        return report

    async def _run(self, opts: GCOptions, report: GCReport) -> None:
        mark_start = time.time()
        repos = await inventory.scan_repositories(self.driver)
        blobs = await inventory.scan_blobs(self.driver)
        report.blobs_total = len(blobs)
        mark = await self._mark(repos, blobs, opts, mark_start, report)
        report.manifests_marked = len(mark.manifests)
        report.blobs_marked = len(mark.marked)

        cutoff = mark_start - opts.grace_period
        newest_link: dict[Digest, float] = {}
        for repo in repos.values():
            for d, mtime in repo.layers.items():
                if mtime > newest_link.get(d, 0.0):
                    newest_link[d] = mtime
        sweep: list[Digest] = []
        for d in sorted(blobs, key=str):
            if d in mark.marked or not opts.sweep_blobs:
                continue
            if opts.grace_period > 0 and (
                blobs[d].mtime >= cutoff or newest_link.get(d, 0.0) >= cutoff
            ):
                report.kept_recent += 1
                continue
            sweep.append(d)
        self.emit(
            f"\n{len(mark.marked)} blobs marked, {len(sweep)} blobs and "
            f"{len(mark.deletable)} manifests eligible for deletion"
        )
        for d in sweep:
            self.emit(f"blob eligible for deletion: {d}")
        if opts.dry_run:
            report.manifests_deleted = [(n, str(d)) for n, d in mark.deletable]
            report.blobs_deleted = [str(d) for d in sweep]
            report.bytes_freed = sum(blobs[d].size for d in sweep)
            return

        deleted: set[Digest] = set()
        if not opts.online:
            for name, d in mark.deletable:
                await self._remove_manifest(repos[name], d)
                report.manifests_deleted.append((name, str(d)))
            for d in sweep:
                report.layer_links_removed += await self._remove_blob(d, repos)
                report.blobs_deleted.append(str(d))
                report.bytes_freed += blobs[d].size
                deleted.add(d)
            deleted |= {d for _, d in mark.deletable}
        else:
            deleted = await self._sweep_online(opts, report, repos, blobs, mark, sweep, mark_start)
        if deleted and self.forget is not None:
            self.forget(deleted)

    # -- online sweeping ---------------------------------------------------------------------

    async def _sweep_online(
        self,
        opts: GCOptions,
        report: GCReport,
        repos: dict[str, RepoInventory],
        blobs: dict[Digest, BlobEntry],
        mark: Marks,
        sweep: list[Digest],
        mark_start: float,
    ) -> set[Digest]:
        deleted: set[Digest] = set()
        manifests = list(mark.deletable)
        size = max(opts.batch_size, 1)
        number = 0
        while manifests or sweep:
            number += 1
            batch_manifests, manifests = manifests[:size], manifests[size:]
            room = max(size - len(batch_manifests), 0)
            batch_blobs, sweep = sweep[:room], sweep[room:]
            if not batch_manifests and not batch_blobs:
                batch_blobs, sweep = sweep[:size], sweep[size:]
            batch_id = f"{report.id}-{number}"
            await self._refresh_lease(report.id)
            deleted |= await self._online_batch(
                batch_id, opts, report, repos, blobs, mark, batch_manifests, batch_blobs,
                mark_start,
            )  # fmt: skip
        return deleted

    async def _online_batch(
        self,
        batch_id: str,
        opts: GCOptions,
        report: GCReport,
        repos: dict[str, RepoInventory],
        blobs: dict[Digest, BlobEntry],
        mark: Marks,
        manifests: list[tuple[str, Digest]],
        sweep: list[Digest],
        mark_start: float,
    ) -> set[Digest]:
        condemned = {d for _, d in manifests} | set(sweep)
        doc = {
            "id": batch_id,
            "created": time.time(),
            "expires": time.time() + opts.settle + BATCH_TIMEOUT,
            "digests": sorted(map(str, condemned)),
        }
        await self.driver.put_content(paths.gc_condemned(batch_id), json.dumps(doc).encode())
        deleted: set[Digest] = set()
        try:
            if opts.settle > 0:
                await asyncio.sleep(opts.settle)
            # Re-check: everything linked since the mark started is alive.
            fresh = await inventory.scan_repositories(self.driver, since=mark_start - RESCAN_MARGIN)
            alive = Marks(marked=set(mark.marked), manifests=set(mark.manifests))
            protected: set[Digest] = set()
            for name, repo in fresh.items():
                full = repos.get(name) or repo
                for d in list(repo.revisions) + [t for t in repo.tags.values() if t]:
                    await self.mark_manifest(d, alive, full)
                protected |= set(repo.layers)
            for d in await self._claimed(batch_id):
                await self.mark_manifest(d, alive, None, strict=False)
            cutoff = time.time() - opts.grace_period
            kept_manifests: set[Digest] = set()
            for name, d in manifests:
                if d in alive.marked or await self._is_claimed(batch_id, d):
                    kept_manifests.add(d)
                    report.kept_rescued += 1
                    continue
                await self._remove_manifest(repos[name], d)
                report.manifests_deleted.append((name, str(d)))
                deleted.add(d)
            for d in kept_manifests | await self._claimed(batch_id):
                await self.mark_manifest(d, alive, None, strict=False)
            for d in sweep:
                if d in alive.marked or d in protected or await self._is_claimed(batch_id, d):
                    report.kept_rescued += 1
                    continue
                try:
                    info = await self.driver.stat(paths.blob_data(d))
                except PathNotFoundError:
                    continue
                if opts.grace_period > 0 and info.mtime >= cutoff:
                    report.kept_rescued += 1
                    continue
                report.layer_links_removed += await self._remove_blob(d, repos)
                report.blobs_deleted.append(str(d))
                report.bytes_freed += blobs[d].size
                deleted.add(d)
        finally:
            if deleted:  # before the batch ends: writers waiting on it read this first
                await self._journal(batch_id, deleted)
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.gc_condemned(batch_id))
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.gc_claims(batch_id))
        return deleted

    async def _claimed(self, batch_id: str) -> set[Digest]:
        found: set[Digest] = set()
        root = paths.gc_claims(batch_id)
        for info in await inventory.walk_files(self.driver, root, frozenset()):
            parsed = paths.parse_uncached(info.path)
            if parsed.kind is paths.Kind.GC_CLAIM and parsed.digest is not None:
                found.add(parsed.digest)
        return found

    async def _is_claimed(self, batch_id: str, d: Digest) -> bool:
        return await self.driver.exists(paths.gc_claim(batch_id, d))

    # -- deleting ----------------------------------------------------------------------------

    async def _remove_manifest(self, repo: RepoInventory, d: Digest) -> None:
        """registry:2's ``RemoveManifest``: tag index entries, then the revision; plus the
        referrers link cargohold keeps for it."""
        name = repo.name
        for tag, entries in repo.tag_index.items():
            if d in entries:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(paths.tag_index_dir(name, tag, d))
                    self._removed.append(paths.tag_index_link(name, tag, d))
        refs = self._refs.get(d)
        if refs is not None and refs.subject is not None:
            with contextlib.suppress(PathNotFoundError):
                await self.driver.delete(paths.referrer_dir(name, refs.subject, d))
        log.info("deleting manifest %s@%s", name, d)
        crash_point("gc.manifest.before-revision")
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.revision_dir(name, d))
        self._removed.append(paths.revision_link(name, d))

    async def _remove_blob(self, d: Digest, repos: dict[str, RepoInventory]) -> int:
        """The ``_layers`` links first, the data last (docs/ordering.md): a collection that
        dies in between leaves an unlinked blob, which the next one collects, never a link to
        nothing."""
        log.info("deleting blob %s", d)
        removed = 0
        for repo in repos.values():
            if d in repo.layers:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(f"{paths.layers(repo.name)}/{d.algorithm}/{d.hex}")
                    removed += 1
                self._removed.append(paths.layer_link(repo.name, d))
                crash_point("gc.blob.after-link")
        with contextlib.suppress(PathNotFoundError):
            await self.driver.delete(paths.blob_dir(d))
        self._removed.append(paths.blob_data(d))
        return removed

    # -- coordination --------------------------------------------------------------------------

    async def _acquire_lease(self, run_id: str) -> None:
        try:
            doc = json.loads(await self.driver.get_content(paths.GC_LEASE))
            if float(doc.get("expires", 0)) > time.time() and doc.get("owner") != run_id:
                raise GCBusy(f"another garbage collection is running ({doc.get('owner')})")
        except (PathNotFoundError, ValueError):
            pass
        await self._refresh_lease(run_id)
        await self._clean_stale()

    async def _refresh_lease(self, run_id: str) -> None:
        doc = {"owner": run_id, "expires": time.time() + LEASE_TTL}
        await self.driver.put_content(paths.GC_LEASE, json.dumps(doc).encode())

    async def _release_lease(self, run_id: str) -> None:
        with contextlib.suppress(PathNotFoundError, ValueError):
            doc = json.loads(await self.driver.get_content(paths.GC_LEASE))
            if doc.get("owner") == run_id:
                await self.driver.delete(paths.GC_LEASE)

    async def _clean_stale(self) -> None:
        """Leftovers of collections that died: expired batches, their claims, old journals."""
        now = time.time()
        for directory, keep in ((paths.GC_CONDEMNED, 0.0), (paths.GC_DELETED, JOURNAL_KEEP)):
            try:
                entries = await self.driver.list(directory)
            except PathNotFoundError:
                continue
            for path in entries:
                with contextlib.suppress(PathNotFoundError, ValueError, KeyError):
                    if keep:
                        if (await self.driver.stat(path)).mtime < now - keep:
                            await self.driver.delete(path)
                        continue
                    doc = json.loads(await self.driver.get_content(path))
                    if float(doc["expires"]) < now:
                        await self.driver.delete(path)
        try:
            claims = await self.driver.list(paths.GC_CLAIMS)
        except PathNotFoundError:
            claims = []
        for path in claims:
            batch = paths.parse_uncached(path).batch
            if not batch:
                continue
            try:
                await self.driver.stat(paths.gc_condemned(batch))
            except PathNotFoundError:
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(path)

    async def _journal(self, batch_id: str, deleted: set[Digest]) -> None:
        doc = {"id": batch_id, "digests": sorted(map(str, deleted)), "paths": self._removed}
        await self.driver.put_content(paths.gc_deleted(batch_id), json.dumps(doc).encode())
        self._removed = []
