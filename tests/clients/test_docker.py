"""Docker (a private dockerd) pushing to and pulling from the registry.

127.0.0.0/8 is always an insecure registry for docker, so plain HTTP on loopback works
without daemon configuration.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.clients import DockerDaemon, Skopeo, parse_docker_push_digest
from support.images import DOCKER_MANIFEST, ImageCache, TestImage, get_manifest
from support.servers import RegistryProcess, unique_repo

pytestmark = pytest.mark.clients

LOCAL_NAME = "cargohold-test/busybox:loaded"


@dataclass(frozen=True)
class LoadedImage:
    image: TestImage
    name: str  # local name in dockerd
    image_id: str  # docker's image ID (= config digest)


@pytest.fixture(scope="module")
def busybox_archive(
    skopeo: Skopeo, images: ImageCache, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TestImage, Path]:
    """The busybox test image as a docker-archive (made once by skopeo)."""
    image = images.get(seed=21, busybox=True)
    archive = tmp_path_factory.mktemp("docker") / "busybox.tar"
    skopeo.copy(image.oci_ref(), f"docker-archive:{archive}:{LOCAL_NAME}")
    return image, archive


@pytest.fixture
def loaded_image(dockerd: DockerDaemon, busybox_archive: tuple[TestImage, Path]) -> LoadedImage:
    """The busybox image ``docker load``-ed into the private dockerd (again if purged)."""
    image, archive = busybox_archive
    out = dockerd.docker("load", "-i", str(archive)).stdout
    assert LOCAL_NAME in out, out
    image_id = dockerd.docker("inspect", "--format", "{{.Id}}", LOCAL_NAME).stdout.strip()
    return LoadedImage(image=image, name=LOCAL_NAME, image_id=image_id)


def _purge(dockerd: DockerDaemon, image_id: str) -> None:
    """Delete the image and all its tags, so a pull has to fetch every blob."""
    dockerd.docker("rmi", "--force", image_id)
    gone = dockerd.docker("image", "inspect", image_id, check=False)
    assert gone.returncode != 0, f"{image_id} still present after rmi"


def _remove(dockerd: DockerDaemon, *refs: str) -> None:
    dockerd.docker("rmi", *refs)
    for ref in refs:
        gone = dockerd.docker("image", "inspect", ref, check=False)
        assert gone.returncode != 0, f"{ref} still present after rmi"


def test_docker_load_matches_built_image(dockerd: DockerDaemon, loaded_image: LoadedImage) -> None:
    # the docker-archive carries our config unchanged, so the image ID is its digest
    assert loaded_image.image_id == loaded_image.image.config_digest


def test_docker_push_pull_by_tag_and_digest(
    dockerd: DockerDaemon, server: RegistryProcess, loaded_image: LoadedImage
) -> None:
    repo = unique_repo("docker/busybox")
    ref = f"{server.host}/{repo}:v1"
    dockerd.docker("tag", loaded_image.name, ref)

    push = dockerd.docker("push", ref, logs=[server])
    digest = parse_docker_push_digest(push.stdout)
    assert f"{server.host}/{repo}@{digest}" in dockerd.repo_digests(ref)

    resp = get_manifest(server.url, repo, "v1")
    assert resp.status_code == 200, resp.text
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["Content-Type"].split(";")[0] == DOCKER_MANIFEST
    assert resp.json()["config"]["digest"] == loaded_image.image_id

    # pull by tag into a daemon that has nothing of the image any more
    _purge(dockerd, loaded_image.image_id)
    pull = dockerd.docker("pull", ref, logs=[server])
    assert "Pull complete" in pull.stdout, pull.stdout
    assert f"{server.host}/{repo}@{digest}" in dockerd.repo_digests(ref)
    assert dockerd.docker("inspect", "--format", "{{.Id}}", ref).stdout.strip() == (
        loaded_image.image_id
    )

    # pull by digest
    by_digest = f"{server.host}/{repo}@{digest}"
    _purge(dockerd, loaded_image.image_id)
    pull = dockerd.docker("pull", by_digest, logs=[server])
    assert digest in pull.stdout
    assert "Pull complete" in pull.stdout, pull.stdout
    assert dockerd.docker("inspect", "--format", "{{.Id}}", by_digest).stdout.strip() == (
        loaded_image.image_id
    )
    assert by_digest in dockerd.repo_digests(by_digest)
    _purge(dockerd, loaded_image.image_id)


def test_docker_push_second_tag_reuses_blobs(
    dockerd: DockerDaemon, server: RegistryProcess, loaded_image: LoadedImage
) -> None:
    """A second repository gets the layer by cross-repo mount (or upload) and the same digest."""
    first = f"{server.host}/{unique_repo('docker/mount-a')}:v1"
    second = f"{server.host}/{unique_repo('docker/mount-b')}:v1"
    dockerd.docker("tag", loaded_image.name, first)
    dockerd.docker("tag", loaded_image.name, second)
    digest_a = parse_docker_push_digest(dockerd.docker("push", first, logs=[server]).stdout)
    push_b = dockerd.docker("push", second, logs=[server])
    digest_b = parse_docker_push_digest(push_b.stdout)
    assert digest_a == digest_b
    assert "Mounted from" in push_b.stdout or "Layer already exists" in push_b.stdout, push_b.stdout
    _remove(dockerd, first, second)


def test_docker_run_pulled_image(
    dockerd: DockerDaemon, server: RegistryProcess, loaded_image: LoadedImage
) -> None:
    """The pulled layers are intact: the container sees the files the test image carries."""
    repo = unique_repo("docker/run")
    ref = f"{server.host}/{repo}:v1"
    dockerd.docker("tag", loaded_image.name, ref)
    dockerd.docker("push", ref, logs=[server])
    _purge(dockerd, loaded_image.image_id)
    dockerd.docker("pull", ref, logs=[server])

    proc = dockerd.docker(
        "run", "--rm", "--network", "none", ref, "cat", "/etc/cargohold-seed", check=False
    )
    if proc.returncode != 0 and "OCI runtime" in proc.stderr:
        pytest.skip(f"containers cannot run in this sandbox: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "21000"  # layer 0 of seed 21 (see support.images)
    _purge(dockerd, loaded_image.image_id)


def test_docker_pull_unknown_tag_fails(dockerd: DockerDaemon, server: RegistryProcess) -> None:
    ref = f"{server.host}/{unique_repo('docker/missing')}:nope"
    proc = dockerd.docker("pull", ref, check=False)
    assert proc.returncode != 0
    assert "not found" in (proc.stderr + proc.stdout).lower()


def test_docker_pull_multi_arch_index(
    dockerd: DockerDaemon, sk: Skopeo, server: RegistryProcess, images: ImageCache
) -> None:
    """docker resolves an OCI image index (pushed by skopeo) to the linux/amd64 manifest."""
    image = images.get(seed=22, multi_arch=True)
    assert image.index is not None
    repo = unique_repo("docker/multi")
    ref = f"{server.host}/{repo}:v1"
    sk.copy(image.oci_ref(), f"docker://{ref}", all_images=True)

    pull = dockerd.docker("pull", ref, logs=[server])
    assert image.index.digest in pull.stdout, pull.stdout
    assert f"{server.host}/{repo}@{image.index.digest}" in dockerd.repo_digests(ref)
    amd64 = next(p for p in image.platforms if p.architecture == "amd64")
    image_id = dockerd.docker("inspect", "--format", "{{.Id}}", ref).stdout.strip()
    assert image_id == amd64.config_digest
    _purge(dockerd, image_id)


def test_docker_push_pull_big_layers(
    dockerd: DockerDaemon,
    skopeo: Skopeo,
    server: RegistryProcess,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    """Multi-megabyte layers survive docker's streamed (chunked-encoding) PATCH uploads."""
    image = images.get(seed=23, layer_count=2, payload_size=12 * 1024 * 1024)
    archive = tmp_path / "big.tar"
    local = "cargohold-test/big:loaded"
    skopeo.copy(image.oci_ref(), f"docker-archive:{archive}:{local}")
    dockerd.docker("load", "-i", str(archive))

    name = f"{server.host}/{unique_repo('docker/big')}"
    dockerd.docker("tag", local, f"{name}:v1")
    digest = parse_docker_push_digest(dockerd.docker("push", f"{name}:v1", logs=[server]).stdout)
    _purge(dockerd, image.config_digest)

    by_digest = f"{name}@{digest}"
    pull = dockerd.docker("pull", by_digest, logs=[server])
    assert pull.stdout.count("Pull complete") == 2, pull.stdout
    # docker checked each layer against the config's diff_ids while registering it
    rootfs = dockerd.docker("inspect", "--format", "{{json .RootFS.Layers}}", by_digest).stdout
    assert json.loads(rootfs) == list(image.platforms[0].diff_ids)
    _purge(dockerd, image.config_digest)
