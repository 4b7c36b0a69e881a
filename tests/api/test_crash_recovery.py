"""A registry killed half-way through publishing an upload leaves a store a retry can finish."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import requests

from tests.api.helpers import (
    assert_error,
    fetch_blob,
    rand_bytes,
    repo,
    sha256,
    start_upload,
    with_query,
)


def _upload_dir(root, name: str, url: str):
    upload_id = urlsplit(url).path.rsplit("/", 1)[-1]
    return root / "docker/registry/v2/repositories" / name / "_uploads" / upload_id


def test_put_retried_after_a_crash_between_move_and_link(registry):
    """The first PUT moved the verified data to its digest and died before linking it (the
    state a SIGKILL leaves at that instant, made here by doing the move by hand): the retried
    PUT answers 201 and the blob is readable through the repository."""
    name = repo()
    data = rand_bytes(300_000)
    digest = sha256(data)
    url = start_upload(registry.url, name)
    assert requests.patch(url, data=data).status_code == 202
    upload = _upload_dir(registry.root, name, url)
    blob = registry.root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.rename(upload / "data", blob)
    assert fetch_blob(registry.url, name, digest).status_code == 404  # not linked yet

    r = requests.put(with_query(url, f"digest={digest}"))
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert fetch_blob(registry.url, name, digest).content == data
    assert not upload.exists()


def test_an_empty_upload_cannot_link_a_blob_it_never_sent(registry):
    """The recovery above must not let an upload claim a blob of another repository."""
    other = repo()
    data = rand_bytes(5000)
    digest = sha256(data)
    url = start_upload(registry.url, other)
    assert requests.put(with_query(url, f"digest={digest}"), data=data).status_code == 201

    name = repo()
    url = start_upload(registry.url, name)
    r = requests.put(with_query(url, f"digest={digest}"))
    assert_error(r, 400, "DIGEST_INVALID")
    assert fetch_blob(registry.url, name, digest).status_code == 404
