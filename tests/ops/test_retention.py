"""Retention policies: dry-run report, then applied by the online garbage collection."""

from __future__ import annotations

import json
import os
import time

import requests
from support.images import get_manifest, push_image
from support.servers import free_port, unique_repo

from .helpers import (
    V2,
    age_store,
    blob_digests,
    image_digests,
    revision_digests,
    run_cli,
    verify_image,
    wait_debug,
)


def _set_pushed(root, repo: str, tag: str, when: float) -> None:
    link = root / V2 / "repositories" / repo / "_manifests" / "tags" / tag / "current" / "link"
    os.utime(link, (when, when))


def test_retention_dry_run_then_apply(make_registry, images):
    debug = f"127.0.0.1:{free_port()}"
    config = {
        "http": {"debug": {"addr": debug}},
        "storage": {"maintenance": {"gc": {"graceperiod": "0s", "settle": "0s"}}},
        "retention": {
            "pullflushinterval": "1s",
            "policies": [
                {
                    "repositories": "retkeep/*",
                    "keep_last": 2,
                    "keep_tags": "^v[0-9]",
                    "delete_untagged": True,
                },
                {"repositories": ["retwithin/*"], "keepwithin": "1h"},
            ],
        },
    }
    reg = make_registry(config=config)
    wait_debug(debug)
    keep, within, untouched = unique_repo("retkeep"), unique_repo("retwithin"), unique_repo("other")
    tagged = {f"t{i}": images.get(1000 + i) for i in range(1, 5)}
    tagged["v1"] = images.get(1010)
    for tag, image in tagged.items():
        push_image(reg.url, keep, image, tag=tag)
    timed = {"old1": images.get(1020), "old2": images.get(1021), "new": images.get(1022)}
    for tag, image in timed.items():
        push_image(reg.url, within, image, tag=tag)
    push_image(reg.url, untouched, images.get(1030), tag="old")
    age_store(reg.root)
    now = time.time()
    for i in range(1, 5):  # t1 oldest ... t4 newest, all days ago
        _set_pushed(reg.root, keep, f"t{i}", now - 86400 * (10 - i))
    _set_pushed(reg.root, keep, "v1", now - 86400 * 30)
    _set_pushed(reg.root, within, "new", now)
    # a pull of old2 keeps it: recorded in memory, written within the flush interval
    assert get_manifest(reg.url, within, "old2").status_code == 200
    pulls = reg.root / V2 / "repositories" / within / "_pulls" / "old2"
    deadline = time.monotonic() + 15
    while not pulls.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pulls.exists(), "the pull was never recorded"

    # dry run, over HTTP and from the command line
    report = requests.get(f"http://{debug}/admin/retention", timeout=30).json()
    assert report["dryRun"] is True
    by_repo = {r["repository"]: r for r in report["repositories"]}
    assert {t["tag"] for t in by_repo[keep]["deleted"]} == {"t1", "t2"}
    assert {t["tag"] for t in by_repo[keep]["kept"]} == {"t3", "t4", "v1"}
    assert {t["tag"] for t in by_repo[within]["deleted"]} == {"old1"}
    kept_within = {t["tag"]: t["reasons"] for t in by_repo[within]["kept"]}
    assert kept_within == {"old2": ["pulled recently"], "new": ["pushed recently"]}
    assert untouched not in by_repo
    assert {(m["repository"], m["digest"]) for m in report["untaggedManifests"]} == {
        (keep, tagged["t1"].digest),
        (keep, tagged["t2"].digest),
    }
    cli = run_cli("retention", str(reg.config_path)).stdout
    assert "t1" in cli and "would delete" in cli and "2 untagged manifests" in cli
    assert blob_digests(reg.root) >= image_digests(tagged["t1"]), "a dry run deleted something"

    # applied by the online garbage collection
    result = requests.post(f"http://{debug}/admin/gc?wait=true", timeout=60).json()
    assert not result["error"], result
    assert result["retention"]["tagsDeleted"] == 3
    tags = requests.get(f"{reg.url}/v2/{keep}/tags/list", timeout=10).json()["tags"]
    assert sorted(tags) == ["t3", "t4", "v1"]
    assert sorted(requests.get(f"{reg.url}/v2/{within}/tags/list").json()["tags"]) == [
        "new",
        "old2",
    ]
    on_disk = blob_digests(reg.root)
    for tag in ("t1", "t2"):
        assert not image_digests(tagged[tag]) & on_disk
        assert tagged[tag].digest not in revision_digests(reg.root, keep)
    # without delete_untagged the manifest stays, reachable by digest, and keeps its blobs
    assert image_digests(timed["old1"]) <= on_disk
    assert get_manifest(reg.url, within, timed["old1"].digest).status_code == 200
    for tag in ("t3", "t4", "v1"):
        verify_image(reg.url, keep, tag, tagged[tag])
    verify_image(reg.url, untouched, "old", images.get(1030))
    print(json.dumps(result["retention"]["tagsDeleted"]))


def test_retention_apply_from_the_command_line(make_registry, images, tmp_path):
    config = {
        "storage": {"maintenance": {"gc": {"graceperiod": "0s"}}},
        "retention": {"policies": [{"repositories": "*", "keeplast": 1, "deleteuntagged": True}]},
    }
    reg = make_registry(config=config)
    repo = unique_repo("retcli")
    first, second = images.get(1040), images.get(1041)
    push_image(reg.url, repo, first, tag="a")
    push_image(reg.url, repo, second, tag="b")
    age_store(reg.root)
    _set_pushed(reg.root, repo, "a", time.time() - 200)
    _set_pushed(reg.root, repo, "b", time.time() - 100)
    reg.stop()
    out = json.loads(run_cli("retention", str(reg.config_path), "--apply", "--json").stdout)
    assert out["tagsDeleted"] == 1
    assert out["untaggedManifests"] == [{"repository": repo, "digest": first.digest}]
    assert first.digest not in revision_digests(reg.root, repo)
    # blobs go with the next garbage collection
    assert image_digests(first) <= blob_digests(reg.root)
    run_cli("garbage-collect", str(reg.config_path), "-q")
    assert not (image_digests(first) - image_digests(second)) & blob_digests(reg.root)
