"""Keeping mirrors in shape while serving: usage and hit rates, a bounded cache, pre-fetching.

- **Hit rates.** Each worker counts its mirrors' hits and misses (manifests and blobs) and writes
  its running totals to ``_cargohold/mirror/stats/<mirror>/<process>``; ``cargohold du`` adds
  the files up, so the rate covers every worker and restart. So that a file per process ever
  started does not pile up, files of processes that are gone (marked ``final`` by their last
  flush, or not rewritten for :data:`STALE` although live processes rewrite theirs every
  :data:`HEARTBEAT`) are folded into one live process's file and removed: worker 0 of each
  replica offers (``adopter``), and the one whose file name sorts first does it, so two
  replicas do not both count the same file. What is lost in a crash between writing the
  folded counts and removing the folded files is that they count twice; it is a statistic.
- **Last pulls.** Pulls of mirrored tags are written, at most once per flush interval, as the
  ``_pulls/<tag>`` files retention already uses (their mtime is the pull time).
- **Bounded cache** (``maxsize``). Worker 0 measures each mirror (the bytes of the distinct blobs
  its repositories' manifests reference) and, past ``maxsize``, deletes the least recently
  pulled images (a revision and its tags; an untagged revision counts from when it was stored)
  until the rest fits, skipping anything pulled within ``evictinterval``; then it runs the online
  garbage collector, which frees the blobs nothing references any more with its usual grace
  period and fence. A pull in flight is safe: a blob being sent stays readable to the reader
  (an open file survives its unlink), and whatever a client asks after the eviction is fetched
  from the upstream again; a blob of an evicted image that was still arriving lands in the
  store unreferenced, so the collector runs again while fetches are running. The same pass
  drops images not pulled within the mirror's ``ttl`` (registry:2's proxy ``ttl``; 0 keeps
  them).
- **Pre-fetch** (``prefetch``). Worker 0 lists each rule's repository upstream every
  ``prefetchinterval``, and pulls every tag matching one of its expressions through the mirror
  (manifest, index children and every blob), so the cache is full before the link goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cargohold.digest import Digest
from cargohold.errors import RegistryError
from cargohold.mirror.fetch import SWEEP_AGE
from cargohold.registry import inventory
from cargohold.registry.gc import GarbageCollector, GCBusy, GCError, GCOptions, Marks
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

if TYPE_CHECKING:
    from cargohold.config import GCConfig
    from cargohold.mirror.service import Mirror, Mirrors

log = logging.getLogger("cargohold.mirror")

FLUSH_SECONDS = 10.0
COLLECT_PASSES = 10
HEARTBEAT = 600.0  # a live process rewrites its statistics file at least this often...
STALE = 6 * HEARTBEAT  # ...so one not rewritten for this long belongs to a process that died


class Stats:
    """This process's hits and misses per mirror, and the tags it served."""

    def __init__(self) -> None:
        self.process = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.counts: Counter[tuple[str, str]] = Counter()  # (mirror, "hit"|"miss")
        self.pulls: dict[tuple[str, str], float] = {}
        self._written: Counter[tuple[str, str]] = Counter()
        self._written_at = 0.0
        self._flushing = asyncio.Lock()  # the flush loop and the UI's storage page both flush
        self.adopter = False  # worker 0: may fold the files of processes that are gone
        self.final = False  # set for the last flush of a stopping process

    def lookup(self, mirror: str, hit: bool) -> None:
        self.counts[(mirror, "hit" if hit else "miss")] += 1

    def pulled(self, name: str, tag: str) -> None:
        if len(self.pulls) < 100_000:
            self.pulls[(name, tag)] = time.time()

    async def flush(self, driver: StorageDriver, labels: list[str] | None = None) -> None:
        """Write what changed (and, every :data:`HEARTBEAT`, what did not: the file's mtime
        tells the others this process is alive). ``labels``: the mirrors whose file an
        adopter keeps even before its first lookup."""
        async with self._flushing:  # an older snapshot must not land after a newer one
            await self._flush(driver, labels or [])

    async def _flush(self, driver: StorageDriver, labels: list[str]) -> None:
        pulls, self.pulls = self.pulls, {}
        for (name, tag), when in pulls.items():
            path = paths.pull_record(name, tag)
            try:
                await driver.put_content(path, b"%f" % when)
                local = driver.local_path(path)
                if local is not None:  # the mtime is what is read back: the pull's, not ours
                    os.utime(local, (when, when))
            except Exception:
                log.exception("cannot record the pull of %s:%s", name, tag)
        beat = time.monotonic() - self._written_at > HEARTBEAT
        if self.counts == self._written and not beat and not self.final:
            return
        snapshot = Counter(self.counts)
        for mirror in {m for m, _ in snapshot} | set(labels if self.adopter else ()):
            doc = {
                "hits": snapshot[(mirror, "hit")],
                "misses": snapshot[(mirror, "miss")],
                "adopter": self.adopter,
                "final": self.final,
            }
            await driver.put_content(
                paths.mirror_stats(mirror, self.process), json.dumps(doc).encode()
            )
        self._written = snapshot
        self._written_at = time.monotonic()

    async def fold(self, driver: StorageDriver, labels: list[str]) -> int:
        """Fold the statistics files of processes that are gone into this one's, when this
        process is the adopter (see the module's doc); returns how many files went."""
        if not self.adopter:
            return 0
        now = time.time()
        folded = 0
        for label in labels:
            try:
                files = await driver.list(paths.mirror_stats(label))
            except PathNotFoundError:
                continue
            gone: list[tuple[str, dict[str, object]]] = []
            adopters: list[str] = []
            for path in files:
                name = path.rsplit("/", 1)[1]
                try:
                    doc = json.loads(await driver.get_content(path))
                    mtime = (await driver.stat(path)).mtime
                except (PathNotFoundError, ValueError):
                    continue
                if not isinstance(doc, dict):
                    continue
                live = not doc.get("final") and now - mtime < STALE
                if live and doc.get("adopter"):
                    adopters.append(name)
                elif not live and name != self.process:
                    gone.append((path, doc))
            if not gone or min(adopters, default=None) != self.process:
                continue  # nothing to fold, or another replica's worker 0 does it
            async with self._flushing:
                for _, doc in gone:
                    self.counts[(label, "hit")] += _count(doc, "hits")
                    self.counts[(label, "miss")] += _count(doc, "misses")
                await self._flush(driver, [label])  # the sum first, then the parts go
            for path, _ in gone:
                with contextlib.suppress(PathNotFoundError):
                    await driver.delete(path)
                folded += 1
        return folded


