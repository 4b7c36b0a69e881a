"""cargohold and the reference registry read each other's storage (the registry:2 layout).

(a) the reference registry writes a store via skopeo pushes, then cargohold serves it;
(b) cargohold writes a store, then the reference registry serves it.
In both directions skopeo copies everything back and the digests must be unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.clients import Skopeo
from support.images import ImageCache, TestImage, get_manifest, layout_descriptor
from support.servers import RegistryProcess

pytestmark = pytest.mark.clients

RegistryFactory = Callable[..., RegistryProcess]
REPOS = {"single": "interop/single", "multi": "interop/nested/multi"}


def _populate(skopeo: Skopeo, writer: RegistryProcess, single: TestImage, multi: TestImage) -> None:
    sk = skopeo.with_logs(writer)
    assert sk.copy_with_digest(
        single.oci_ref(), f"docker://{writer.host}/{REPOS['single']}:v1"
    ) == (single.digest)
    sk.copy(single.oci_ref(), f"docker://{writer.host}/{REPOS['single']}:v2")
    pushed = sk.copy_with_digest(
        multi.oci_ref(), f"docker://{writer.host}/{REPOS['multi']}:v1", all_images=True
    )
    assert pushed == multi.digest


def _check_served(
    skopeo: Skopeo,
    reader: RegistryProcess,
    single: TestImage,
    multi: TestImage,
    tmp_path: Path,
) -> None:
    sk = skopeo.with_logs(reader)
    tmp_path.mkdir(parents=True, exist_ok=True)
    assert sorted(sk.list_tags(f"docker://{reader.host}/{REPOS['single']}")) == ["v1", "v2"]

    for tag in ("v1", "v2"):
        resp = get_manifest(reader.url, REPOS["single"], tag)
        assert resp.status_code == 200, f"{tag}: {resp.status_code} {resp.text}"
        assert resp.headers["Docker-Content-Digest"] == single.digest
        assert resp.content == single.platforms[0].manifest.data

    back = tmp_path / "single"
    sk.copy(f"docker://{reader.host}/{REPOS['single']}:v1", f"oci:{back}:v1")
    assert layout_descriptor(back, "v1")["digest"] == single.digest

    assert multi.index is not None
    src = f"docker://{reader.host}/{REPOS['multi']}:v1"
    assert sk.inspect_raw(src) == multi.index.data
    back_multi = tmp_path / "multi"
    sk.copy(src, f"oci:{back_multi}:v1", all_images=True)
    assert layout_descriptor(back_multi, "v1")["digest"] == multi.digest
    for platform in multi.platforms:
        blob = back_multi / "blobs" / "sha256" / platform.layers[0].digest.removeprefix("sha256:")
        assert blob.read_bytes() == platform.layers[0].data


def test_cargohold_serves_reference_store(
    make_reference_registry: RegistryFactory,
    make_registry: RegistryFactory,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    single, multi = images.get(seed=51), images.get(seed=52, multi_arch=True)
    store = tmp_path / "store"
    writer = make_reference_registry(root=store)
    _populate(skopeo, writer, single, multi)
    writer.stop()
    assert (store / "docker" / "registry" / "v2" / "repositories" / REPOS["single"]).is_dir()

    reader = make_registry(root=store)
    assert reader.root == store
    _check_served(skopeo, reader, single, multi, tmp_path / "pulled")


def test_reference_serves_cargohold_store(
    make_reference_registry: RegistryFactory,
    make_registry: RegistryFactory,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    single, multi = images.get(seed=53), images.get(seed=54, multi_arch=True)
    store = tmp_path / "store"
    writer = make_registry(root=store)
    _populate(skopeo, writer, single, multi)
    writer.stop()
    v2 = store / "docker" / "registry" / "v2"
    link = v2 / "repositories" / REPOS["single"] / "_manifests" / "tags" / "v1" / "current" / "link"
    assert link.read_text() == single.digest, "tag link not in the registry:2 layout"
    blob = v2 / "blobs" / "sha256" / single.config_digest[7:9] / single.config_digest[7:] / "data"
    assert blob.read_bytes() == single.platforms[0].config.data

    reader = make_reference_registry(root=store)
    _check_served(skopeo, reader, single, multi, tmp_path / "pulled")


def test_reference_store_roundtrip_sanity(
    make_reference_registry: RegistryFactory,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    """The harness itself: the reference registry re-serves its own store after a restart."""
    single, multi = images.get(seed=55), images.get(seed=56, multi_arch=True)
    store = tmp_path / "store"
    writer = make_reference_registry(root=store)
    _populate(skopeo, writer, single, multi)
    writer.stop()
    _check_served(skopeo, make_reference_registry(root=store), single, multi, tmp_path / "p")
