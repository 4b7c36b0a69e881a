"""Upload URLs carry a ``_state`` signed with http.secret: replicas sharing the secret continue
each other's uploads; a tampered, foreign or expired state is refused; a stripped one is fine."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from support.servers import RegistryProcess, unique_repo

from cargohold.api import uploadstate
from cargohold.errors import RegistryError

Factory = Callable[..., RegistryProcess]
# registry:2's status for BLOB_UPLOAD_INVALID (cargohold.errors), so clients restart the upload.
INVALID = (404, "BLOB_UPLOAD_INVALID")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def start(reg: RegistryProcess, name: str) -> str:
    r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", timeout=30)
    assert r.status_code == 202
    return reg.url + r.headers["Location"]


def state_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["_state"][0]


def with_state(url: str, state: str | None) -> str:
    base = url.split("?")[0]
    return base if state is None else f"{base}?_state={state}"


def code(r: requests.Response) -> tuple[int, str]:
    return r.status_code, r.json()["errors"][0]["code"]


def every_method(url: str) -> list[requests.Response]:
    digest = sha256(b"x")
    return [
        requests.get(url, timeout=30),
        requests.patch(url, data=b"x", timeout=30),
        requests.put(f"{url}&digest={digest}", data=b"x", timeout=30),
        requests.delete(url, timeout=30),
    ]


def test_state_is_signed_and_checked(make_registry: Factory) -> None:
    reg = make_registry(config={"http": {"secret": "one-secret"}})
    name = unique_repo("state")
    url = start(reg, name)
    payload_b64, mac = state_of(url).split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    assert payload["name"] == name and payload["offset"] == 0
    assert payload["uuid"] == urlsplit(url).path.rsplit("/", 1)[-1]

    forged = dict(payload, offset=12345)
    forged_b64 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad in (f"{forged_b64}.{mac}", "garbage", f"{payload_b64}.{mac[:-2]}AA"):
        for r in every_method(with_state(url, bad)):
            assert code(r) == INVALID, (r.request.method, r.text)

    # The upload is untouched by all of that, and completes normally.
    r = requests.patch(url, data=b"hello", timeout=30)
    assert r.status_code == 202
    after = reg.url + r.headers["Location"]
    assert json.loads(base64.urlsafe_b64decode(state_of(after).split(".")[0] + "=="))["offset"] == 5
    assert requests.put(f"{after}&digest={sha256(b'hello')}", timeout=30).status_code == 201


def test_replicas_with_one_secret_continue_each_others_uploads(
    make_registry: Factory, tmp_path: Path
) -> None:
    root = tmp_path / "shared"
    a = make_registry(config={"http": {"secret": "shared"}}, root=root)
    b = make_registry(config={"http": {"secret": "shared"}}, root=root)
    stranger = make_registry(config={"http": {"secret": "another"}}, root=root)
    name = unique_repo("state/replicas")
    data = os.urandom(300_000)
    url = start(a, name)
    on = [a, b, a, b]
    for i, reg in enumerate(on):
        piece = data[i * 75_000 : (i + 1) * 75_000]
        target = url.replace(urlsplit(url).netloc, reg.host)
        r = requests.patch(
            target, data=piece, headers={"Content-Range": f"{i * 75_000}-{(i + 1) * 75_000 - 1}"}
        )
        assert r.status_code == 202, r.text
        url = reg.url + r.headers["Location"]
    foreign = url.replace(urlsplit(url).netloc, stranger.host)
    for r in every_method(foreign):
        assert code(r) == INVALID
    final = url.replace(urlsplit(url).netloc, b.host)
    assert requests.put(f"{final}&digest={sha256(data)}", timeout=30).status_code == 201
    blob = requests.get(f"{a.url}/v2/{name}/blobs/{sha256(data)}", timeout=30)
    assert blob.content == data


def test_a_stripped_state_is_accepted(make_registry: Factory) -> None:
    reg = make_registry(config={"http": {"secret": "s"}})
    name = unique_repo("state/stripped")
    bare = with_state(start(reg, name), None)
    r = requests.patch(bare, data=b"abc", timeout=30)
    assert r.status_code == 202 and "_state=" in r.headers["Location"]
    assert requests.get(bare, timeout=30).headers["Range"] == "0-2"
    assert requests.put(f"{bare}?digest={sha256(b'abc')}", timeout=30).status_code == 201


def test_an_expired_state_is_refused(make_registry: Factory) -> None:
    reg = make_registry(config={"http": {"secret": "s"}})
    name = unique_repo("state/expired")
    url = start(reg, name)
    upload_id = urlsplit(url).path.rsplit("/", 1)[-1]
    old = (datetime.now(UTC) - timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    token = uploadstate.sign("s", uploadstate.UploadState(name, upload_id, 0, old))
    for r in every_method(with_state(url, token)):
        assert code(r) == INVALID
        assert "expired" in r.json()["errors"][0]["message"]
    assert requests.get(url, timeout=30).status_code == 204  # the fresh state still works


def test_verify_unit() -> None:
    state = uploadstate.UploadState("a/b", "u", 3, "2030-01-01T00:00:00Z")
    token = uploadstate.sign("k", state)
    at = datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    assert uploadstate.verify("k", token, 2 * 86400, at=at) == state
    with pytest.raises(uploadstate.ExpiredState):
        uploadstate.verify("k", token, 3600, at=at)
    with pytest.raises(RegistryError):
        uploadstate.verify("other", token, 2 * 86400, at=at)


def test_workers_share_a_generated_secret(make_registry: Factory) -> None:
    """No http.secret and --workers 2: one secret, generated before forking, with a warning."""
    reg = make_registry(workers=2)
    name = unique_repo("state/workers")
    data = os.urandom(64_000)
    url = start(reg, name)
    for i in range(32):  # a new connection each time: the kernel spreads them over both workers
        piece = data[i * 2000 : (i + 1) * 2000]
        r = requests.patch(
            url,
            data=piece,
            headers={"Content-Range": f"{i * 2000}-{(i + 1) * 2000 - 1}", "Connection": "close"},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        url = reg.url + r.headers["Location"]
    assert requests.put(f"{url}&digest={sha256(data)}", timeout=30).status_code == 201
    log = reg.log_tail(200_000)
    assert log.count("http.secret is not set") == 1, log
