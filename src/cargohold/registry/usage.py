"""``cargohold du``: storage used per repository, shared blobs counted once, and what GC frees.

A repository *uses* every blob its manifest revisions reference (the manifests themselves,
configs, layers, and the children of its indexes, recursively), the same closure GC marks.
Its ``size`` is the sum of those blobs; ``unique`` is the part no other repository uses (what
deleting the repository would free) and ``shared`` the rest. The totals count each blob once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cargohold.digest import Digest
from cargohold.registry import inventory
from cargohold.registry.catalog import order_key
from cargohold.registry.gc import GarbageCollector, GCOptions, Marks
from cargohold.storage import paths
from cargohold.storage.driver import StorageDriver


@dataclass
class RepoUsage:
    name: str
    manifests: int = 0
    tags: int = 0
    blobs: int = 0
    size: int = 0
    unique: int = 0
    shared: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.name,
            "manifests": self.manifests,
            "tags": self.tags,
            "blobs": self.blobs,
            "size": self.size,
            "unique": self.unique,
            "shared": self.shared,
        }


@dataclass
class UsageReport:
    repositories: list[RepoUsage] = field(default_factory=list)
    blobs: int = 0  # every blob under blobs/
    stored: int = 0  # their bytes
    referenced: int = 0  # bytes of blobs some repository uses (each counted once)
    shared: int = 0  # bytes of blobs used by more than one repository (each counted once)
    gc_blobs: int = 0  # what garbage-collect would delete...
    gc_bytes: int = 0
    gc_untagged_blobs: int = 0  # ...and with --delete-untagged
    gc_untagged_manifests: int = 0
    gc_untagged_bytes: int = 0
    uploads: int = 0  # bytes of uploads in progress

    def to_json(self) -> dict[str, Any]:
        return {
            "repositories": [r.to_json() for r in self.repositories],
            "blobs": self.blobs,
            "stored": self.stored,
            "referenced": self.referenced,
            "shared": self.shared,
            "garbageCollect": {"blobs": self.gc_blobs, "bytes": self.gc_bytes},
            "garbageCollectDeleteUntagged": {
                "blobs": self.gc_untagged_blobs,
                "manifests": self.gc_untagged_manifests,
                "bytes": self.gc_untagged_bytes,
            },
            "uploads": self.uploads,
        }


async def disk_usage(driver: StorageDriver) -> UsageReport:
    repos = await inventory.scan_repositories(driver)
    blobs = await inventory.scan_blobs(driver)
    collector = GarbageCollector(driver)
    used_by: dict[str, set[Digest]] = {}
    for name, repo in repos.items():
        if not repo.has_manifests:
            continue
        marks = Marks()
        for d in repo.revisions:
            if d in blobs:
                await collector.mark_manifest(d, marks, repo)
        used_by[name] = {d for d in marks.marked if d in blobs}
    users: dict[Digest, int] = {}
    for used in used_by.values():
        for d in used:
            users[d] = users.get(d, 0) + 1
    report = UsageReport(blobs=len(blobs), stored=sum(b.size for b in blobs.values()))
    report.referenced = sum(blobs[d].size for d in users)
    report.shared = sum(blobs[d].size for d, n in users.items() if n > 1)
    for name in sorted(used_by, key=order_key):
        repo = repos[name]
        usage = RepoUsage(name, manifests=len(repo.revisions), tags=len(repo.tags))
        for d in used_by[name]:
            usage.blobs += 1
            usage.size += blobs[d].size
            if users[d] > 1:
                usage.shared += blobs[d].size
            else:
                usage.unique += blobs[d].size
        report.repositories.append(usage)
    plain = await GarbageCollector(driver).run(GCOptions(dry_run=True))
    report.gc_blobs, report.gc_bytes = len(plain.blobs_deleted), plain.bytes_freed
    untagged = await GarbageCollector(driver).run(GCOptions(dry_run=True, delete_untagged=True))
    report.gc_untagged_blobs = len(untagged.blobs_deleted)
    report.gc_untagged_manifests = len(untagged.manifests_deleted)
    report.gc_untagged_bytes = untagged.bytes_freed
    for name in repos:
        for info in await inventory.walk_files(driver, paths.uploads(name), frozenset()):
            if paths.parse_uncached(info.path).kind is paths.Kind.UPLOAD_DATA:
                report.uploads += info.size
    return report


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def format_report(report: UsageReport, exact: bool = False) -> str:
    def fmt(n: int) -> str:
        return str(n) if exact else human(n)

    width = max([len("REPOSITORY"), *(len(r.name) for r in report.repositories)])
    lines = [
        f"{'REPOSITORY':<{width}}  {'MANIFESTS':>9}  {'TAGS':>5}  {'BLOBS':>6}  "
        f"{'SIZE':>10}  {'UNIQUE':>10}  {'SHARED':>10}"
    ]
    for r in report.repositories:
        lines.append(
            f"{r.name:<{width}}  {r.manifests:>9}  {r.tags:>5}  {r.blobs:>6}  "
            f"{fmt(r.size):>10}  {fmt(r.unique):>10}  {fmt(r.shared):>10}"
        )
    lines += [
        "",
        f"stored:      {fmt(report.stored)} in {report.blobs} blobs",
        f"referenced:  {fmt(report.referenced)} (shared by several repositories: "
        f"{fmt(report.shared)})",
        f"garbage-collect would free {fmt(report.gc_bytes)} ({report.gc_blobs} blobs); "
        f"with --delete-untagged {fmt(report.gc_untagged_bytes)} "
        f"({report.gc_untagged_blobs} blobs, {report.gc_untagged_manifests} manifests)",
        f"uploads in progress: {fmt(report.uploads)}",
    ]
    return "\n".join(lines)
