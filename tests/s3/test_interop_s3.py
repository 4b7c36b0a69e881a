"""A bucket written by the reference registry (registry:2 on S3) is served by cargohold, and the
other way round: same keys, same layout, under the same root directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.clients import Skopeo
from support.images import ImageCache, TestImage, get_manifest, layout_descriptor
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer

pytestmark = pytest.mark.clients

Factory = Callable[..., RegistryProcess]
ROOT = "/shared/registry"


def _push(sk: Skopeo, writer: RegistryProcess, repos: dict[str, str], images: ImageCache) -> None:
    single, multi = images.get(seed=51), images.get(seed=52, multi_arch=True)
    assert sk.copy_with_digest(
        single.oci_ref(), f"docker://{writer.host}/{repos['single']}:v1"
    ) == (single.digest)
    sk.copy(single.oci_ref(), f"docker://{writer.host}/{repos['single']}:v2")
    pushed = sk.copy_with_digest(
        multi.oci_ref(), f"docker://{writer.host}/{repos['multi']}:v1", all_images=True
    )
    assert pushed == multi.digest


def _check(
    sk: Skopeo, reader: RegistryProcess, repos: dict[str, str], images: ImageCache, tmp: Path
) -> None:
    single, multi = images.get(seed=51), images.get(seed=52, multi_arch=True)
    assert sorted(sk.list_tags(f"docker://{reader.host}/{repos['single']}")) == ["v1", "v2"]
    for tag in ("v1", "v2"):
        r = get_manifest(reader.url, repos["single"], tag)
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == single.digest
    sk.copy(f"docker://{reader.host}/{repos['single']}:v1", f"oci:{tmp / 'single'}:v1")
    assert layout_descriptor(tmp / "single", "v1")["digest"] == single.digest
    multi_image: TestImage = multi
    assert sk.inspect_raw(f"docker://{reader.host}/{repos['multi']}:v1") == (
        multi_image.index.data  # type: ignore[union-attr]
    )
    sk.copy(
        f"docker://{reader.host}/{repos['multi']}:v1", f"oci:{tmp / 'multi'}:v1", all_images=True
    )
    assert layout_descriptor(tmp / "multi", "v1")["digest"] == multi.digest
    catalog = requests.get(f"{reader.url}/v2/_catalog?n=1000", timeout=60).json()
    assert set(repos.values()) <= set(catalog["repositories"])


def test_reference_writes_cargohold_serves(
    moto: MotoServer,
    make_reference_registry: Factory,
    make_registry: Factory,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    bucket = moto.new_bucket("ref2ch")
    storage = {"storage": moto.storage_section(bucket, rootdirectory=ROOT)}
    ref = make_reference_registry(config=storage)
    repos = {"single": unique_repo("interop/s3"), "multi": unique_repo("interop/s3/nested")}
    _push(skopeo.with_logs(ref, moto), ref, repos, images)
    ref.stop()
    keys = moto.keys(bucket)
    assert keys and all(k.startswith("shared/registry/docker/registry/v2/") for k in keys)
    ours = make_registry(config=storage)
    # The first catalog call indexes the bucket registry:2 wrote (a reconciliation walk).
    _check(skopeo.with_logs(ours, moto), ours, repos, images, tmp_path)


def test_cargohold_writes_reference_serves(
    moto: MotoServer,
    make_reference_registry: Factory,
    make_registry: Factory,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    bucket = moto.new_bucket("ch2ref")
    storage = {"storage": moto.storage_section(bucket, rootdirectory=ROOT)}
    ours = make_registry(config=storage)
    repos = {"single": unique_repo("interop/s3"), "multi": unique_repo("interop/s3/nested")}
    _push(skopeo.with_logs(ours, moto), ours, repos, images)
    ours.stop()
    ref = make_reference_registry(config=storage)
    _check(skopeo.with_logs(ref, moto), ref, repos, images, tmp_path)
