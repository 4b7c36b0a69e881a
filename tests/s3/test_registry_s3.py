"""cargohold on S3 storage (moto over the wire): push/pull with skopeo, chunked uploads across
part boundaries, redirects, digest verification, deletes and the catalog index."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.clients import Skopeo
from support.images import ImageCache, get_manifest, layout_descriptor
from support.servers import RegistryProcess, unique_repo
from support.stores import MotoServer, chunked_upload

S3RegistryFactory = Callable[..., RegistryProcess]

MiB = 1024 * 1024


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def in_progress(moto: MotoServer, bucket: str) -> list[str]:
    resp = moto.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in resp.get("Uploads", [])]


@pytest.mark.clients
def test_push_pull_with_skopeo(
    s3_registry: S3RegistryFactory,
    moto: MotoServer,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    reg = s3_registry(rootdirectory="/cargohold-root")
    sk = skopeo.with_logs(reg, moto)
    single, multi = images.get(seed=41), images.get(seed=42, multi_arch=True)
    one, many = unique_repo("s3/single"), unique_repo("s3/multi")
    assert sk.copy_with_digest(single.oci_ref(), f"docker://{reg.host}/{one}:v1") == single.digest
    pushed = sk.copy_with_digest(multi.oci_ref(), f"docker://{reg.host}/{many}:v1", all_images=True)
    assert pushed == multi.digest

    # Pulls follow the 307 to a presigned URL of the store.
    sk.copy(f"docker://{reg.host}/{one}:v1", f"oci:{tmp_path / 'one'}:v1")
    assert layout_descriptor(tmp_path / "one", "v1")["digest"] == single.digest
    sk.copy(f"docker://{reg.host}/{many}:v1", f"oci:{tmp_path / 'many'}:v1", all_images=True)
    assert layout_descriptor(tmp_path / "many", "v1")["digest"] == multi.digest
    assert sk.inspect_raw(f"docker://{reg.host}/{many}:v1") == multi.index.data  # type: ignore[union-attr]
    assert sk.list_tags(f"docker://{reg.host}/{one}") == ["v1"]
    catalog = requests.get(f"{reg.url}/v2/_catalog?n=1000", timeout=30).json()["repositories"]
    assert {one, many} <= set(catalog)

    # registry:2's keys under the root directory, no leading slash.
    keys = moto.keys(reg.bucket)  # type: ignore[attr-defined]
    assert all(k.startswith("cargohold-root/docker/registry/v2/") for k in keys), keys[:5]
    layer = single.layer_digests[0].split(":")[1]
    assert f"cargohold-root/docker/registry/v2/blobs/sha256/{layer[:2]}/{layer}/data" in keys
    assert (
        f"cargohold-root/docker/registry/v2/repositories/{one}/_manifests/tags/v1/current/link"
        in keys
    )
    assert in_progress(moto, reg.bucket) == []  # type: ignore[attr-defined]


def test_chunked_upload_across_part_boundaries(
    s3_registry: S3RegistryFactory, moto: MotoServer
) -> None:
    """13 MiB in chunks of 3, 4 and 6 MiB: parts are shipped as soon as 10 MiB (chunksize) are
    buffered, the tail waits in the append record; a stale chunk gets 416."""
    reg = s3_registry()
    bucket = reg.bucket  # type: ignore[attr-defined]
    name = unique_repo("s3/chunked")
    data = os.urandom(13 * MiB + 7)
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=30)
    assert r.status_code == 202
    url = reg.url + r.headers["Location"]
    offset = 0
    for size in (3 * MiB, 4 * MiB, 6 * MiB + 7):
        r = requests.patch(
            url,
            data=data[offset : offset + size],
            headers={"Content-Range": f"{offset}-{offset + size - 1}"},
            timeout=60,
        )
        assert r.status_code == 202, r.text
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        url = reg.url + r.headers["Location"]
        if offset >= 5 * MiB:  # from 5 MiB on, the bytes are in an S3 multipart upload
            assert any("/_uploads/" in k for k in in_progress(moto, bucket))
    stale = requests.patch(url, data=data[:10], headers={"Content-Range": "0-9"}, timeout=30)
    assert stale.status_code == 416
    r = requests.put(f"{url}&digest={sha256(data)}", timeout=60)
    assert r.status_code == 201, r.text
    assert in_progress(moto, bucket) == []

    blob = f"{reg.url}/v2/{name}/blobs/{sha256(data)}"
    head = requests.head(blob, timeout=30)
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(data)))
    r = requests.get(blob, allow_redirects=False, timeout=30)
    assert r.status_code == 307 and "X-Amz-Signature" in r.headers["Location"]
    got = requests.get(blob, timeout=60).content  # follows the redirect to moto
    assert sha256(got) == sha256(data)


def test_resilient_client_helper_round_trip(s3_registry: S3RegistryFactory) -> None:
    reg = s3_registry()
    name = unique_repo("s3/helper")
    data = os.urandom(MiB + 123)
    digest = chunked_upload(reg.url, name, data, 300_000)
    assert requests.get(f"{reg.url}/v2/{name}/blobs/{digest}", timeout=30).content == data


def test_redirect_disabled_streams_through_the_registry(s3_registry: S3RegistryFactory) -> None:
    reg = s3_registry(config={"storage": {"redirect": {"disable": True}}})
    name = unique_repo("s3/stream")
    data = os.urandom(6 * MiB + 1)
    digest = chunked_upload(reg.url, name, data, 6 * MiB + 1)
    url = f"{reg.url}/v2/{name}/blobs/{digest}"
    r = requests.get(url, allow_redirects=False, timeout=60)
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"  # prepared by hand
    part = requests.get(url, headers={"Range": "bytes=5242870-5242889"}, timeout=30)
    assert part.status_code == 206 and part.content == data[5242870:5242890]
    assert part.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_wrong_digest_leaves_nothing_visible(
    s3_registry: S3RegistryFactory, moto: MotoServer
) -> None:
    reg = s3_registry()
    name = unique_repo("s3/wrong")
    data = os.urandom(7 * MiB)
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=30)
    url = reg.url + r.headers["Location"]
    r = requests.patch(url, data=data, timeout=60)
    assert r.status_code == 202
    url = reg.url + r.headers["Location"]
    wrong = sha256(b"something else")
    r = requests.put(f"{url}&digest={wrong}", timeout=60)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"
    keys = moto.keys(reg.bucket)  # type: ignore[attr-defined]
    assert not [k for k in keys if "/blobs/" in k], keys
    assert not [k for k in keys if "/_uploads/" in k], keys
    assert in_progress(moto, reg.bucket) == []  # type: ignore[attr-defined]
    assert requests.head(f"{reg.url}/v2/{name}/blobs/{wrong}", timeout=30).status_code == 404


def test_deletes_and_the_catalog_index(s3_registry: S3RegistryFactory, moto: MotoServer) -> None:
    from support.images import build_platform_image, push_blob, push_manifest

    reg = s3_registry()
    keep, drop = unique_repo("s3/keep"), unique_repo("s3/drop")
    image = build_platform_image(77)
    for name in (keep, drop):
        for blob in image.blobs:
            push_blob(reg.url, name, blob.data)
        push_manifest(reg.url, name, "v1", image.manifest.data)
    catalog = requests.get(f"{reg.url}/v2/_catalog", timeout=30).json()["repositories"]
    assert {keep, drop} <= set(catalog)

    digest = image.manifest_digest
    assert requests.delete(f"{reg.url}/v2/{drop}/manifests/{digest}", timeout=30).status_code == 202
    assert get_manifest(reg.url, drop, "v1").status_code == 404
    assert get_manifest(reg.url, drop, digest).status_code == 404
    catalog = requests.get(f"{reg.url}/v2/_catalog", timeout=30).json()["repositories"]
    assert drop not in catalog and keep in catalog  # the index entry went with _manifests

    layer = image.layer_digests[0]
    assert requests.delete(f"{reg.url}/v2/{keep}/blobs/{layer}", timeout=30).status_code == 202
    assert requests.head(f"{reg.url}/v2/{keep}/blobs/{layer}", timeout=30).status_code == 404
    assert get_manifest(reg.url, keep, "v1").status_code == 200


def test_workers_share_uploads_on_s3(s3_registry: S3RegistryFactory) -> None:
    """--workers 2: every request on a new connection, so chunks land on both workers; the
    worker that finishes re-reads what it did not hash, and the digest still holds."""
    reg = s3_registry(workers=2)
    for size, chunk in ((2 * MiB + 5, 200_000), (12 * MiB + 1, 5 * MiB)):
        name = unique_repo("s3/workers")
        data = os.urandom(size)
        digest = chunked_upload(reg.url, name, data, chunk)
        got = requests.get(f"{reg.url}/v2/{name}/blobs/{digest}", timeout=60).content
        assert sha256(got) == digest


def test_redirect_expirydelay_sets_how_long_a_blob_url_is_valid(
    s3_registry: S3RegistryFactory,
) -> None:
    """``storage.redirect.expirydelay`` is honoured: the presigned URL lives that long."""
    reg = s3_registry(config={"storage": {"redirect": {"expirydelay": "90s"}}})
    name = unique_repo("s3/expiry")
    data = b"a blob with a short-lived URL"
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/?digest={sha256(data)}", data=data)
    assert r.status_code == 201, r.text
    r = requests.get(f"{reg.url}/v2/{name}/blobs/{sha256(data)}", allow_redirects=False)
    assert r.status_code == 307
    assert "X-Amz-Expires=90&" in r.headers["Location"] + "&", r.headers["Location"]
