"""``storage.maintenance.readonly`` refuses every write; upload purging runs on its schedule."""

from __future__ import annotations

import time

import requests
from support.images import push_blob, push_image, sha256_digest
from support.servers import unique_repo

from .helpers import V2, verify_image


def _unsupported(resp: requests.Response) -> None:
    assert resp.status_code == 405, (resp.request.method, resp.url, resp.status_code, resp.text)
    error = resp.json()["errors"][0]
    assert error["code"] == "UNSUPPORTED"
    assert "read-only" in error["message"]


def test_read_only_refuses_every_write_and_serves_pulls(make_registry, images, skopeo, tmp_path):
    root = tmp_path / "store"
    writable = make_registry(root=root)
    repo = unique_repo("ro")
    image = images.get(900)
    push_image(writable.url, repo, image, tag="t")
    upload = requests.post(f"{writable.url}/v2/{repo}/blobs/uploads/", timeout=10)
    location = writable.url + upload.headers["Location"]
    writable.stop()

    reg = make_registry(
        root=root, config={"storage": {"maintenance": {"readonly": {"enabled": True}}}}
    )
    location = location.replace(writable.url, reg.url)
    verify_image(reg.url, repo, "t", image)
    digest = sha256_digest(b"x")
    sep = "&" if "?" in location else "?"
    _unsupported(requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10))
    _unsupported(
        requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/?digest={digest}", data=b"x", timeout=10)
    )
    _unsupported(
        requests.post(
            f"{reg.url}/v2/{repo}/blobs/uploads/?mount={image.layer_digests[0]}&from={repo}",
            timeout=10,
        )
    )
    _unsupported(requests.patch(location, data=b"x", timeout=10))
    _unsupported(requests.put(f"{location}{sep}digest={digest}", data=b"x", timeout=10))
    _unsupported(requests.delete(location, timeout=10))
    _unsupported(
        requests.put(
            f"{reg.url}/v2/{repo}/manifests/t2",
            data=image.top.data,
            headers={"Content-Type": image.media_type},
            timeout=10,
        )
    )
    _unsupported(requests.delete(f"{reg.url}/v2/{repo}/manifests/t", timeout=10))
    _unsupported(requests.delete(f"{reg.url}/v2/{repo}/manifests/{image.digest}", timeout=10))
    _unsupported(requests.delete(f"{reg.url}/v2/{repo}/blobs/{image.layer_digests[0]}", timeout=10))
    proc = skopeo.copy(images.get(901).oci_ref(), f"docker://{reg.host}/{repo}:new", check=False)
    assert proc.returncode != 0
    assert "read-only" in proc.stderr or "unsupported" in proc.stderr.lower(), proc.stderr
    # nothing changed on disk, and reads still work
    verify_image(reg.url, repo, "t", image)
    assert requests.get(f"{reg.url}/v2/{repo}/tags/list", timeout=10).json()["tags"] == ["t"]


def test_stale_uploads_are_purged_on_schedule(make_registry):
    config = {
        "storage": {
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": "1h", "interval": "1s", "dryrun": False}
            }
        }
    }
    reg = make_registry(config=config)
    repo = unique_repo("purge")
    stale = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10)
    fresh = requests.post(f"{reg.url}/v2/{repo}/blobs/uploads/", timeout=10)
    stale_id, fresh_id = stale.headers["Docker-Upload-UUID"], fresh.headers["Docker-Upload-UUID"]
    uploads = reg.root / V2 / "repositories" / repo / "_uploads"
    # registry:2's startedat format, two hours ago
    two_hours_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 7200))
    (uploads / stale_id / "startedat").write_text(two_hours_ago)
    digest = push_blob(reg.url, repo, b"finished blob")
    deadline = time.monotonic() + 20
    while (uploads / stale_id).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (uploads / stale_id).exists(), "the stale upload was never purged"
    assert (uploads / fresh_id).exists(), "a fresh upload was purged"
    assert requests.head(f"{reg.url}/v2/{repo}/blobs/{digest}", timeout=10).status_code == 200
