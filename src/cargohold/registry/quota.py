"""Quotas: how many bytes a repository, or a namespace of repositories, may hold.

What counts. A repository *holds* every blob linked into it (layers and configs under
``_layers``, manifests under ``_manifests/revisions``): exactly what it can serve by digest, and
what a push adds. Each blob counts once per repository, however many manifests name it; a
``namespace`` rule counts each blob once for all its repositories together. Layers of a push that
was refused, or deleted manifests, count until garbage collection unlinks them (every collection
rebuilds the index, see below).

When it is checked. Charges happen *before* anything becomes visible: when an upload completes
(after its digest is verified, before the blob is linked), on a cross-repository mount, and when a
manifest is pushed (the manifest and every blob it names, before its revision link or tag is
written). A charge that would pass a limit is refused with ``DENIED`` saying "quota", the limit
and the usage, and nothing is written, so what the repository held stays as it was. Uploads that
can never fit are refused earlier, from their declared size (:meth:`Quotas.precheck`).

Where the numbers live, and why they stay right across workers and replicas. Usage is kept
incrementally, never by walking the store per push, in one of two places:

- With a ``redis`` section, in Redis (:mod:`cargohold.registry.quotaredis`): every charge is one
  Lua script, atomic in Redis, so replicas sharing the Redis are serialised on any storage (S3
  included).
- Otherwise in an index in the storage itself, ``_cargohold/quota/usage.sqlite`` under the
  filesystem root (registry:2 ignores ``_cargohold``): one row per (repository, blob) held and a
  running total per repository. Every charge is one SQLite transaction begun with ``BEGIN
  IMMEDIATE``: it takes the database's write lock, reads the usage, checks every limit and adds
  the rows, then commits, so two pushes, from two workers of one process or from processes on
  hosts that share the filesystem (SQLite's POSIX locks; the rollback journal, since WAL needs
  shared memory), are serialised and cannot both squeeze past a limit.

A namespace's usage is summed from the rows of its repositories (each blob once): a query over an
index, not a walk of the store. The numbers may only be *higher* than the truth (a charge whose
link was then not written because the request died), never lower, because charging happens
before linking. ``cargohold du --rebuild`` and every garbage collection recompute them from a walk
of the layout; rows charged while that walk ran are kept. S3 storage without Redis has neither
place: the configuration is refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cargohold.config import ConfigError, QuotaRule, RedisConfig
from cargohold.digest import Digest
from cargohold.errors import ErrorCode, RegistryError
from cargohold.globs import glob_match
from cargohold.registry import inventory
from cargohold.registry.governance import Governance
from cargohold.registry.usage import human
from cargohold.storage import paths
from cargohold.storage.driver import StorageDriver

log = logging.getLogger("cargohold.quota")

INDEX_PATH = f"{paths.CARGOHOLD}/quota/usage.sqlite"
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    repo TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (repo, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repos (repo TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Scope:
    """What one quota rule limits, seen from one repository."""

    index: int
    rule: QuotaRule
    repository: str

    @property
    def label(self) -> str:
        globs = ", ".join(self.rule.repositories)
        if self.rule.namespace:
            return f"namespace {globs} (quotas[{self.index}])"
        return f"repository {self.repository} (quotas[{self.index}]: {globs})"


def quota_error(scope: Scope, usage: int, adding: int) -> RegistryError:
    limit = scope.rule.size
    return RegistryError(
        ErrorCode.DENIED,
        f"quota exceeded: {scope.label} uses {human(usage)} of its {human(limit)} quota "
        f"({usage} of {limit} bytes); this push needs {human(adding)} more",
        {"quota": f"quotas[{scope.index}]", "limit": limit, "usage": usage, "needed": adding},
    )


class UsageIndex:
    """The SQLite file; every method is blocking (callers run it in a thread)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # one connection per process, used by one thread at a time
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        self._db.isolation_level = None  # explicit BEGIN IMMEDIATE / COMMIT
        with self._lock:
            # The default rollback journal, not WAL: WAL needs shared memory, so it would not
            # serialise replicas on different hosts sharing one filesystem.
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reading ---------------------------------------------------------------------------

    def _repos_of(self, scope: Scope) -> list[str]:
        if not scope.rule.namespace:
            return [scope.repository]
        rows = self._db.execute("SELECT repo FROM repos").fetchall()
        names = {r for (r,) in rows if any(glob_match(g, r) for g in scope.rule.repositories)}
        names.add(scope.repository)
        return sorted(names)

    def _usage(self, repos: list[str]) -> int:
        if len(repos) == 1:
            row = self._db.execute("SELECT bytes FROM repos WHERE repo = ?", repos).fetchone()
            return int(row[0]) if row else 0
        marks = ",".join("?" * len(repos))
        row = self._db.execute(
            f"SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM held "
            f"WHERE repo IN ({marks}) GROUP BY digest)",
            repos,
        ).fetchone()
        return int(row[0])

    def _missing(self, repos: list[str], items: dict[str, int]) -> int:
        """Bytes of ``items`` that none of ``repos`` holds yet."""
        marks = ",".join("?" * len(repos))
        adding = 0
        for digest, size in items.items():
            row = self._db.execute(
                f"SELECT 1 FROM held WHERE digest = ? AND repo IN ({marks}) LIMIT 1",
                [digest, *repos],
            ).fetchone()
            if row is None:
                adding += size
        return adding

    def usage(self, scope: Scope) -> int:
        with self._lock:
            return self._usage(self._repos_of(scope))

    def repository_usage(self) -> dict[str, int]:
        with self._lock:
            return {r: int(b) for r, b in self._db.execute("SELECT repo, bytes FROM repos")}

    def check(self, scopes: list[Scope], items: dict[str, int], extra: int = 0) -> None:
        """Raise when adding ``items`` (+ ``extra`` unknown bytes) would pass a limit."""
        with self._lock:
            for scope in scopes:
                repos = self._repos_of(scope)
                usage = self._usage(repos)
                adding = self._missing(repos, items) + extra
                if adding and usage + adding > scope.rule.size:
                    raise quota_error(scope, usage, adding)

    # -- writing ---------------------------------------------------------------------------

    def charge(self, repository: str, scopes: list[Scope], items: dict[str, int]) -> None:
        """Atomically: check every limit, then record ``items`` as held by ``repository``."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for scope in scopes:
                    repos = self._repos_of(scope)
                    usage = self._usage(repos)
                    adding = self._missing(repos, items)
                    if adding and usage + adding > scope.rule.size:
                        raise quota_error(scope, usage, adding)
                now = time.time()
                added = 0
                for digest, size in items.items():
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO held (repo, digest, size, at) VALUES (?, ?, ?, ?)",
                        (repository, digest, size, now),
                    )
                    added += size if cursor.rowcount else 0
                db.execute(
                    "INSERT INTO repos (repo, bytes) VALUES (?, ?) "
                    "ON CONFLICT (repo) DO UPDATE SET bytes = bytes + excluded.bytes",
                    (repository, added),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def release(self, repository: str, digests: Iterable[str]) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for digest in digests:
                    row = db.execute(
                        "DELETE FROM held WHERE repo = ? AND digest = ? RETURNING size",
                        (repository, digest),
                    ).fetchone()
                    if row is not None:
                        db.execute(
                            "UPDATE repos SET bytes = MAX(bytes - ?, 0) WHERE repo = ?",
                            (row[0], repository),
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def replace_all(self, held: dict[str, dict[str, int]], started: float) -> None:
        """The result of a walk that began at ``started``: rows charged since then are kept."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS walked (repo TEXT, digest TEXT)")
                db.execute("DELETE FROM walked")
                db.executemany(
                    "INSERT INTO walked VALUES (?, ?)",
                    [(r, d) for r, blobs in held.items() for d in blobs],
                )
                db.execute(
                    "DELETE FROM held WHERE at < ? AND NOT EXISTS (SELECT 1 FROM walked w "
                    "WHERE w.repo = held.repo AND w.digest = held.digest)",
                    (started,),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO held (repo, digest, size, at) VALUES (?, ?, ?, ?)",
                    [(r, d, s, started) for r, blobs in held.items() for d, s in blobs.items()],
                )
                db.execute("DELETE FROM repos")
                db.execute(
                    "INSERT INTO repos (repo, bytes) SELECT repo, SUM(size) FROM held GROUP BY repo"
                )
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('rebuilt', ?)",
                    (str(time.time()),),
                )
                db.execute("DELETE FROM walked")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def rebuilt(self) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'rebuilt'").fetchone()
            return float(row[0]) if row else None


