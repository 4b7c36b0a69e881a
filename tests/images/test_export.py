"""``cargohold export`` from a local root: docker archives skopeo (and docker) read, OCI layouts
whose digests survive a round trip, multi-platform images whole or one platform at a time."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from imagetools import cargohold, stored_manifest, tagged_digest
from support.clients import Skopeo
from support.images import ImageCache, TestImage, sha256_digest


@pytest.fixture
def filled(images: ImageCache, root: Path) -> tuple[Path, TestImage, TestImage]:
    """A root holding a two-layer image (exp/single:1) and a multi-arch one (exp/multi:m)."""
    single = images.get(seed=401, layer_count=2)
    multi = images.get(seed=402, multi_arch=True)
    cargohold("import", single.layout, "exp/single:1", "--root", root)
    cargohold("import", multi.layout, "exp/multi:m", "--root", root)
    return root, single, multi


def test_docker_archive_for_skopeo(
    filled: tuple[Path, TestImage, TestImage], skopeo: Skopeo, tmp_path: Path
) -> None:
    root, single, _ = filled
    out = tmp_path / "single.tar"
    text = cargohold("export", "exp/single:1", "-o", out, "--root", root).stdout
    assert f"exported exp/single:1 to {out} (docker): digest {single.digest}" in text
    info = skopeo.inspect(f"docker-archive:{out}")
    assert info["Layers"] == list(single.platforms[0].diff_ids)  # uncompressed, as docker saves
    config = skopeo.inspect(f"docker-archive:{out}:exp/single:1", extra=["--config"])
    assert config["rootfs"]["diff_ids"] == list(single.platforms[0].diff_ids)
    raw = skopeo.inspect_raw(f"docker-archive:{out}")
    assert json.loads(raw)["config"]["digest"] == single.config_digest  # same image ID
    layout = tmp_path / "copied"
    skopeo.copy(f"docker-archive:{out}", f"oci:{layout}:x")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest == [
        {
            "Config": single.config_digest.removeprefix("sha256:") + ".json",
            "RepoTags": ["exp/single:1"],
            "Layers": [d.removeprefix("sha256:") + ".tar" for d in single.platforms[0].diff_ids],
        }
    ]
    assert set(names) == {"manifest.json", *manifest[0]["Layers"], manifest[0]["Config"]}


def test_docker_archive_round_trip_through_import(
    filled: tuple[Path, TestImage, TestImage], tmp_path: Path
) -> None:
    root, single, _ = filled
    out = tmp_path / "single.tar"
    cargohold("export", "exp/single:1", "-o", out, "--root", root)
    again = tmp_path / "again"
    cargohold("import", out, "--root", again)
    manifest = stored_manifest(again, "exp/single", "1")
    assert manifest["config"]["digest"] == single.config_digest


@pytest.mark.parametrize("as_tar", [False, True], ids=["dir", "tar"])
def test_oci_export_and_reimport_keeps_the_digest(
    filled: tuple[Path, TestImage, TestImage], skopeo: Skopeo, tmp_path: Path, as_tar: bool
) -> None:
    root, single, multi = filled
    out = tmp_path / ("layout.tar" if as_tar else "layout")
    cargohold("export", "exp/single:1", "exp/multi:m", "--format", "oci", "-o", out, "--root", root)
    if as_tar:
        with tarfile.open(out) as tar:
            assert "oci-layout" in tar.getnames() and "index.json" in tar.getnames()
        ref = f"oci-archive:{out}"
    else:
        ref = f"oci:{out}"
    assert sha256_digest(skopeo.inspect_raw(f"{ref}:1")) == single.digest
    assert sha256_digest(skopeo.inspect_raw(f"{ref}:m")) == multi.index_digest

    fresh = tmp_path / "fresh"
    text = cargohold("import", out, "--root", fresh).stdout
    assert "exp/single:1" in text and "exp/multi:m" in text
    assert tagged_digest(fresh, "exp/single", "1") == single.digest
    assert tagged_digest(fresh, "exp/multi", "m") == multi.index_digest


def test_multi_arch_platform_selection(
    filled: tuple[Path, TestImage, TestImage], skopeo: Skopeo, tmp_path: Path
) -> None:
    root, _, multi = filled
    arm = tmp_path / "arm"
    cargohold(
        "export", "exp/multi:m", "--format", "oci", "--platform", "linux/arm64", "-o", arm,
        "--root", root,
    )  # fmt: skip
    index = json.loads((arm / "index.json").read_text())
    assert index["manifests"][0]["digest"] == multi.manifest_digests["linux/arm64"]
    assert index["manifests"][0]["platform"] == {"architecture": "arm64", "os": "linux"}

    # docker format: one platform, linux/amd64 by default
    default = tmp_path / "default.tar"
    cargohold("export", "exp/multi:m", "-o", default, "--root", root)
    assert skopeo.inspect(f"docker-archive:{default}")["Architecture"] == "amd64"
    chosen = tmp_path / "arm.tar"
    cargohold("export", "exp/multi:m", "-o", chosen, "--root", root, "--platform", "linux/arm64")
    assert skopeo.inspect(f"docker-archive:{chosen}")["Architecture"] == "arm64"

    missing = tmp_path / "s390x.tar"
    proc = cargohold(
        "export", "exp/multi:m", "-o", missing, "--root", root, "--platform", "linux/s390x",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "linux/amd64, linux/arm64" in proc.stderr
    assert not missing.exists()


def test_export_by_digest_and_unknown_refs(
    filled: tuple[Path, TestImage, TestImage], skopeo: Skopeo, tmp_path: Path
) -> None:
    root, single, _ = filled
    out = tmp_path / "bydigest.tar"
    cargohold("export", f"exp/single@{single.digest}", "-o", out, "--root", root)
    assert skopeo.inspect(f"docker-archive:{out}")["Layers"] == list(single.platforms[0].diff_ids)

    nothing = tmp_path / "nothing.tar"
    proc = cargohold("export", "exp/single:nope", "-o", nothing, "--root", root, check=False)
    assert proc.returncode == 1 and "exp/single:nope" in proc.stderr
    assert not nothing.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".nothing")]


def test_corrupt_blob_in_the_root_fails_the_export(
    filled: tuple[Path, TestImage, TestImage], tmp_path: Path
) -> None:
    root, single, _ = filled
    hexpart = single.layer_digests[0].removeprefix("sha256:")
    data = root / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    for fmt in ("oci", "docker"):
        out = tmp_path / f"out-{fmt}.tar"
        proc = cargohold(
            "export", "exp/single:1", "--format", fmt, "-o", out, "--root", root, check=False
        )
        assert proc.returncode == 1 and "corrupt" in proc.stderr, proc.stderr
        assert not out.exists()


def test_export_adds_to_an_existing_layout(
    filled: tuple[Path, TestImage, TestImage], skopeo: Skopeo, tmp_path: Path
) -> None:
    root, single, multi = filled
    layout = tmp_path / "shared"
    cargohold("export", "exp/single:1", "--format", "oci", "-o", layout, "--root", root)
    cargohold("export", "exp/multi:m", "--format", "oci", "-o", layout, "--root", root)
    assert sha256_digest(skopeo.inspect_raw(f"oci:{layout}:1")) == single.digest
    assert sha256_digest(skopeo.inspect_raw(f"oci:{layout}:m")) == multi.index_digest
