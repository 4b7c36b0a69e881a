"""cargohold on a real S3 server: Ceph's RADOS Gateway (``scripts/ceph-rgw.sh``, one per run).

moto keeps the fast tests; these check what only a real store can: multipart uploads whose
parts come from two replicas, presigned redirects followed by a real client, server-side copies
(an upload's commit is a ``CopyObject``) and mounts, listings that cross the 1000-key page, and
deletes. Pacific's RGW returns an empty ETag from ``CompleteMultipartUpload``: the driver must
not depend on it (the blob's size and digest are checked after the fact below).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.ceph import RgwServer
from support.clients import Skopeo
from support.images import (
    ImageCache,
    build_platform_image,
    get_manifest,
    layout_descriptor,
    push_blob,
    push_manifest,
)
from support.servers import RegistryProcess, unique_repo

from cargohold.storage.driver import PathNotFoundError
from cargohold.storage.s3 import S3Driver
from cargohold.storage.s3params import parse_s3_params

S3RegistryFactory = Callable[..., RegistryProcess]
MiB = 1024 * 1024
V2 = "docker/registry/v2"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def in_progress(rgw: RgwServer, bucket: str) -> list[str]:
    resp = rgw.client().list_multipart_uploads(Bucket=bucket)
    return [u["Key"] for u in resp.get("Uploads", [])]


def blob_key(digest: str) -> str:
    hex_ = digest.split(":")[1]
    return f"{V2}/blobs/sha256/{hex_[:2]}/{hex_}/data"


def test_multipart_upload_across_two_replicas(
    rgw_registry: S3RegistryFactory, rgw: RgwServer
) -> None:
    """Two processes on one bucket; the chunks of one upload alternate between them, so the
    S3 multipart upload one starts is continued (from its append record) by the other."""
    first = rgw_registry()
    bucket = first.bucket  # type: ignore[attr-defined]
    second = rgw_registry(bucket=bucket)
    replicas = [first, second]
    name = unique_repo("rgw/replicas")
    data = os.urandom(23 * MiB + 11)
    chunk = 6 * MiB  # above S3's 5 MiB part minimum: every chunk becomes parts
    r = requests.post(f"{first.url}/v2/{name}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    offset, turn = 0, 1
    while offset < len(data):
        piece = data[offset : offset + chunk]
        replica = replicas[turn % 2]
        r = requests.patch(
            replica.url + location,
            data=piece,
            headers={
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                "Content-Type": "application/octet-stream",
            },
            timeout=120,
        )
        assert r.status_code == 202, (r.text, replica.describe_log())
        offset += len(piece)
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = r.headers["Location"]
        turn += 1
    assert any("/_uploads/" in k for k in in_progress(rgw, bucket))
    digest = sha256(data)
    sep = "&" if "?" in location else "?"
    r = requests.put(f"{replicas[turn % 2].url}{location}{sep}digest={digest}", timeout=120)
    assert r.status_code == 201, r.text
    assert in_progress(rgw, bucket) == []

    head = rgw.client().head_object(Bucket=bucket, Key=blob_key(digest))
    assert head["ContentLength"] == len(data)
    for replica in replicas:
        url = f"{replica.url}/v2/{name}/blobs/{digest}"
        r = requests.get(url, allow_redirects=False, timeout=30)
        assert r.status_code == 307 and r.headers["Location"].startswith(rgw.endpoint)
        got = requests.get(url, timeout=120).content  # follows the redirect into RGW
        assert sha256(got) == digest


@pytest.mark.clients
def test_skopeo_pull_follows_redirects_to_rgw(
    rgw_registry: S3RegistryFactory,
    rgw: RgwServer,
    skopeo: Skopeo,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    reg = rgw_registry()
    sk = skopeo.with_logs(reg, rgw)
    image = images.get(seed=91, multi_arch=True)
    name = unique_repo("rgw/skopeo")
    ref = f"docker://{reg.host}/{name}:v1"
    assert sk.copy_with_digest(image.oci_ref(), ref, all_images=True) == image.digest

    layer = image.layer_digests[0]
    r = requests.get(f"{reg.url}/v2/{name}/blobs/{layer}", allow_redirects=False, timeout=30)
    assert r.status_code == 307 and r.headers["Location"].startswith(rgw.endpoint)
    sk.copy(ref, f"oci:{tmp_path / 'pulled'}:v1", all_images=True)
    assert layout_descriptor(tmp_path / "pulled", "v1")["digest"] == image.digest
    keys = rgw.keys(reg.bucket)  # type: ignore[attr-defined]
    assert blob_key(layer) in keys
    assert f"{V2}/repositories/{name}/_manifests/tags/v1/current/link" in keys


def test_mount_copy_and_delete_on_rgw(rgw_registry: S3RegistryFactory, rgw: RgwServer) -> None:
    """Commits are server-side copies (upload data -> blob), a mount is a link in the other
    repository; deletes remove exactly what they name, in the bucket too."""
    reg = rgw_registry()
    bucket = reg.bucket  # type: ignore[attr-defined]
    source, target = unique_repo("rgw/source"), unique_repo("rgw/target")
    image = build_platform_image(93)
    for blob in image.blobs:
        push_blob(reg.url, source, blob.data)
    layer = image.layer_digests[0]
    assert not [k for k in rgw.keys(bucket) if "/_uploads/" in k]  # copied, then deleted

    r = requests.post(
        f"{reg.url}/v2/{target}/blobs/uploads/?mount={layer}&from={source}", timeout=30
    )
    assert r.status_code == 201, r.text
    link = f"{V2}/repositories/{target}/_layers/sha256/{layer.split(':')[1]}/link"
    assert link in rgw.keys(bucket)
    for blob in image.blobs:
        if blob.digest != layer:
            push_blob(reg.url, target, blob.data)
    push_manifest(reg.url, target, "v1", image.manifest.data)
    mounted = requests.get(f"{reg.url}/v2/{target}/blobs/{layer}", timeout=60)
    assert mounted.status_code == 200 and sha256(mounted.content) == layer

    digest = image.manifest_digest
    r = requests.delete(f"{reg.url}/v2/{target}/manifests/{digest}", timeout=30)
    assert r.status_code == 202
    assert get_manifest(reg.url, target, "v1").status_code == 404
    keys = rgw.keys(bucket)
    assert not [k for k in keys if f"repositories/{target}/_manifests/" in k], keys
    assert requests.delete(f"{reg.url}/v2/{target}/blobs/{layer}", timeout=30).status_code == 202
    assert link not in rgw.keys(bucket)
    assert requests.head(f"{reg.url}/v2/{target}/blobs/{layer}", timeout=30).status_code == 404
    assert requests.head(f"{reg.url}/v2/{source}/blobs/{layer}", timeout=30).status_code == 200
    assert blob_key(layer) in rgw.keys(bucket)  # the blob itself is gc's to remove


def test_listing_and_delete_cross_the_1000_key_page(rgw: RgwServer) -> None:
    """1100 keys under one directory: list, walk and delete each need two S3 pages."""
    bucket = rgw.new_bucket("rgw-list")
    driver = S3Driver(parse_s3_params(rgw.s3_params(bucket)))
    count = 1100

    async def go() -> None:
        try:
            limit = asyncio.Semaphore(32)

            async def put(i: int) -> None:
                async with limit:
                    await driver.put_content(f"/many/k{i:05d}", str(i).encode())

            await asyncio.gather(*(put(i) for i in range(count)))
            await driver.put_content("/many/sub/deeper", b"x")
            await driver.put_content("/other", b"keep")
            listed = await driver.list("/many")
            assert len(listed) == count + 1
            assert set(listed) == {f"/many/k{i:05d}" for i in range(count)} | {"/many/sub"}
            walked = await driver.walk("/many")
            assert len(walked) == count + 1
            assert await driver.get_content("/many/k01099") == b"1099"
            await driver.delete("/many")
            with pytest.raises(PathNotFoundError):
                await driver.list("/many")
        finally:
            await driver.close()

    asyncio.run(go())
    assert rgw.keys(bucket) == ["other"]
