"""``cargohold import`` into a local storage root (offline), checked by serving the root and pulling
with skopeo: what the command wrote must be exactly what a registry serves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from imagetools import (
    blob_bytes,
    cargohold,
    docker_archive,
    merge_docker_archives,
    repo_dir,
    revisions_of,
    stored_manifest,
    tagged_digest,
    tags_of,
    tar_directory,
)
from support.clients import Skopeo
from support.images import (
    REF_NAME_ANNOTATION,
    ImageCache,
    build_image,
    canonical_json,
    sha256_digest,
    write_layout,
)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def _pull_digest(skopeo: Skopeo, host: str, ref: str) -> str:
    return sha256_digest(skopeo.inspect_raw(f"docker://{host}/{ref}"))


def test_oci_layout_directory_round_trips_through_a_served_root(
    images: ImageCache, make_registry: Any, skopeo: Skopeo, root: Path, tmp_path: Path
) -> None:
    image = images.get(seed=101, layer_count=2)
    out = cargohold("import", image.layout, "team/app:1.0", "--root", root).stdout
    assert "imported team/app:1.0" in out and image.digest in out
    assert tagged_digest(root, "team/app", "1.0") == image.digest

    server = make_registry(root=root)
    sk = skopeo.with_logs(server)
    assert _pull_digest(sk, server.host, "team/app:1.0") == image.digest
    pulled = tmp_path / "pulled"
    sk.copy(f"docker://{server.host}/team/app:1.0", f"oci:{pulled}:x")
    assert sk.inspect(f"oci:{pulled}:x")["Layers"] == image.layer_digests


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "tar.gz"])
def test_oci_layout_tar_keeps_every_digest(
    images: ImageCache, root: Path, tmp_path: Path, compress: bool
) -> None:
    image = images.get(seed=102)
    archive = tar_directory(image.layout, tmp_path / "layout.tar", compress=compress)
    cargohold("import", archive, "oci/tarred", "--root", root)
    # no TAG given: the layout's ref name is the tag
    assert tags_of(root, "oci/tarred") == [image.tag]
    assert tagged_digest(root, "oci/tarred", image.tag) == image.digest


def test_docker_archive_gets_a_gzip_manifest_with_the_same_image_id(
    images: ImageCache, make_registry: Any, skopeo: Skopeo, root: Path, tmp_path: Path
) -> None:
    image = images.get(seed=103, layer_count=2)
    archive = docker_archive(skopeo, image, tmp_path / "saved.tar", "shop/web:2")
    out = cargohold("import", archive, "--root", root).stdout
    assert "imported shop/web:2" in out

    manifest = stored_manifest(root, "shop/web", "2")
    assert manifest["mediaType"] == DOCKER_MANIFEST
    # the config (and so the image ID) is byte for byte the one that was saved
    assert manifest["config"]["digest"] == image.config_digest
    assert blob_bytes(root, image.config_digest) == image.platforms[0].config.data
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_LAYER_GZIP] * 2

    server = make_registry(root=root)
    sk = skopeo.with_logs(server)
    pulled = tmp_path / "pulled"
    sk.copy(f"docker://{server.host}/shop/web:2", f"oci:{pulled}:x")
    config = json.loads(blob_bytes(root, image.config_digest))
    assert config["rootfs"]["diff_ids"] == list(image.platforms[0].diff_ids)

    # compression is deterministic: the same archive imports to the same digest again
    again = tmp_path / "again"
    again.mkdir()
    cargohold("import", archive, "--root", again)
    assert tagged_digest(again, "shop/web", "2") == tagged_digest(root, "shop/web", "2")


def test_docker_archive_uncompressed_layers_are_the_saved_tars(
    images: ImageCache, skopeo: Skopeo, root: Path, tmp_path: Path
) -> None:
    image = images.get(seed=104)
    archive = docker_archive(skopeo, image, tmp_path / "saved.tar", "raw/layers:1")
    cargohold("import", archive, "--root", root, "--compression", "none")
    manifest = stored_manifest(root, "raw/layers", "1")
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_LAYER]
    assert [layer["digest"] for layer in manifest["layers"]] == list(image.platforms[0].diff_ids)


def test_gzipped_docker_archive(
    images: ImageCache, skopeo: Skopeo, root: Path, tmp_path: Path
) -> None:
    image = images.get(seed=105)
    archive = docker_archive(skopeo, image, tmp_path / "saved.tar", "gz/app:1")
    gz = tmp_path / "saved.tar.gz"
    import gzip

    gz.write_bytes(gzip.compress(archive.read_bytes()))
    cargohold("import", gz, "--root", root)
    assert stored_manifest(root, "gz/app", "1")["config"]["digest"] == image.config_digest


def test_multi_image_docker_archive_all_or_one(
    images: ImageCache, skopeo: Skopeo, root: Path, tmp_path: Path
) -> None:
    a, b = images.get(seed=106), images.get(seed=107)
    merged = merge_docker_archives(
        [
            docker_archive(skopeo, a, tmp_path / "a.tar", "multi/a:1"),
            docker_archive(skopeo, b, tmp_path / "b.tar", "multi/b:2"),
        ],
        tmp_path / "both.tar",
    )
    out = cargohold("import", merged, "--root", root).stdout
    assert "multi/a:1" in out and "multi/b:2" in out
    assert stored_manifest(root, "multi/a", "1")["config"]["digest"] == a.config_digest
    assert stored_manifest(root, "multi/b", "2")["config"]["digest"] == b.config_digest

    # REPO selects one image of several
    other = tmp_path / "other"
    other.mkdir()
    cargohold("import", merged, "multi/b", "--root", other)
    assert not repo_dir(other, "multi/a").exists()
    assert tags_of(other, "multi/b") == ["2"]

    # a name the archive does not have is an error that lists the names
    proc = cargohold("import", merged, "nope/x", "--root", other, check=False)
    assert proc.returncode == 2
    assert "multi/a:1" in proc.stderr and "multi/b:2" in proc.stderr


def test_docker_25_style_archive_keeps_the_oci_manifest(root: Path, tmp_path: Path) -> None:
    """Docker 25+ saves an OCI layout plus manifest.json; the OCI side wins (digests kept)."""
    image = build_image(tmp_path / "layout", seed=108, tag="latest")
    layout = image.layout
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["annotations"] = {
        "io.containerd.image.name": "docker.io/library/d25:latest",
        REF_NAME_ANNOTATION: "latest",
    }
    (layout / "index.json").write_bytes(canonical_json(index))
    p = image.platforms[0]
    manifest_json = [
        {
            "Config": f"blobs/sha256/{p.config_digest.removeprefix('sha256:')}",
            "RepoTags": ["d25:latest"],
            "Layers": [f"blobs/sha256/{d.removeprefix('sha256:')}" for d in p.layer_digests],
        }
    ]
    (layout / "manifest.json").write_text(json.dumps(manifest_json))
    archive = tar_directory(layout, tmp_path / "d25.tar")
    out = cargohold("import", archive, "--root", root).stdout
    assert "docker-save (OCI layout)" in out
    assert tagged_digest(root, "d25", "latest") == image.digest


def test_multi_arch_index_whole_or_one_platform(
    images: ImageCache, make_registry: Any, skopeo: Skopeo, root: Path
) -> None:
    image = images.get(seed=109, multi_arch=True)
    cargohold("import", image.layout, "multi/arch:all", "--root", root)
    assert tagged_digest(root, "multi/arch", "all") == image.index_digest
    for digest in image.manifest_digests.values():
        assert digest in revisions_of(root, "multi/arch")

    cargohold("import", image.layout, "multi/arch:arm", "--root", root, "--platform", "linux/arm64")
    assert tagged_digest(root, "multi/arch", "arm") == image.manifest_digests["linux/arm64"]

    server = make_registry(root=root)
    sk = skopeo.with_logs(server)
    assert _pull_digest(sk, server.host, "multi/arch:all") == image.index_digest
    assert _pull_digest(sk, server.host, "multi/arch:arm") == image.manifest_digests["linux/arm64"]

    proc = cargohold(
        "import", image.layout, "multi/arch:s390x", "--root", root, "--platform", "linux/s390x",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "linux/amd64, linux/arm64" in proc.stderr
    assert "s390x" not in tags_of(root, "multi/arch")


def test_partial_index_imports_the_platform_it_has(root: Path, tmp_path: Path) -> None:
    """What a containerd-store ``docker save`` of one platform of a multi-arch image looks like."""
    image = build_image(tmp_path / "layout", seed=110, multi_arch=True, tag="v1")
    arm = image.platforms[1]
    for blob in [arm.manifest, arm.config, *arm.layers]:
        (image.layout / "blobs/sha256" / blob.digest.removeprefix("sha256:")).unlink()
    proc = cargohold("import", image.layout, "part/img", "--root", root)
    assert "1 of the 2 platform images" in proc.stderr + proc.stdout
    assert tagged_digest(root, "part/img", "v1") == image.manifest_digests["linux/amd64"]


def test_layers_already_in_the_root_are_reused(images: ImageCache, root: Path) -> None:
    image = images.get(seed=111, layer_count=3)
    cargohold("import", image.layout, "reuse/one:1", "--root", root)
    out = cargohold("import", image.layout, "reuse/two:1", "--root", root).stdout
    assert "3 layers (3 already present)" in out
    assert tagged_digest(root, "reuse/two", "1") == image.digest


def test_importing_over_an_existing_tag_moves_it(images: ImageCache, root: Path) -> None:
    first, second = images.get(seed=112), images.get(seed=113)
    cargohold("import", first.layout, "moving/tag:x", "--root", root)
    cargohold("import", second.layout, "moving/tag:x", "--root", root)
    assert tagged_digest(root, "moving/tag", "x") == second.digest


def test_plain_output_has_progress_lines_and_a_summary(images: ImageCache, root: Path) -> None:
    image = images.get(seed=114)
    out = cargohold("import", image.layout, "log/lines:1", "--root", root).stdout
    lines = out.splitlines()
    assert any(line.startswith("verifying") for line in lines)
    assert any("written" in line and "/s)" in line for line in lines)
    assert lines[-1].startswith("imported log/lines:1")
    assert "1 layers (0 already present)" in lines[-1]

    quiet = cargohold("import", image.layout, "log/lines:2", "--root", root, "-q").stdout
    assert quiet.splitlines() == [quiet.strip()] and quiet.startswith("imported log/lines:2")


def test_import_with_a_config_file(images: ImageCache, tmp_path: Path) -> None:
    image = images.get(seed=115)
    storage = tmp_path / "storage"
    config = tmp_path / "config.yml"
    config.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {storage}\n"
        "http:\n  addr: 127.0.0.1:5999\n"
    )
    cargohold("import", image.layout, "cfg/app:1", "--config", config)
    assert tagged_digest(storage, "cfg/app", "1") == image.digest


def test_a_destination_is_required(images: ImageCache) -> None:
    proc = cargohold("import", images.get(seed=116).layout, "x/y", check=False)
    assert proc.returncode == 2 and "--root DIR, --config FILE or --to HOST" in proc.stderr


def test_artifact_manifest_with_empty_config(root: Path, tmp_path: Path) -> None:
    """Not only container images: an OCI artifact (empty config, any layer type) goes too."""
    from support.images import Blob

    empty = Blob("application/vnd.oci.empty.v1+json", b"{}")
    payload = Blob("application/vnd.cargohold.test.payload", b"payload bytes\n" * 10)
    manifest = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/vnd.cargohold.test",
                "config": empty.descriptor(),
                "layers": [payload.descriptor()],
            }
        ),
    )
    layout = tmp_path / "artifact"
    write_layout(layout, "art", [empty, payload, manifest], manifest)
    cargohold("import", layout, "art/facts", "--root", root)
    assert tagged_digest(root, "art/facts", "art") == manifest.digest
    assert hashlib.sha256(blob_bytes(root, payload.digest)).hexdigest() in payload.digest
