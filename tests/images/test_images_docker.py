"""Round trips with real daemons (the session's private dockerd and containerd; skipped without
them): ``docker save`` → ``cargohold import`` → pull, ``cargohold export`` → ``docker load``,
and an OCI export → ``ctr images import``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imagetools import cargohold, stored_manifest
from support.clients import Containerd, DockerDaemon, Skopeo
from support.images import ImageCache, sha256_digest
from support.servers import unique_repo

pytestmark = pytest.mark.clients


def _image_id(dockerd: DockerDaemon, ref: str) -> str:
    return dockerd.docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()


def test_docker_save_then_import_then_pull(
    images: ImageCache,
    dockerd: DockerDaemon,
    skopeo: Skopeo,
    make_registry: object,
    root: Path,
    tmp_path: Path,
) -> None:
    image = images.get(seed=501, busybox=True)
    name = f"{unique_repo('dsave')}:1"
    loadable = tmp_path / "in.tar"
    skopeo.copy(image.oci_ref(), f"docker-archive:{loadable}:{name}")
    dockerd.docker("load", "-i", str(loadable))
    image_id = _image_id(dockerd, name)
    assert image_id == image.config_digest

    saved = tmp_path / "saved.tar"
    dockerd.docker("save", "-o", str(saved), name)
    cargohold("import", saved, "--root", root)
    repo, tag = name.rsplit(":", 1)
    manifest = stored_manifest(root, repo, tag)
    assert manifest["config"]["digest"] == image_id  # the image ID survives

    server = make_registry(root=root)  # type: ignore[operator]
    sk = skopeo.with_logs(server)
    pulled = tmp_path / "pulled"
    sk.copy(f"docker://{server.host}/{name}", f"oci:{pulled}:x")
    config = sk.inspect(f"oci:{pulled}:x", extra=["--config"])
    assert config["rootfs"]["diff_ids"] == list(image.platforms[0].diff_ids)

    # and docker itself pulls it back from the served root with the same ID
    dockerd.docker("rmi", name)
    dockerd.docker("pull", f"{server.host}/{name}")
    assert _image_id(dockerd, f"{server.host}/{name}") == image_id


def test_export_then_docker_load(
    images: ImageCache, dockerd: DockerDaemon, root: Path, tmp_path: Path
) -> None:
    image = images.get(seed=502, busybox=True, layer_count=2)
    repo = unique_repo("dload")
    cargohold("import", image.layout, f"{repo}:v1", "--root", root)
    out = tmp_path / "export.tar"
    cargohold("export", f"{repo}:v1", "-o", out, "--root", root)
    loaded = dockerd.docker("load", "-i", str(out)).stdout
    assert f"{repo}:v1" in loaded
    assert _image_id(dockerd, f"{repo}:v1") == image.config_digest
    history = json.loads(
        dockerd.docker(
            "image", "inspect", "--format", "{{json .RootFS.Layers}}", f"{repo}:v1"
        ).stdout
    )
    assert history == list(image.platforms[0].diff_ids)
    # what docker saves from it imports to the same config again
    resaved = tmp_path / "resaved.tar"
    dockerd.docker("save", "-o", str(resaved), f"{repo}:v1")
    again = tmp_path / "again"
    cargohold("import", resaved, "--root", again)
    assert stored_manifest(again, repo, "v1")["config"]["digest"] == image.config_digest
    assert sha256_digest(image.platforms[0].config.data) == image.config_digest


def test_uncompressed_layers_pull_with_docker(
    images: ImageCache,
    dockerd: DockerDaemon,
    skopeo: Skopeo,
    make_registry: object,
    root: Path,
    tmp_path: Path,
) -> None:
    """``--compression none`` stores the saved tars as they are; docker pulls them all the same."""
    image = images.get(seed=503, busybox=True)
    repo = unique_repo("rawlayers")
    saved = tmp_path / "saved.tar"
    skopeo.copy(image.oci_ref(), f"docker-archive:{saved}:{repo}:1")
    cargohold("import", saved, "--root", root, "--compression", "none")
    layer = stored_manifest(root, repo, "1")["layers"][0]
    assert layer["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar"
    server = make_registry(root=root)  # type: ignore[operator]
    dockerd.docker("pull", f"{server.host}/{repo}:1")
    assert _image_id(dockerd, f"{server.host}/{repo}:1") == image.config_digest


def test_oci_export_imports_into_containerd(
    images: ImageCache, containerd: Containerd, root: Path, tmp_path: Path
) -> None:
    """``ctr images import`` reads the layout's io.containerd.image.name; digests are kept."""
    image = images.get(seed=504, multi_arch=True)
    repo = unique_repo("ctrimport")
    cargohold("import", image.layout, f"{repo}:m", "--root", root)
    out = tmp_path / "oci.tar"
    cargohold("export", f"{repo}:m", "--format", "oci", "-o", out, "--root", root)
    containerd.ctr("images", "import", "--all-platforms", str(out))
    assert containerd.image_digest(f"{repo}:m") == image.index_digest
