"""skopeo (containers/image: the library of podman and buildah) against the registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support.clients import Skopeo
from support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    ImageCache,
    get_manifest,
    layout_blob,
    layout_descriptor,
)
from support.servers import RegistryProcess, unique_repo

pytestmark = pytest.mark.clients


def assert_manifest_served(
    server: RegistryProcess, repo: str, reference: str, digest: str, media_type: str
) -> bytes:
    """GET the manifest: 200, the expected digest header and Content-Type; returns the body."""
    resp = get_manifest(server.url, repo, reference)
    assert resp.status_code == 200, f"GET {repo}:{reference} -> {resp.status_code} {resp.text}"
    assert resp.headers.get("Docker-Content-Digest") == digest
    assert resp.headers.get("Content-Type", "").split(";")[0] == media_type
    body: bytes = resp.content
    return body


def test_copy_single_image_roundtrip(
    sk: Skopeo, server: RegistryProcess, images: ImageCache, tmp_path: Path
) -> None:
    image = images.get(seed=11)
    repo = unique_repo("skopeo/single")
    dest = f"docker://{server.host}/{repo}:v1"

    pushed = sk.copy_with_digest(image.oci_ref(), dest)
    assert pushed == image.digest
    body = assert_manifest_served(server, repo, "v1", image.digest, OCI_MANIFEST)
    assert body == image.platforms[0].manifest.data

    back = tmp_path / "back"
    sk.copy(dest, f"oci:{back}:v1")
    desc = layout_descriptor(back, "v1")
    assert desc["digest"] == image.digest
    assert desc["mediaType"] == OCI_MANIFEST
    assert layout_blob(back, image.config_digest) == image.platforms[0].config.data
    for layer in image.platforms[0].layers:
        assert layout_blob(back, layer.digest) == layer.data


def test_copy_multi_arch_index_with_all(
    sk: Skopeo, server: RegistryProcess, images: ImageCache, tmp_path: Path
) -> None:
    image = images.get(seed=12, multi_arch=True)
    assert image.index is not None
    repo = unique_repo("skopeo/multi")
    dest = f"docker://{server.host}/{repo}:v1"

    pushed = sk.copy_with_digest(image.oci_ref(), dest, all_images=True)
    assert pushed == image.index.digest

    raw = sk.inspect_raw(dest)
    assert raw == image.index.data, "index bytes changed on the way through the registry"
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    assert_manifest_served(server, repo, "v1", image.index.digest, OCI_INDEX)
    for platform in image.platforms:
        assert_manifest_served(server, repo, platform.manifest_digest, platform.manifest_digest,
                               OCI_MANIFEST)  # fmt: skip
        # skopeo picks the platform's manifest out of the index it fetched
        info = sk.inspect(dest, extra=["--override-arch", platform.architecture])
        assert info["Architecture"] == platform.architecture
        assert info["Layers"] == platform.layer_digests

    back = tmp_path / "back"
    sk.copy(dest, f"oci:{back}:v1", all_images=True)
    assert layout_descriptor(back, "v1")["digest"] == image.index.digest
    for platform in image.platforms:
        assert layout_blob(back, platform.manifest_digest) == platform.manifest.data


def test_copy_from_docker_archive(
    sk: Skopeo, server: RegistryProcess, images: ImageCache, tmp_path: Path
) -> None:
    image = images.get(seed=13)
    archive = tmp_path / "image.tar"
    sk.copy(image.oci_ref(), f"docker-archive:{archive}:cargohold/archive:v1")
    repo = unique_repo("skopeo/archive")
    dest = f"docker://{server.host}/{repo}:v1"

    pushed = sk.copy_with_digest(f"docker-archive:{archive}", dest)
    manifest = json.loads(assert_manifest_served(server, repo, "v1", pushed, DOCKER_MANIFEST))
    # a docker-archive holds the same config; layers are recompressed on the way
    assert manifest["config"]["digest"] == image.config_digest
    assert len(manifest["layers"]) == len(image.layer_digests)
    info = sk.inspect(dest)
    assert info["Digest"] == pushed
    assert info["Labels"]["org.cargohold.test.seed"] == "13"

    back = tmp_path / "back"
    sk.copy(dest, f"oci:{back}:v1")  # converted to OCI on the way: follow the new manifest
    oci_manifest = json.loads(layout_blob(back, layout_descriptor(back, "v1")["digest"]))
    config = json.loads(layout_blob(back, oci_manifest["config"]["digest"]))
    assert config["rootfs"]["diff_ids"] == list(image.platforms[0].diff_ids)


def test_inspect(sk: Skopeo, server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=14, layer_count=2)
    repo = unique_repo("skopeo/inspect")
    dest = f"docker://{server.host}/{repo}:v1"
    sk.copy(image.oci_ref(), dest)

    info = sk.inspect(dest)
    assert info["Digest"] == image.digest
    assert info["Name"] == f"{server.host}/{repo}"
    assert info["RepoTags"] == ["v1"]
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    assert info["Layers"] == image.layer_digests
    assert info["Labels"] == {"org.cargohold.test.seed": "14"}
    config = json.loads(sk.run("inspect", "--tls-verify=false", "--config", dest).stdout)
    assert config["rootfs"]["diff_ids"] == list(image.platforms[0].diff_ids)


def test_list_tags(sk: Skopeo, server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=15)
    repo = unique_repo("skopeo/tags")
    tags = ["v1", "v2", "latest", "1.0.0"]
    for tag in tags:
        sk.copy(image.oci_ref(), f"docker://{server.host}/{repo}:{tag}")

    listed = sk.list_tags(f"docker://{server.host}/{repo}")
    assert sorted(listed) == sorted(tags)


def test_delete(sk: Skopeo, server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=16)
    repo = unique_repo("skopeo/delete")
    dest = f"docker://{server.host}/{repo}:doomed"
    sk.copy(image.oci_ref(), dest)
    sk.copy(image.oci_ref(), f"docker://{server.host}/{repo}:other")
    assert get_manifest(server.url, repo, image.digest).status_code == 200

    sk.delete(dest)  # resolves the tag, then DELETE /v2/<repo>/manifests/<digest>

    for reference in (image.digest, "doomed", "other"):
        resp = get_manifest(server.url, repo, reference)
        assert resp.status_code == 404, f"{reference}: {resp.status_code} {resp.text}"
        assert resp.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert sk.list_tags(f"docker://{server.host}/{repo}") == []
    # blobs stay (deletion of blobs is the garbage collector's job)
    blob = requests.head(f"{server.url}/v2/{repo}/blobs/{image.config_digest}", timeout=30)
    assert blob.status_code == 200


def test_concurrent_copies_to_multi_worker_server(
    make_registry: Callable[..., RegistryProcess],
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    """Uploads whose requests land on different worker processes still complete."""
    server = make_registry(workers=2)
    sk = skopeo.with_logs(server)
    image = images.get(seed=17, multi_arch=True, layer_count=3)
    repos = [unique_repo("skopeo/workers") for _ in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        pushed = list(
            pool.map(
                lambda repo: sk.copy_with_digest(
                    image.oci_ref(), f"docker://{server.host}/{repo}:v1", all_images=True
                ),
                repos,
            )
        )
    assert pushed == [image.digest] * len(repos)

    for i, repo in enumerate(repos):
        back = tmp_path / f"back{i}"
        sk.copy(f"docker://{server.host}/{repo}:v1", f"oci:{back}:v1", all_images=True)
        assert layout_descriptor(back, "v1")["digest"] == image.digest
        for platform in image.platforms:
            for layer in platform.layers:
                assert layout_blob(back, layer.digest) == layer.data


def test_copy_as_docker_manifest_list(
    sk: Skopeo, server: RegistryProcess, images: ImageCache, tmp_path: Path
) -> None:
    """``--format v2s2`` converts to Docker schema 2: a manifest list of v2 manifests."""
    image = images.get(seed=18, multi_arch=True)
    repo = unique_repo("skopeo/v2s2")
    dest = f"docker://{server.host}/{repo}:v1"

    pushed = sk.copy_with_digest(image.oci_ref(), dest, all_images=True, extra=["--format", "v2s2"])
    top = json.loads(assert_manifest_served(server, repo, "v1", pushed, DOCKER_MANIFEST_LIST))
    assert top["mediaType"] == DOCKER_MANIFEST_LIST
    assert {m["platform"]["architecture"] for m in top["manifests"]} == {"amd64", "arm64"}
    for child in top["manifests"]:
        assert child["mediaType"] == DOCKER_MANIFEST
        body = assert_manifest_served(
            server, repo, child["digest"], child["digest"], DOCKER_MANIFEST
        )
        assert len(body) == child["size"]
    assert sk.inspect_raw(dest) == get_manifest(server.url, repo, pushed).content

    back = tmp_path / "back"
    sk.copy(dest, f"oci:{back}:v1", all_images=True)
    # only the manifests were rewritten: the gzip layers are the very same blobs
    for platform in image.platforms:
        for layer in platform.layers:
            assert layout_blob(back, layer.digest) == layer.data


def test_copy_between_repositories(sk: Skopeo, server: RegistryProcess, images: ImageCache) -> None:
    """Registry-to-registry copy on one host: skopeo mounts the blobs from the source repo."""
    image = images.get(seed=19, multi_arch=True)
    src_repo, dst_repo = unique_repo("skopeo/from"), unique_repo("skopeo/to")
    src = f"docker://{server.host}/{src_repo}:v1"
    sk.copy(image.oci_ref(), src, all_images=True)

    for blob in image.all_blobs():
        if blob.media_type in (OCI_MANIFEST, OCI_INDEX):
            continue
        head = requests.head(f"{server.url}/v2/{dst_repo}/blobs/{blob.digest}", timeout=30)
        assert head.status_code == 404, "blob visible in a repository it was never pushed to"

    pushed = sk.copy_with_digest(src, f"docker://{server.host}/{dst_repo}:v1", all_images=True)
    assert pushed == image.digest
    for platform in image.platforms:
        for blob in platform.blobs:
            got = requests.get(f"{server.url}/v2/{dst_repo}/blobs/{blob.digest}", timeout=30)
            assert got.status_code == 200, f"{blob.digest}: {got.status_code}"
            assert got.content == blob.data