class UsageBackend(Protocol):
    """Where usage lives: :class:`SqliteUsage` in the store, or :class:`RedisUsage`."""

    async def check(self, scopes: list[Scope], items: dict[str, int], extra: int = 0) -> None: ...
    async def charge(self, repository: str, scopes: list[Scope], items: dict[str, int]) -> None: ...
    async def release(self, repository: str, digests: list[str]) -> None: ...
    async def replace_all(self, held: dict[str, dict[str, int]], started: float) -> None: ...
    async def repository_usage(self) -> dict[str, int]: ...
    async def usage(self, scope: Scope) -> int: ...
    async def rebuilt(self) -> float | None: ...
    async def close(self) -> None: ...


class SqliteUsage:
    """:class:`UsageIndex` with every call in a thread."""

    def __init__(self, path: str) -> None:
        self.index = UsageIndex(path)

    async def check(self, scopes: list[Scope], items: dict[str, int], extra: int = 0) -> None:
        await asyncio.to_thread(self.index.check, scopes, items, extra)

    async def charge(self, repository: str, scopes: list[Scope], items: dict[str, int]) -> None:
        await asyncio.to_thread(self.index.charge, repository, scopes, items)

    async def release(self, repository: str, digests: list[str]) -> None:
        await asyncio.to_thread(self.index.release, repository, digests)

    async def replace_all(self, held: dict[str, dict[str, int]], started: float) -> None:
        await asyncio.to_thread(self.index.replace_all, held, started)

    async def repository_usage(self) -> dict[str, int]:
        return await asyncio.to_thread(self.index.repository_usage)

    async def usage(self, scope: Scope) -> int:
        return await asyncio.to_thread(self.index.usage, scope)

    async def rebuilt(self) -> float | None:
        return await asyncio.to_thread(self.index.rebuilt)

    async def close(self) -> None:
        self.index.close()