def _count(doc: dict[str, object], key: str) -> int:
    value = doc.get(key, 0)
    return value if isinstance(value, int) and value > 0 else 0


async def hit_counts(driver: StorageDriver, label: str) -> tuple[int, int]:
    """Hits and misses of a mirror, summed over every process that served it."""
    hits = misses = 0
    try:
        files = await driver.list(paths.mirror_stats(label))
    except PathNotFoundError:
        return 0, 0
    for path in files:
        try:
            doc = json.loads(await driver.get_content(path))
            hits += int(doc.get("hits", 0))
            misses += int(doc.get("misses", 0))
        except (PathNotFoundError, ValueError, TypeError, AttributeError):
            continue
    return hits, misses


@dataclass
class _Image:
    name: str
    digest: Digest
    last_used: float
    blobs: frozenset[Digest]


@dataclass
class MirrorUsage:
    label: str
    repositories: int
    images: int
    size: int
    maxsize: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float | None:
        total = self.hits + self.misses
        return self.hits / total if total else None

    def to_json(self) -> dict[str, object]:
        return {
            "mirror": self.label,
            "repositories": self.repositories,
            "images": self.images,
            "size": self.size,
            "maxsize": self.maxsize,
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": self.hit_rate,
        }


async def _images(mirrors: Mirrors, mirror: Mirror) -> tuple[list[_Image], dict[Digest, int]]:
    """Every revision of the mirror's repositories with its last use and the blobs it keeps."""
    driver = mirrors.driver
    repos = await inventory.scan_repositories(driver)
    sizes = {d: b.size for d, b in (await inventory.scan_blobs(driver)).items()}
    collector = GarbageCollector(driver)
    images: list[_Image] = []
    for name, repo in repos.items():
        route = mirrors.route(name)
        if route is None or route.mirror is not mirror:
            continue
        for d, stored_at in repo.revisions.items():
            if d not in sizes:
                continue
            marks = Marks()
            await collector.mark_manifest(d, marks, repo)
            tags = [t for t, target in repo.tags.items() if target == d]
            last = max([stored_at, *(repo.pulls.get(t, repo.tag_mtimes.get(t, 0)) for t in tags)])
            images.append(_Image(name, d, last, frozenset(x for x in marks.marked if x in sizes)))
    return images, sizes


