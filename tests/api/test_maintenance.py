"""Upload purging (``storage.maintenance.uploadpurging``)."""

from __future__ import annotations

import time

import requests

from .helpers import assert_error, push_blob, repo, sha256, start_upload, with_query

POLL_LIMIT = 15.0


def _purging(dryrun: bool) -> dict:
    return {
        "storage": {
            "maintenance": {
                "uploadpurging": {
                    "enabled": True,
                    "age": "1s",
                    "interval": "1s",
                    "dryrun": dryrun,
                }
            }
        }
    }


def _poll(predicate, limit: float = POLL_LIMIT) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.25)
    return predicate()


def test_stale_uploads_are_purged(make_registry):
    reg = make_registry(config=_purging(dryrun=False))
    name = repo()
    url = start_upload(reg.url, name)
    assert requests.patch(url, data=b"partial").status_code == 202
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    upload_dir = reg.root / "docker/registry/v2/repositories" / name / "_uploads" / upload_id
    assert (upload_dir / "data").read_bytes() == b"partial"
    assert _poll(lambda: "BLOB_UPLOAD_UNKNOWN" in requests.get(url).text), "upload never purged"
    assert_error(requests.get(url), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(
        requests.put(with_query(url, f"digest={sha256(b'partial')}")), 404, "BLOB_UPLOAD_UNKNOWN"
    )
    assert not upload_dir.exists()


def test_purging_keeps_finished_blobs(make_registry):
    reg = make_registry(config=_purging(dryrun=False))
    name = repo()
    digest = push_blob(reg.url, name, b"finished blob")
    url = start_upload(reg.url, name)
    assert _poll(lambda: "BLOB_UPLOAD_UNKNOWN" in requests.get(url).text), "upload never purged"
    r = requests.get(f"{reg.url}/v2/{name}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b"finished blob"


def test_dry_run_purging_keeps_uploads(make_registry):
    reg = make_registry(config=_purging(dryrun=True))
    name = repo()
    url = start_upload(reg.url, name)
    upload_id = url.split("?")[0].rsplit("/", 1)[-1]
    assert _poll(lambda: f"{upload_id} (dry run)" in reg.log_tail(200_000)), reg.log_tail()
    st = requests.get(url)
    assert st.status_code == 204
    data = b"still usable"
    assert requests.put(with_query(url, f"digest={sha256(data)}"), data=data).status_code == 201
