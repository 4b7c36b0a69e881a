"""A store written by the reference registry (distribution 2.x) is clean for fsck."""

from __future__ import annotations

import requests
from support.servers import unique_repo

from tests.ops.helpers import V2

from .helpers import blob_file, fsck, store_config


def test_a_store_written_by_registry2_checks_clean(
    make_reference_registry, images, skopeo, tmp_path
):
    root = tmp_path / "store"
    ref = make_reference_registry(root=root)
    name = unique_repo("fsref")
    single, multi, gone = images.get(341), images.get(342, multi_arch=True), images.get(343)
    skopeo.copy(single.oci_ref(), f"docker://{ref.host}/{name}:one")
    skopeo.copy(multi.oci_ref(), f"docker://{ref.host}/{name}:multi", all_images=True)
    skopeo.copy(gone.oci_ref(), f"docker://{ref.host}/{name}:gone")
    skopeo.copy(single.oci_ref(), f"docker://{ref.host}/{name}:gone")  # moves the tag
    skopeo.copy(gone.oci_ref(), f"docker://{ref.host}/{name}:gone2")
    r = requests.delete(
        f"{ref.url}/v2/{name}/manifests/{gone.digest}",
        headers={"Accept": gone.media_type},
        timeout=30,
    )
    assert r.status_code == 202, r.text  # registry:2 leaves tag index history behind
    ref.stop()

    config = store_config(tmp_path, root)
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]
    assert report["tags"] == 3 and report["manifests"] >= 4

    # A repair that quarantines a corrupt blob leaves a store registry:2 still serves.
    layer = single.layer_digests[0]
    data = blob_file(root, layer)
    data.write_bytes(data.read_bytes()[::-1])
    code, report = fsck(config, "--verify-blobs", "--repair")
    assert [p["kind"] for p in report["problems"]] == ["blob-corrupt"]
    assert (root / V2 / "_cargohold" / "quarantine" / "sha256" / layer[7:] / "data").exists()
    ref = make_reference_registry(root=root)
    assert requests.get(f"{ref.url}/v2/_catalog", timeout=30).json()["repositories"] == [name]
    r = requests.get(f"{ref.url}/v2/{name}/blobs/{single.config_digest}", timeout=30)
    assert r.status_code == 200
    assert requests.get(f"{ref.url}/v2/{name}/blobs/{layer}", timeout=30).status_code == 404
