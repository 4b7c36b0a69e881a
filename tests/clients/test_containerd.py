"""containerd's ``ctr`` (a private containerd) pulling and pushing a multi-arch image."""

from __future__ import annotations

import json

import pytest
import requests
from support.clients import Containerd, Skopeo
from support.images import OCI_INDEX, ImageCache, TestImage, get_manifest
from support.servers import RegistryProcess, unique_repo

pytestmark = pytest.mark.clients


def _content(containerd: Containerd) -> set[str]:
    return set(containerd.ctr("content", "ls", "--quiet").stdout.split())


def _forget(containerd: Containerd, image: TestImage, *refs: str) -> None:
    """Remove the images and their content, so the next pull has to fetch every blob."""
    if refs:
        containerd.ctr("images", "rm", "--sync", *refs)
    leftover = [b.digest for b in image.all_blobs() if b.digest in _content(containerd)]
    if leftover:
        containerd.ctr("content", "rm", *leftover)
    assert not {b.digest for b in image.all_blobs()} & _content(containerd)


def test_ctr_pull_all_platforms_and_push(
    containerd: Containerd, sk: Skopeo, server: RegistryProcess, images: ImageCache
) -> None:
    image = images.get(seed=31, multi_arch=True)
    assert image.index is not None
    source = f"{server.host}/{unique_repo('ctr/src')}:v1"
    sk.copy(image.oci_ref(), f"docker://{source}", all_images=True)
    _forget(containerd, image)  # content left by a run against another server

    pull = containerd.ctr(
        "images", "pull", "--plain-http", "--all-platforms", source, logs=[server]
    )
    for platform in image.manifest_digests:
        assert f"unpacking {platform} {image.index.digest}" in pull.stdout, pull.stdout
    assert containerd.image_digest(source) == image.index.digest
    content = _content(containerd)
    missing = [b.digest for b in image.all_blobs() if b.digest not in content]
    assert not missing, f"not fetched by ctr pull: {missing}"

    dest_repo = unique_repo("ctr/dest")
    dest = f"{server.host}/{dest_repo}:pushed"
    containerd.ctr("images", "tag", source, dest)
    containerd.ctr("images", "push", "--plain-http", dest, logs=[server])

    resp = get_manifest(server.url, dest_repo, "pushed")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Docker-Content-Digest"] == image.index.digest
    assert resp.content == image.index.data
    assert json.loads(resp.content)["mediaType"] == OCI_INDEX
    for platform in image.platforms:
        m = get_manifest(server.url, dest_repo, platform.manifest_digest)
        assert m.status_code == 200, f"{platform.architecture}: {m.status_code} {m.text}"
        assert m.content == platform.manifest.data
        for blob in platform.blobs:
            got = requests.get(f"{server.url}/v2/{dest_repo}/blobs/{blob.digest}", timeout=30)
            assert got.status_code == 200, f"{blob.digest}: {got.status_code}"
            assert got.content == blob.data

    _forget(containerd, image, source, dest)
    assert source not in containerd.ctr("images", "ls", "--quiet").stdout.split()


def test_ctr_pull_single_platform(
    containerd: Containerd, sk: Skopeo, server: RegistryProcess, images: ImageCache
) -> None:
    """Pull by digest, one platform only (what a node does when it starts a container)."""
    image = images.get(seed=32, multi_arch=True)
    assert image.index is not None
    repo = unique_repo("ctr/platform")
    sk.copy(image.oci_ref(), f"docker://{server.host}/{repo}:v1", all_images=True)

    ref = f"{server.host}/{repo}@{image.index.digest}"
    _forget(containerd, image)
    pull = containerd.ctr(
        "images", "pull", "--plain-http", "--platform", "linux/arm64", ref, logs=[server]
    )
    assert "unpacking linux/arm64" in pull.stdout, pull.stdout
    content = _content(containerd)
    arm64 = next(p for p in image.platforms if p.architecture == "arm64")
    assert arm64.manifest_digest in content
    assert all(layer.digest in content for layer in arm64.layers)
    amd64 = next(p for p in image.platforms if p.architecture == "amd64")
    assert amd64.layers[0].digest not in content, "fetched a layer of a platform not asked for"
    _forget(containerd, image, ref)