async def usage(mirrors: Mirrors) -> list[MirrorUsage]:
    out = []
    for mirror in mirrors.mirrors:
        images, sizes = await _images(mirrors, mirror)
        used = set().union(*(i.blobs for i in images)) if images else set()
        hits, misses = await hit_counts(mirrors.driver, mirror.label)
        out.append(
            MirrorUsage(
                mirror.label,
                len({i.name for i in images}),
                len(images),
                sum(sizes[d] for d in used),
                mirror.config.maxsize,
                hits,
                misses,
            )
        )
    return out


def format_usage(usages: list[MirrorUsage], exact: bool = False) -> str:
    from cargohold.registry.usage import human

    def fmt(n: int) -> str:
        return str(n) if exact else human(n)

    width = max([len("MIRROR"), *(len(u.label) for u in usages)])
    lines = [
        f"{'MIRROR':<{width}}  {'REPOS':>5}  {'IMAGES':>6}  {'SIZE':>10}  {'MAXSIZE':>10}  "
        f"{'HITS':>7}  {'MISSES':>7}  {'HIT RATE':>8}"
    ]
    for u in usages:
        rate = "-" if u.hit_rate is None else f"{u.hit_rate * 100:.1f}%"
        lines.append(
            f"{u.label:<{width}}  {u.repositories:>5}  {u.images:>6}  {fmt(u.size):>10}  "
            f"{fmt(u.maxsize) if u.maxsize else '-':>10}  {u.hits:>7}  {u.misses:>7}  {rate:>8}"
        )
    return "\n".join(lines)


async def evict(mirrors: Mirrors, mirror: Mirror, now: float | None = None) -> int:
    """Delete least recently pulled images until the mirror fits ``maxsize`` and those past its
    ``ttl``; returns how many were deleted (their blobs go with the next collection)."""
    config = mirror.config
    if not config.maxsize and not config.ttl:
        return 0
    now = time.time() if now is None else now
    images, sizes = await _images(mirrors, mirror)
    refs: Counter[Digest] = Counter()
    for image in images:
        refs.update(image.blobs)
    size = sum(sizes[d] for d in refs)
    evicted = 0
    for image in sorted(images, key=lambda i: i.last_used):
        if now - image.last_used < config.evictinterval:
            break
        expired = bool(config.ttl) and now - image.last_used > config.ttl
        if not expired and (not config.maxsize or size <= config.maxsize):
            continue
        try:
            await mirrors.manifests.delete(image.name, image.digest)
        except RegistryError:
            continue  # gone meanwhile
        evicted += 1
        refs.subtract(image.blobs)
        for d in image.blobs:
            if refs[d] <= 0:
                size -= sizes[d]
                del refs[d]
        log.info(
            "mirror %s: evicted %s@%s (%s), now %d bytes",
            mirror.label, image.name, image.digest,
            "ttl" if expired else f"maxsize {config.maxsize}", size,
        )  # fmt: skip
    return evicted


async def collect(mirrors: Mirrors, gc: GCConfig) -> bool:
    """The online collector, to free what eviction left unreferenced. Returns whether it must
    run again: busy elsewhere, or it kept blobs back (recently linked or written: its grace
    period and re-check protect pulls in flight) that the next pass may free."""
    options = GCOptions(online=True, grace_period=gc.graceperiod, settle=gc.settle)
    collector = GarbageCollector(mirrors.driver, forget=mirrors.manifests.forget)
    try:
        report = await collector.run(options)
    except (GCBusy, GCError) as exc:
        log.info("mirror eviction: collection postponed (%s)", exc)
        return True
    log.info("mirror eviction: collection freed %d bytes", report.bytes_freed)
    return bool(report.kept_rescued or report.kept_recent)


