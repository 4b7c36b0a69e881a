"""``cargohold import``: archive → verified blobs → registry, all or nothing.

The order of the steps is the guarantee:

1. open the archive (a truncated tar or gzip stream is refused here) and read its metadata;
2. decide which images go to which ``repo:tag`` (before any byte is hashed, so a naming mistake
   costs nothing);
3. verify every blob against its digest, in worker threads (hashing and zlib release the GIL),
   compressing docker layers on the way when asked to;
4. only now write: blobs the registry lacks go through its upload path (verified again on
   arrival), the ones it has are reused; then every manifest by digest; then, last, the tags.

A failure in steps 1-3 writes nothing. A failure in step 4 on a local root is rolled back by the
target's journal; on a remote registry nothing is tagged until everything else is in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from cargohold import mediatypes as mt
from cargohold.images.archive import Archive, ArchiveImage, BlobPlan, verify_blob
from cargohold.images.files import ArchiveError, Files
from cargohold.images.names import UsageError, check_repo, check_tag_text
from cargohold.images.progress import Progress, human_size, short_digest
from cargohold.images.target import ImportTarget, file_body

UPLOAD_CONCURRENCY = 3


@dataclass
class ImportJob:
    image: ArchiveImage
    repo: str
    tags: list[str]


@dataclass
class ImportResult:
    repo: str
    tags: list[str]
    digest: str
    media_type: str
    size: int
    layers: int
    reused: int
    notes: list[str] = field(default_factory=list)


def plan_jobs(archive: Archive, dest: tuple[str, str | None] | None) -> list[ImportJob]:
    """Which image goes where, from the archive's names and the optional ``REPO[:TAG]``.

    - No ``REPO``: every image under every name the archive gives it.
    - ``REPO[:TAG]`` and a single image: that image, renamed (tag: ``TAG``, else the archive's
      tags, else ``latest``).
    - ``REPO[:TAG]`` and several images: those the archive names so (``TAG`` selects by tag in an
      OCI layout whose names are bare tags); an error lists the names when none match.
    """
    images = archive.images
    jobs: list[ImportJob] = []
    if dest is None:
        for image in images:
            named = [r for r in image.refs if r.repo]
            if not named:
                raise UsageError(
                    f"the archive does not name a repository for {image.label}: "
                    "give one as REPO[:TAG]"
                )
            by_repo: dict[str, list[str]] = {}
            for ref in named:
                assert ref.repo is not None
                by_repo.setdefault(ref.repo, []).append(ref.tag or "latest")
            for repo, tags in by_repo.items():
                jobs.append(ImportJob(image, check_repo(repo), _unique(tags)))
        return _merge(jobs)
    repo, tag = dest
    if len(images) == 1:
        image = images[0]
        tags = [tag] if tag else _unique([r.tag for r in image.refs if r.tag]) or ["latest"]
        return [ImportJob(image, repo, tags)]
    for image in images:
        matching = [
            r for r in image.refs if (r.repo in (None, repo)) and (tag is None or r.tag == tag)
        ]
        if matching:
            tags = [tag] if tag else _unique([r.tag or "latest" for r in matching])
            jobs.append(ImportJob(image, repo, tags))
    if not jobs:
        names = ", ".join(str(r) for image in images for r in image.refs) or "no names"
        raise UsageError(
            f"the archive holds {len(images)} images ({names}) and none is named {repo}"
            f"{':' + tag if tag else ''}: name one of them, or leave REPO out to import all"
        )
    return _merge(jobs)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge(jobs: list[ImportJob]) -> list[ImportJob]:
    """One job per (image, repository); a tag claimed twice in a repository is an error."""
    merged: dict[tuple[int, str], ImportJob] = {}
    claimed: dict[tuple[str, str], ArchiveImage] = {}
    for job in jobs:
        for tag in job.tags:
            check_tag_text(tag)
            other = claimed.setdefault((job.repo, tag), job.image)
            if other is not job.image:
                raise UsageError(f"two images of the archive are both named {job.repo}:{tag}")
        key = (id(job.image), job.repo)
        if key in merged:
            merged[key].tags = _unique(merged[key].tags + job.tags)
        else:
            merged[key] = job
    return list(merged.values())


def verify_all(
    files: Files, jobs: list[ImportJob], tmpdir: str, progress: Progress, workers: int
) -> None:
    """Step 3: every blob read once and proved; the first failure stops everything."""
    plans: list[BlobPlan] = []
    for job in jobs:
        for plan in job.image.blobs:
            if plan not in plans:
                plans.append(plan)
    total = sum(p.source_size for p in plans)
    task = progress.task("verifying", total)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(verify_blob, files, plan, tmpdir, task.advance) for plan in plans]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    task.finish(f"{len(plans)} blobs")
    for job in jobs:
        job.image.finish()


def _opener(files: Files, plan: BlobPlan) -> Callable[[], BinaryIO]:
    if plan.spool is not None:
        spool = plan.spool
        return lambda: open(spool, "rb")
    return lambda: files.open(plan.path)


async def publish(
    target: ImportTarget, files: Files, jobs: list[ImportJob], progress: Progress
) -> list[ImportResult]:
    """Step 4: blobs, then manifests by digest, then tags; rolled back on any failure.

    ``target.start`` must have been called (before verification, so that a local target notes
    which repositories existed before anything was written).
    """
    try:
        return await _publish(target, files, jobs, progress)
    except BaseException:
        await asyncio.shield(target.rollback())
        raise


async def _publish(
    target: ImportTarget, files: Files, jobs: list[ImportJob], progress: Progress
) -> list[ImportResult]:
    semaphore = asyncio.Semaphore(UPLOAD_CONCURRENCY)
    reused: set[tuple[str, str]] = set()
    done: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def one(repo: str, plan: BlobPlan) -> None:
        digest, size = plan.final_digest, plan.final_size
        async with semaphore:
            if await target.has_blob(repo, digest, size):
                await target.reuse_blob(repo, digest)
                reused.add((repo, digest))
                progress.info(f"{repo}: {short_digest(digest)} already present")
                return
            task = progress.task(f"{repo}: {short_digest(digest)}", size)
            body, sent_digest = file_body(_opener(files, plan), task.advance)
            await target.upload_blob(repo, digest, size, body, sent_digest)
            task.finish("written")

    for job in jobs:
        for plan in job.image.blobs:
            key = (job.repo, plan.final_digest)
            if key not in done:
                done[key] = asyncio.ensure_future(one(job.repo, plan))
    try:
        await asyncio.gather(*done.values())
    except BaseException:
        for t in done.values():
            t.cancel()
        await asyncio.gather(*done.values(), return_exceptions=True)
        raise
    for job in jobs:
        for doc in job.image.manifests:
            await target.put_manifest(job.repo, doc.digest, doc)
    results: list[ImportResult] = []
    for job in jobs:
        top = job.image.top
        for tag in job.tags:
            await target.put_manifest(job.repo, tag, top)
        blobs = job.image.blobs
        results.append(
            ImportResult(
                repo=job.repo,
                tags=job.tags,
                digest=top.digest,
                media_type=top.media_type,
                size=sum(b.final_size for b in blobs)
                + sum(len(d.data) for d in job.image.manifests),
                layers=job.image.layer_count,
                reused=sum(
                    1
                    for b in blobs
                    if (job.repo, b.final_digest) in reused and b.media_type not in _CONFIGS
                ),
                notes=job.image.notes,
            )
        )
    return results


_CONFIGS = frozenset({mt.DOCKER_CONFIG, mt.OCI_CONFIG})


def summary_lines(results: list[ImportResult], target: str) -> list[str]:
    lines = []
    for r in results:
        names = ", ".join(f"{r.repo}:{t}" for t in r.tags)
        lines.append(
            f"imported {names} into {target}: digest {r.digest}, {human_size(r.size)}, "
            f"{r.layers} layers ({r.reused} already present)"
        )
    return lines


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


__all__ = [
    "ArchiveError",
    "ImportJob",
    "ImportResult",
    "default_workers",
    "plan_jobs",
    "publish",
    "summary_lines",
    "verify_all",
]