class Quotas:
    """Quota enforcement for one process: the rules from :class:`Governance`, the usage from the
    backend. Without any quota rule every method returns at once and no backend is opened."""

    def __init__(
        self, governance: Governance, driver: StorageDriver, redis: RedisConfig | None = None
    ) -> None:
        self.governance = governance
        self.driver = driver
        self.redis = redis
        self._backend: UsageBackend | None = None
        self.local_path = driver.local_path(INDEX_PATH)

    @property
    def supported(self) -> bool:
        return self.redis is not None or self.local_path is not None

    def check_supported(self) -> None:
        if self.governance.rules.quotas and not self.supported:
            raise ConfigError(
                "quotas need filesystem storage or a redis section (to keep the usage in)",
                key="quotas",
            )

    @property
    def backend(self) -> UsageBackend:
        if self._backend is None:
            if self.redis is not None:
                from cargohold.registry.quotaredis import RedisUsage

                self._backend = RedisUsage(self.redis, self.driver.identity)
            elif self.local_path is not None:
                self._backend = SqliteUsage(self.local_path)
            else:
                self.check_supported()
                raise AssertionError("quotas without a usage backend")
        return self._backend

    def scopes(self, repository: str) -> list[Scope]:
        return [Scope(i, r, repository) for i, r in self.governance.rules.quota_rules(repository)]

    @property
    def active(self) -> bool:
        return bool(self.governance.rules.quotas)

    async def precheck(
        self, repository: str, size: int | None, digest: Digest | None = None
    ) -> None:
        """Refuse an upload that cannot fit: ``size`` bytes more than the repository holds."""
        if size is None or size <= 0 or not self.active:
            return
        scopes = self.scopes(repository)
        if not scopes:
            return
        items = {str(digest): size} if digest is not None else {}
        extra = 0 if digest is not None else size
        await self.backend.check(scopes, items, extra)

    async def charge(self, repository: str, items: Iterable[tuple[Digest, int]]) -> None:
        """Record blobs as held by ``repository``; DENIED when a limit would be passed."""
        if not self.active:
            return
        wanted = {str(d): size for d, size in items}
        if wanted:
            await self.backend.charge(repository, self.scopes(repository), wanted)

    async def release(self, repository: str, digests: Iterable[Digest]) -> None:
        if not self.active:
            return
        await self.backend.release(repository, [str(d) for d in digests])

    async def rebuild(self) -> dict[str, int]:
        """Recompute the usage from a walk of the layout; returns bytes per repository."""
        started = time.time()
        repos = await inventory.scan_repositories(self.driver)
        blobs = await inventory.scan_blobs(self.driver)
        held: dict[str, dict[str, int]] = {}
        for name, repo in repos.items():
            linked = {*repo.layers, *repo.revisions}
            sizes = {str(d): blobs[d].size for d in linked if d in blobs}
            if sizes:
                held[name] = sizes
        await self.backend.replace_all(held, started)
        return await self.backend.repository_usage()

    async def ensure_built(self) -> None:
        """Rebuild the index from the store unless it was ever built: quotas configured on a
        store that already holds images start from what it holds."""
        if not self.active:
            return
        try:
            if await self.backend.rebuilt() is None:
                usage = await self.rebuild()
                log.info("quota usage index built: %d repositories", len(usage))
        except Exception:
            log.exception("cannot build the quota usage index (cargohold du --rebuild)")

    async def report(self) -> list[dict[str, object]]:
        """Usage against every quota: one entry per repository rule match, one per namespace."""
        rules = self.governance.rules.quotas
        if not rules:
            return []
        usage = await self.backend.repository_usage()
        entries: list[dict[str, object]] = []
        for i, rule in enumerate(rules):
            members = sorted(r for r in usage if any(glob_match(g, r) for g in rule.repositories))
            if rule.namespace:
                if not members:
                    continue
                used = await self.backend.usage(Scope(i, rule, members[0]))
                entries.append(_entry(i, rule, ", ".join(rule.repositories), used))
            else:
                entries.extend(_entry(i, rule, r, usage[r]) for r in members)
        return entries

    async def close(self) -> None:
        if self._backend is not None:
            await self._backend.close()
            self._backend = None


def _entry(index: int, rule: QuotaRule, scope: str, used: int) -> dict[str, object]:
    return {
        "rule": f"quotas[{index}]",
        "kind": "namespace" if rule.namespace else "repository",
        "scope": scope,
        "usage": used,
        "limit": rule.size,
    }


def format_quotas(entries: list[dict[str, object]], exact: bool = False) -> str:
    if not entries:
        return ""
    width = max(len("QUOTA"), *(len(str(e["scope"])) for e in entries))
    lines = [f"{'QUOTA':<{width}}  {'RULE':<10}  {'USED':>10}  {'LIMIT':>10}  {'USE%':>5}"]
    for e in entries:
        used, limit = int(str(e["usage"])), int(str(e["limit"]))
        shown = (str(used), str(limit)) if exact else (human(used), human(limit))
        lines.append(
            f"{e['scope']!s:<{width}}  {e['rule']!s:<10}  {shown[0]:>10}  {shown[1]:>10}  "
            f"{100 * used / limit:>4.0f}%"
        )
    return "\n".join(lines)
