"""An online garbage collection leaves nothing of its walk behind in the process that ran it.

The worker that runs the online GC grew in the soak (issue 17 point 10) because a collection's
one-off paths and file copies outlived it in that worker's caches (the parsed-path lru_cache,
the small-file cache), pinning the memory its peak had taken. Here a store is built by a real
cargohold over HTTP, then collected by the real collector on the real filesystem driver, as a
worker's admin service does, and the caches are compared before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import requests
from support.images import ImageCache, push_image
from support.servers import unique_repo

from cargohold.config import load_config
from cargohold.digest import Digest
from cargohold.registry import gcchild
from cargohold.registry.gc import GarbageCollector, GCBusy, GCOptions
from cargohold.storage import paths
from cargohold.storage.filesystem import FilesystemDriver

from .helpers import blob_digests, image_digests


def _age(root: Path, seconds: float) -> None:
    """Every file written ``seconds`` ago: settled for the small-file cache (which keeps only
    files older than two seconds) and past any grace period."""
    when = time.time() - seconds
    for directory, _dirs, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(directory, name), (when, when))


def _store_with_garbage(make_registry, images: ImageCache, root: Path, seed: int):
    """A store with a tagged image and a deleted one (its manifest and 2 layers garbage)."""
    reg = make_registry(root=root)
    repo = unique_repo("gcmem")
    kept, gone = images.get(seed), images.get(seed + 1, layer_count=2)
    push_image(reg.url, repo, kept, tag="kept")
    push_image(reg.url, repo, gone, tag="gone")
    resp = requests.delete(f"{reg.url}/v2/{repo}/manifests/{gone.digest}", timeout=30)
    assert resp.status_code == 202, resp.text
    reg.stop()
    _age(root, 600)
    return repo, kept, gone


def test_a_collection_in_a_child_process_sweeps_and_reports_what_it_deleted(
    make_registry, images: ImageCache, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    _repo, kept, gone = _store_with_garbage(make_registry, images, root, 221)
    garbage = image_digests(gone) - image_digests(kept)
    config = load_config(None, {}, default_root=str(root))
    assert gcchild.usable(config)
    options = GCOptions(online=True, delete_untagged=True, settle=0.0)

    report = asyncio.run(gcchild.collect(config, options))

    assert report.error is None and report.online
    assert set(report.blobs_deleted) == garbage
    assert report.manifests_deleted == []  # deleted by the API: only its blobs were left
    assert {str(d) for d in gcchild.deleted_digests(report)} == garbage
    assert not garbage & blob_digests(root)
    assert image_digests(kept) <= blob_digests(root)
    assert not (root / paths.GC_LEASE.lstrip("/")).exists(), "the child released its lease"

    # a refusal in the child (another collection holds the lease) is raised in the caller
    lease = root / paths.GC_LEASE.lstrip("/")
    lease.write_text(json.dumps({"owner": "elsewhere", "expires": time.time() + 600}))
    with pytest.raises(GCBusy, match="elsewhere"):
        asyncio.run(gcchild.collect(config, options))


def test_online_gc_leaves_the_path_and_small_file_caches_as_it_found_them(
    make_registry, images: ImageCache, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    repo, kept, gone = _store_with_garbage(make_registry, images, root, 211)
    garbage = image_digests(gone) - image_digests(kept)
    assert garbage and garbage <= blob_digests(root)

    driver = FilesystemDriver(str(root))
    request_link = paths.tag_current_link(repo, "kept")
    # what a request leaves in the caches: a tag link read, a path parsed
    assert driver.get_content_sync(request_link).decode() == kept.digest
    paths.parse(request_link)
    small_before = dict(driver._small)
    parse_before = paths.parse.cache_info()
    assert any(k.endswith(request_link) for k in small_before)

    report = asyncio.run(
        GarbageCollector(driver).run(GCOptions(online=True, delete_untagged=True, settle=0.0))
    )

    assert report.error is None
    assert set(report.blobs_deleted) >= garbage, "the collection did its work"
    assert not garbage & blob_digests(root)
    assert image_digests(kept) <= blob_digests(root)
    # the walk read every tag link and manifest and parsed every path; none of it stayed
    assert dict(driver._small) == small_before
    after = paths.parse.cache_info()
    assert (after.misses, after.currsize) == (parse_before.misses, parse_before.currsize)


def test_uncached_parse_answers_as_the_cached_one() -> None:
    for path in (
        paths.blob_data(Digest("sha256", "ab" * 32)),
        paths.tag_current_link("a/b", "v1"),
        paths.layer_link("a/b", Digest("sha256", "cd" * 32)),
        "/docker/registry/v2/repositories/a/../x",
    ):
        assert paths.parse_uncached(path) == paths.parse(path)
    assert paths.parse_uncached("/docker/registry/v2/repositories/a/../x") is paths.UNKNOWN
