"""Retention (cargohold; registry:2 has none): which tags to keep, per repository pattern.

A policy applies to the repositories its globs match (``fnmatch``: ``team/*``, ``*``); the first
policy that matches a repository wins. Within it a tag is kept when *any* of the policy's rules
keeps it:

- ``keep_last: N`` — the N most recently pushed tags;
- ``keep_within: 720h`` — tags pushed *or pulled* within that long;
- ``keep_tags: REGEX`` — tags the expression matches (``re.search``).

A policy with none of these rules keeps every tag. Tags no rule keeps are deleted (as
``DELETE /v2/<name>/manifests/<tag>`` does); with ``delete_untagged`` the manifests no tag points
to any more are deleted too, and the blobs only they used go with the next garbage collection.
That part is done by :class:`~cargohold.registry.gc.GarbageCollector` itself, with all its
protections for pushes in progress; nothing younger than the grace period is ever deleted.

When a tag was pushed is the modification time of its ``current/link``. When it was pulled is
recorded cheaply: each process notes pulls by tag in memory (a dict update on the request path)
and :class:`PullRecorder` writes them, at most once per tag per flush interval, as the mtime of
``repositories/<name>/_pulls/<tag>``, a file registry:2 never looks at.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from cargohold.config import RetentionConfig, RetentionPolicy
from cargohold.registry import inventory
from cargohold.registry.catalog import order_key
from cargohold.registry.events import PULL, Event
from cargohold.registry.gc import GarbageCollector, GCOptions
from cargohold.registry.governance import Rules
from cargohold.registry.inventory import RepoInventory
from cargohold.storage import paths
from cargohold.storage.driver import PathNotFoundError, StorageDriver

log = logging.getLogger("cargohold.retention")


@dataclass
class TagDecision:
    tag: str
    digest: str | None
    pushed: float
    pulled: float | None
    reasons: list[str] = field(default_factory=list)  # why it is kept; empty = deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "digest": self.digest,
            "pushed": self.pushed,
            "pulled": self.pulled,
            "kept": bool(self.reasons),
            "reasons": self.reasons,
        }


@dataclass
class RepoDecision:
    repository: str
    policy: int
    tags: list[TagDecision] = field(default_factory=list)

    @property
    def deleted(self) -> list[TagDecision]:
        return [t for t in self.tags if not t.reasons]

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "policy": self.policy,
            "kept": [t.to_json() for t in self.tags if t.reasons],
            "deleted": [t.to_json() for t in self.deleted],
        }


@dataclass
class RetentionReport:
    dry_run: bool
    repositories: list[RepoDecision] = field(default_factory=list)
    tags_deleted: int = 0
    tags_skipped: int = 0  # changed since they were evaluated (re-pushed): left alone
    untagged_manifests: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "dryRun": self.dry_run,
            "repositories": [r.to_json() for r in self.repositories],
            "tagsDeleted": self.tags_deleted,
            "tagsSkipped": self.tags_skipped,
            "untaggedManifests": [
                {"repository": r, "digest": d} for r, d in self.untagged_manifests
            ],
        }


def policy_for(policies: list[RetentionPolicy], repository: str) -> int | None:
    for i, policy in enumerate(policies):
        if any(fnmatch.fnmatchcase(repository, pattern) for pattern in policy.repositories):
            return i
    return None


def decide(
    policy: RetentionPolicy,
    repo: RepoInventory,
    now: float,
    index: int = 0,
    rules: Rules | None = None,
) -> RepoDecision:
    decision = RepoDecision(repo.name, index)
    tags = sorted(repo.tags, key=lambda t: (-repo.tag_mtimes.get(t, 0.0), t))
    pattern = re.compile(policy.keep_tags) if policy.keep_tags is not None else None
    has_rules = (
        policy.keep_last is not None or policy.keep_within is not None or pattern is not None
    )
    for rank, tag in enumerate(tags):
        d = repo.tags[tag]
        item = TagDecision(tag, str(d) if d else None, repo.tag_mtimes.get(tag, 0.0), None)
        item.pulled = repo.pulls.get(tag)
        if not has_rules:
            item.reasons.append("no rule deletes tags")
        if policy.keep_last is not None and rank < policy.keep_last:
            item.reasons.append(f"among the newest {policy.keep_last}")
        if policy.keep_within is not None:
            if now - item.pushed <= policy.keep_within:
                item.reasons.append("pushed recently")
            if item.pulled is not None and now - item.pulled <= policy.keep_within:
                item.reasons.append("pulled recently")
        if pattern is not None and pattern.search(tag):
            item.reasons.append("name matches keep_tags")
        frozen = rules.immutable_rule(repo.name, tag) if rules is not None else None
        if frozen is not None:
            item.reasons.append(f"immutable (rule immutable[{frozen}])")
        decision.tags.append(item)
    return decision


class RetentionEngine:
    def __init__(
        self,
        driver: StorageDriver,
        config: RetentionConfig,
        grace_period: float = 0.0,
        rules: Rules | None = None,
    ) -> None:
        self.driver = driver
        self.config = config
        self.grace_period = grace_period
        self.rules = rules  # immutable tags are always kept

    async def evaluate(self) -> tuple[RetentionReport, GCOptions]:
        """The decisions, and the GC options that delete the untagged manifests they leave."""
        now = time.time()
        repos = await inventory.scan_repositories(self.driver)
        report = RetentionReport(dry_run=True)
        untagged: set[str] = set()
        ignored: dict[str, set[str]] = {}
        for name in sorted(repos, key=order_key):
            repo = repos[name]
            if not repo.has_manifests:
                continue
            index = policy_for(self.config.policies, name)
            if index is None:
                continue
            policy = self.config.policies[index]
            decision = decide(policy, repo, now, index, self.rules)
            report.repositories.append(decision)
            ignored[name] = {t.tag for t in decision.deleted}
            if policy.delete_untagged:
                untagged.add(name)
        options = GCOptions(
            untagged_repos=frozenset(untagged),
            ignored_tags=ignored,
            grace_period=self.grace_period,
        )
        return report, options

    async def run(self, dry_run: bool = True) -> RetentionReport:
        """Evaluate; unless ``dry_run``, delete the tags and the untagged manifests (offline:
        the blobs they free are swept by the next garbage collection)."""
        report, options = await self.evaluate()
        if not dry_run:
            await self.delete_tags(report)
        gc_report = await GarbageCollector(self.driver).run(
            GCOptions(
                dry_run=dry_run,
                untagged_repos=options.untagged_repos,
                ignored_tags=options.ignored_tags if dry_run else {},
                grace_period=self.grace_period,
                sweep_blobs=False,
            )
        )
        report.dry_run = dry_run
        report.untagged_manifests = gc_report.manifests_deleted
        return report

    async def delete_tags(self, report: RetentionReport) -> None:
        cutoff = time.time() - self.grace_period
        for decision in report.repositories:
            for item in decision.deleted:
                rules = self.rules
                if (
                    rules is not None
                    and rules.immutable_rule(decision.repository, item.tag) is not None
                ):
                    report.tags_skipped += 1
                    continue
                link = paths.tag_current_link(decision.repository, item.tag)
                try:
                    info = await self.driver.stat(link)
                    current = await inventory.read_link(self.driver, link)
                except PathNotFoundError:
                    continue
                if (
                    str(current) != item.digest
                    or info.mtime >= cutoff
                    or (info.mtime != item.pushed)
                ):
                    report.tags_skipped += 1  # re-pushed since it was evaluated
                    continue
                log.info("retention: deleting tag %s:%s", decision.repository, item.tag)
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(paths.tag_dir(decision.repository, item.tag))
                    report.tags_deleted += 1
                with contextlib.suppress(PathNotFoundError):
                    await self.driver.delete(paths.pull_record(decision.repository, item.tag))


def format_report(report: RetentionReport) -> str:
    lines: list[str] = []
    verb = "would delete" if report.dry_run else "deleted"
    for decision in report.repositories:
        lines.append(f"{decision.repository} (policy {decision.policy}):")
        for t in decision.tags:
            state = f"keep    ({', '.join(t.reasons)})" if t.reasons else verb
            lines.append(f"  {t.tag:<30} {state}")
    for repo, digest in report.untagged_manifests:
        lines.append(f"untagged manifest {verb}: {repo}@{digest}")
    deleted = sum(len(d.deleted) for d in report.repositories)
    lines.append(
        f"{deleted} tags and {len(report.untagged_manifests)} untagged manifests {verb}"
        + (f" ({report.tags_skipped} re-pushed meanwhile, kept)" if report.tags_skipped else "")
    )
    return "\n".join(lines)


class PullRecorder:
    """Remembers pulls by tag in memory; :meth:`flush` writes them to storage."""

    MAX_PENDING = 100_000

    def __init__(self, driver: StorageDriver) -> None:
        self.driver = driver
        self._pending: dict[tuple[str, str], float] = {}

    def publish(self, event: Event) -> None:
        """As an event sink: pulls of a manifest by tag."""
        if event.action == PULL and event.target.tag:
            self.record(event.target.repository, event.target.tag)

    def record(self, repository: str, tag: str) -> None:
        if len(self._pending) < self.MAX_PENDING:
            self._pending[(repository, tag)] = time.time()

    async def flush(self) -> int:
        pending, self._pending = self._pending, {}
        for (repository, tag), when in pending.items():
            try:
                await self.driver.put_content(paths.pull_record(repository, tag), b"%f" % when)
            except Exception:
                log.exception("cannot record the pull of %s:%s", repository, tag)
        return len(pending)

    async def run(self, interval: float) -> None:
        try:
            while True:
                await asyncio.sleep(interval)
                await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
