"""Broken archives are refused with a clear message and leave nothing behind.

"Nothing" is checked on disk: no repository directory at all for a new repository (so no tags,
no manifests, no layer links), and for an existing one exactly what was there before.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from imagetools import (
    REPOSITORIES,
    cargohold,
    copy_layout,
    docker_archive,
    flip_byte_in_member,
    repo_dir,
    revisions_of,
    tagged_digest,
    tags_of,
    tar_directory,
)
from support.clients import Skopeo
from support.images import Blob, ImageCache, canonical_json, write_layout


def _assert_refused(proc_args: list[str | Path], root: Path, *words: str) -> str:
    proc = cargohold(*proc_args, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = proc.stderr.lower()
    assert "nothing was imported" in message
    assert any(w in message for w in words), proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stderr


def _assert_nothing_in(root: Path) -> None:
    repos = root / REPOSITORIES
    assert not repos.exists() or not any(repos.iterdir()), sorted(root.rglob("*"))


@pytest.fixture
def saved(images: ImageCache, skopeo: Skopeo, tmp_path: Path) -> Path:
    image = images.get(seed=201, layer_count=2)
    return docker_archive(skopeo, image, tmp_path / "saved.tar", "broken/app:1")


def test_docker_archive_cut_in_half(saved: Path, root: Path, tmp_path: Path) -> None:
    half = tmp_path / "half.tar"
    half.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    _assert_refused(["import", half, "--root", root], root, "truncated")
    _assert_nothing_in(root)


def test_tar_cut_between_members(saved: Path, root: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tar"
    cut.write_bytes(saved.read_bytes()[:-1024])  # just the end-of-archive blocks missing
    _assert_refused(["import", cut, "--root", root], root, "truncated")
    _assert_nothing_in(root)


def test_flipped_byte_in_a_docker_layer(saved: Path, root: Path, tmp_path: Path) -> None:
    bad = flip_byte_in_member(
        saved, tmp_path / "flipped.tar", lambda m: m.name.endswith(".tar") and m.size > 1024
    )
    message = _assert_refused(["import", bad, "--root", root], root, "corrupt")
    assert "layer" in message
    _assert_nothing_in(root)


def test_flipped_byte_in_a_docker_config(saved: Path, root: Path, tmp_path: Path) -> None:
    bad = flip_byte_in_member(saved, tmp_path / "flipped.tar", lambda m: m.name.endswith(".json"))
    _assert_refused(["import", bad, "--root", root], root, "corrupt", "json")
    _assert_nothing_in(root)


def test_truncated_and_corrupted_gzip(saved: Path, root: Path, tmp_path: Path) -> None:
    data = gzip.compress(saved.read_bytes())
    half = tmp_path / "half.tar.gz"
    half.write_bytes(data[: len(data) // 2])
    _assert_refused(["import", half, "--root", root], root, "truncated")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(flipped))
    _assert_refused(["import", bad, "--root", root], root, "corrupt", "truncated")
    _assert_nothing_in(root)


def test_flipped_byte_in_an_oci_layer(images: ImageCache, root: Path, tmp_path: Path) -> None:
    image = images.get(seed=202, layer_count=2)
    archive = tar_directory(image.layout, tmp_path / "layout.tar")
    layer = image.layer_digests[1].removeprefix("sha256:")
    bad = flip_byte_in_member(archive, tmp_path / "bad.tar", lambda m: m.name.endswith(layer))
    message = _assert_refused(["import", bad, "oci/bad", "--root", root], root, "corrupt")
    assert image.layer_digests[1] in message
    _assert_nothing_in(root)


def test_missing_blob_in_an_oci_layout(images: ImageCache, root: Path, tmp_path: Path) -> None:
    image = images.get(seed=203)
    layout = copy_layout(image.layout, tmp_path / "layout")
    (layout / "blobs/sha256" / image.layer_digests[0].removeprefix("sha256:")).unlink()
    _assert_refused(["import", layout, "oci/missing", "--root", root], root, "missing")
    _assert_nothing_in(root)


def test_not_an_archive(root: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a tar\n" * 100)
    _assert_refused(["import", junk, "x/y", "--root", root], root, "neither")
    missing = tmp_path / "nope.tar"
    _assert_refused(["import", missing, "x/y", "--root", root], root, "no such file")
    _assert_nothing_in(root)


def test_failure_after_writing_is_rolled_back(
    images: ImageCache, root: Path, tmp_path: Path
) -> None:
    """A manifest the registry refuses (here schemaVersion 3) fails after the blobs went in: the
    rollback must remove the new repository, and leave an existing one exactly as it was."""
    good = images.get(seed=204)
    p = good.platforms[0]
    bad_manifest = Blob(
        "application/vnd.oci.image.manifest.v1+json",
        canonical_json(
            {
                "schemaVersion": 3,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": p.config.descriptor(),
                "layers": [layer.descriptor() for layer in p.layers],
            }
        ),
    )
    layout = tmp_path / "bad-layout"
    write_layout(layout, "bad", [p.config, *p.layers, bad_manifest], bad_manifest)

    _assert_refused(["import", layout, "fresh/repo", "--root", root], root, "schemaversion")
    assert not repo_dir(root, "fresh/repo").exists()
    assert not repo_dir(root, "fresh").exists()

    other = images.get(seed=205)
    cargohold("import", other.layout, "kept/repo:ok", "--root", root)
    before = sorted(str(p.relative_to(root)) for p in repo_dir(root, "kept/repo").rglob("*"))
    _assert_refused(["import", layout, "kept/repo:bad", "--root", root], root, "schemaversion")
    after = sorted(str(p.relative_to(root)) for p in repo_dir(root, "kept/repo").rglob("*"))
    assert [a for a in after if "_uploads" not in a] == [b for b in before if "_uploads" not in b]
    assert tags_of(root, "kept/repo") == ["ok"]
    assert revisions_of(root, "kept/repo") == [other.digest]
    assert tagged_digest(root, "kept/repo", "ok") == other.digest


def test_refused_archive_leaves_an_existing_tag_alone(
    images: ImageCache, saved: Path, root: Path, tmp_path: Path
) -> None:
    first = images.get(seed=206)
    cargohold("import", first.layout, "broken/app:1", "--root", root)
    half = tmp_path / "half.tar"
    half.write_bytes(saved.read_bytes()[: saved.stat().st_size // 2])
    _assert_refused(["import", half, "--root", root], root, "truncated")
    assert tagged_digest(root, "broken/app", "1") == first.digest


def test_bad_manifest_json_in_docker_archive(saved: Path, root: Path, tmp_path: Path) -> None:
    import tarfile

    bad = tmp_path / "bad.tar"
    with tarfile.open(saved) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            if member.name == "manifest.json":
                entries = json.load(src.extractfile(member))  # type: ignore[arg-type]
                entries[0]["Layers"] = entries[0]["Layers"][:1]
                data = json.dumps(entries).encode()
                member.size = len(data)
                import io

                dst.addfile(member, io.BytesIO(data))
            else:
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    _assert_refused(["import", bad, "--root", root], root, "layers")
    _assert_nothing_in(root)
