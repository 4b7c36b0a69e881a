"""``cargohold garbage-collect``: registry:2's semantics, on a store registry:2 also uses."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from support.images import ImageCache, push_image
from support.servers import unique_repo

from .helpers import (
    V2,
    blob_digests,
    image_digests,
    layer_links,
    revision_digests,
    run_cli,
    verify_image,
    write_config,
)


def _delete(url: str, repo: str, reference: str) -> None:
    resp = requests.delete(f"{url}/v2/{repo}/manifests/{reference}", timeout=30)
    assert resp.status_code == 202, resp.text


def _populate(make_registry, images: ImageCache, root: Path) -> dict:
    """Tagged A, B, multi-arch C; D deleted (garbage); E untagged (kept unless -m)."""
    reg = make_registry(root=root)
    repo, other = unique_repo("gc"), unique_repo("gc2")
    imgs = {
        "a": images.get(101),
        "b": images.get(102, layer_count=2),
        "c": images.get(103, multi_arch=True),
        "d": images.get(104),
        "e": images.get(105),
    }
    for key in "abcd":
        push_image(reg.url, repo, imgs[key], tag=key)
    push_image(reg.url, other, imgs["e"], tag="e")
    _delete(reg.url, repo, imgs["d"].digest)  # manifest gone: its blobs are garbage
    _delete(reg.url, other, "e")  # untagged: kept, unless --delete-untagged
    reg.stop()
    return {"repo": repo, "other": other, "images": imgs}


def test_offline_gc_follows_registry2_semantics(make_registry, images, tmp_path):
    root = tmp_path / "store"
    state = _populate(make_registry, images, root)
    repo, other, imgs = state["repo"], state["other"], state["images"]
    config = write_config(tmp_path / "config.yml", root)
    before = blob_digests(root)
    garbage_d = image_digests(imgs["d"])
    assert garbage_d <= before

    dry = run_cli("garbage-collect", str(config), "--dry-run")
    assert blob_digests(root) == before, "a dry run deleted something"
    for digest in garbage_d:
        assert f"blob eligible for deletion: {digest}" in dry.stdout
    assert f"{repo}: marking manifest {imgs['a'].digest}" in dry.stdout

    run_cli("garbage-collect", str(config), "--quiet")
    after = blob_digests(root)
    assert after == before - garbage_d
    assert image_digests(imgs["e"]) <= after, "untagged manifests stay without -m"
    assert not (garbage_d & layer_links(root, repo)), "links to swept blobs must go"

    run_cli("garbage-collect", str(config), "--delete-untagged")
    final = blob_digests(root)
    assert final == after - image_digests(imgs["e"])
    assert imgs["e"].digest not in revision_digests(root, other)
    # the index's children are untagged, yet kept with their layers
    for key in "abc":
        assert image_digests(imgs[key]) <= final

    server = make_registry(root=root)
    for key in "abc":
        verify_image(server.url, repo, key, imgs[key])
    # content GC deleted is pushed again (uploaded, not assumed present) and pulls work
    push_image(server.url, repo, imgs["d"], tag="d-again")
    verify_image(server.url, repo, "d-again", imgs["d"])


def test_json_report_counts(make_registry, images, tmp_path):
    root = tmp_path / "store"
    state = _populate(make_registry, images, root)
    config = write_config(tmp_path / "config.yml", root)
    import json

    report = json.loads(run_cli("garbage-collect", str(config), "-m", "--json").stdout)
    expected = image_digests(state["images"]["d"]) | image_digests(state["images"]["e"])
    assert set(report["blobsDeleted"]) == expected
    assert report["manifestsDeleted"] == [
        {"repository": state["other"], "digest": state["images"]["e"].digest}
    ]
    assert report["bytesFreed"] == sum(b.size for k in "de" for b in state["images"][k].all_blobs())


def test_store_collected_by_cargohold_is_served_by_the_reference(
    make_registry, make_reference_registry, images, tmp_path
):
    root = tmp_path / "store"
    state = _populate(make_registry, images, root)
    config = write_config(tmp_path / "config.yml", root)
    run_cli("garbage-collect", str(config), "--delete-untagged", "--quiet")
    reference = make_reference_registry(root=root)
    for key in "abc":
        verify_image(reference.url, state["repo"], key, state["images"][key])
    assert requests.get(f"{reference.url}/v2/{state['other']}/manifests/e").status_code == 404


def test_store_collected_by_the_reference_is_served_by_cargohold(make_registry, images, tmp_path):
    if shutil.which("docker-registry") is None:
        pytest.skip("reference registry binary `docker-registry` is not installed")
    root = tmp_path / "store"
    reg = make_registry(root=root)
    repo = unique_repo("refgc")
    keep, drop, untag = images.get(111), images.get(112), images.get(113)
    push_image(reg.url, repo, keep, tag="keep")
    push_image(reg.url, repo, drop, tag="drop")
    push_image(reg.url, repo, untag, tag="untag")
    _delete(reg.url, repo, drop.digest)
    _delete(reg.url, repo, "untag")
    reg.stop()
    config = write_config(tmp_path / "config.yml", root)
    proc = subprocess.run(
        ["docker-registry", "garbage-collect", "--delete-untagged", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (image_digests(drop) | image_digests(untag)) & blob_digests(root)
    server = make_registry(root=root)
    verify_image(server.url, repo, "keep", keep)
    # registry:2 leaves _layers links to the blobs it deleted: cargohold must not be fooled
    assert (root / V2 / "repositories" / repo / "_layers").exists()
    head = requests.head(f"{server.url}/v2/{repo}/blobs/{drop.layer_digests[0]}", timeout=10)
    assert head.status_code == 404
    push_image(server.url, repo, drop, tag="drop-again")
    verify_image(server.url, repo, "drop-again", drop)
    # and cargohold's own collection of that store agrees that nothing more is garbage
    report = run_cli("garbage-collect", str(config), "--dry-run", "-m").stdout
    assert "0 blobs and 0 manifests eligible for deletion" in report