async def prefetch(mirrors: Mirrors, mirror: Mirror) -> int:
    """Pull every matching tag of every rule through the mirror; returns images pulled."""
    pulled = 0
    prefix = mirror.config.prefix
    for rule in mirror.config.prefetch:
        name = f"{prefix}/{rule.repository}" if prefix else rule.repository
        try:
            listing = await mirrors.tags(name, {})
        except RegistryError as exc:
            log.warning("prefetch of %s: %s", name, exc.message)
            continue
        if listing is None:
            continue  # the upstream cannot be reached now; next interval
        wanted = [re.compile(t) for t in rule.tags]
        for tag in listing["tags"]:
            if not any(w.fullmatch(tag) for w in wanted):
                continue
            try:
                await _pull(mirrors, name, tag)
                pulled += 1
            except Exception as exc:
                log.warning("prefetch of %s:%s failed: %s", name, tag, exc)
    return pulled


async def _pull(mirrors: Mirrors, name: str, reference: str) -> None:
    m = await mirrors.manifest(name, reference)
    for child in m.children:
        with contextlib.suppress(RegistryError):  # a platform the upstream lacks
            await _pull(mirrors, name, str(child.digest))
    for d in m.blobs:
        if d.urls:
            continue
        tail = await mirrors.open_blob(name, d.digest)
        if tail is not None:
            async for _ in tail.chunks():
                pass


async def run(mirrors: Mirrors, index: int, gc: GCConfig) -> None:
    """The background work of one worker (``index`` 0 also evicts and pre-fetches). None in
    read-only mode: statistics, pull records, eviction and pre-fetching all write."""
    if mirrors.readonly:
        return
    mirrors.stats.adopter = index == 0
    tasks = [asyncio.create_task(_flush_loop(mirrors, sweep=index == 0))]
    if index == 0:
        for mirror in mirrors.mirrors:
            if mirror.config.maxsize or mirror.config.ttl:
                tasks.append(asyncio.create_task(_evict_loop(mirrors, mirror, gc)))
            if mirror.config.prefetch:
                tasks.append(asyncio.create_task(_prefetch_loop(mirrors, mirror)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        mirrors.stats.final = True  # this process's file may be folded into another's now
        with contextlib.suppress(Exception):
            await mirrors.stats.flush(mirrors.driver, _labels(mirrors))


def _labels(mirrors: Mirrors) -> list[str]:
    return [m.label for m in mirrors.mirrors]


async def _flush_loop(mirrors: Mirrors, sweep: bool) -> None:
    last_sweep = time.monotonic()
    folded = False
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        try:
            await mirrors.stats.flush(mirrors.driver, _labels(mirrors))
        except Exception:
            log.exception("cannot write the mirrors' statistics")
        if sweep and (not folded or time.monotonic() - last_sweep > SWEEP_AGE):
            # Once soon after start (the files of the processes this start replaced), then
            # with the hourly sweep of the fetch files.
            folded = True
            try:
                await mirrors.stats.fold(mirrors.driver, _labels(mirrors))
            except Exception:
                log.exception("cannot fold the statistics of stopped processes")
        if sweep and time.monotonic() - last_sweep > SWEEP_AGE:
            last_sweep = time.monotonic()
            with contextlib.suppress(OSError):
                await asyncio.to_thread(mirrors.fetches.sweep)


async def _evict_loop(mirrors: Mirrors, mirror: Mirror, gc: GCConfig) -> None:
    config = mirror.config
    # maxsize is checked every evictinterval; a ttl alone every tenth of it, at most hourly.
    interval = config.evictinterval
    if not config.maxsize:
        interval = max(interval, min(config.ttl / 10, 3600.0))
    pending = 0  # collections still to run for what was evicted (bounded: others' content
    # may keep the collector "rescuing" forever), also while blobs are still arriving: one of
    # an evicted image lands unreferenced
    while True:
        await asyncio.sleep(interval)
        try:
            await mirrors.stats.flush(mirrors.driver)  # the latest pulls count
            if await evict(mirrors, mirror):
                pending = COLLECT_PASSES
            if pending:
                again = await collect(mirrors, gc) or mirrors.fetches.busy()
                pending = pending - 1 if again else 0
        except Exception:
            log.exception("mirror %s: eviction failed", mirror.label)


async def _prefetch_loop(mirrors: Mirrors, mirror: Mirror) -> None:
    await asyncio.sleep(1.0)
    while True:
        started = time.monotonic()
        try:
            count = await prefetch(mirrors, mirror)
            log.info("mirror %s: prefetch pulled %d images", mirror.label, count)
        except Exception:
            log.exception("mirror %s: prefetch failed", mirror.label)
        elapsed = time.monotonic() - started
        await asyncio.sleep(max(mirror.config.prefetchinterval - elapsed, 1.0))
