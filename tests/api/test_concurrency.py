"""Concurrent clients, and requests of one upload spread over several worker processes."""

from __future__ import annotations

import hashlib
import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from .helpers import (
    absolute,
    fetch_blob,
    get_manifest,
    image_manifest,
    push_image,
    put_manifest,
    rand_bytes,
    repo,
    sha256,
    sha512,
    start_upload,
    tags_of,
    with_query,
)

THREADS = 8


def _run_all(fn, count: int = THREADS) -> list:
    barrier = threading.Barrier(count)

    def wrapped(i: int):
        barrier.wait(timeout=30)
        return fn(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(wrapped, range(count)))


def test_same_blob_uploaded_by_8_threads(registry):
    name = repo()
    data = rand_bytes(2 * 1024 * 1024 + 5)
    digest = sha256(data)

    def upload(i: int) -> tuple[int, int, str]:
        with requests.Session() as s:
            url = start_upload(registry.url, name, s)
            half = len(data) // 2
            r = s.patch(url, data=data[:half], headers={"Content-Range": f"0-{half - 1}"})
            assert r.status_code == 202, r.text
            url = absolute(registry.url, r.headers["Location"])
            r = s.put(with_query(url, f"digest={digest}"), data=data[half:])
            return i, r.status_code, r.headers.get("Docker-Content-Digest", "")

    results = _run_all(upload)
    assert [(status, d) for _, status, d in results] == [(201, digest)] * THREADS
    got = fetch_blob(registry.url, name, digest)
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == digest[7:]


def test_same_blob_to_8_repositories_concurrently(registry):
    names = [repo() for _ in range(THREADS)]
    data = rand_bytes(512 * 1024)
    digest = sha256(data)

    def upload(i: int) -> int:
        r = requests.post(f"{registry.url}/v2/{names[i]}/blobs/uploads/?digest={digest}", data=data)
        return r.status_code

    assert _run_all(upload) == [201] * THREADS
    for name in names:
        assert fetch_blob(registry.url, name, digest).content == data


def test_8_threads_push_different_manifests_to_one_tag(registry):
    name = repo()
    manifests = [image_manifest(registry.url, name) for _ in range(THREADS)]

    def push(i: int) -> int:
        m = manifests[i]
        return put_manifest(registry.url, name, "race", m.data, m.media_type).status_code

    assert _run_all(push) == [201] * THREADS
    r = get_manifest(registry.url, name, "race")
    assert r.status_code == 200
    winner = r.headers["Docker-Content-Digest"]
    assert winner in {m.digest for m in manifests}
    assert sha256(r.content) == winner
    for m in manifests:  # every revision stays readable by digest
        g = get_manifest(registry.url, name, m.digest)
        assert g.status_code == 200
        assert g.content == m.data
    assert tags_of(registry.url, name) == ["race"]


def test_manifest_delete_racing_pushes_leaves_listed_tags_resolvable(registry):
    for _attempt in range(6):
        _race_delete_against_pushes(registry)


def _race_delete_against_pushes(registry) -> None:
    name = repo()
    victim = image_manifest(registry.url, name)
    others = [image_manifest(registry.url, name) for _ in range(3)]
    rounds = 25

    def work(i: int) -> None:
        with requests.Session() as s:
            for k in range(rounds):
                if i == 0:
                    r = s.delete(f"{registry.url}/v2/{name}/manifests/{victim.digest}")
                    assert r.status_code in (202, 404), r.text
                elif i == 1:
                    m = others[k % len(others)]
                    r = put_manifest(registry.url, name, f"o{k % 4}", m.data, m.media_type, s)
                    assert r.status_code == 201
                else:
                    r = put_manifest(
                        registry.url, name, f"v{i}-{k % 3}", victim.data, victim.media_type, s
                    )
                    assert r.status_code == 201

    _run_all(work)
    tags = tags_of(registry.url, name)
    assert tags
    for tag in tags:
        r = get_manifest(registry.url, name, tag)
        assert r.status_code == 200, (tag, r.status_code, r.text)
        assert sha256(r.content) == r.headers["Docker-Content-Digest"]


def test_racing_completions_of_one_upload_never_500(registry):
    """Retried completions of one upload (sha512, so the server must re-read the data)."""
    name = repo()
    for _ in range(10):
        data = rand_bytes(8_000_000)
        digest = sha512(data)
        url = start_upload(registry.url, name)
        assert requests.patch(url, data=data).status_code == 202

        def put(i: int, url: str = url, digest: str = digest) -> int:
            return requests.put(with_query(url, f"digest={digest}")).status_code

        statuses = _run_all(put)
        assert set(statuses) <= {201, 404}, statuses
        assert 201 in statuses
        assert fetch_blob(registry.url, name, digest).content == data


def test_same_chunk_sent_by_8_threads_is_accepted_once(registry):
    name = repo()
    data = rand_bytes(256 * 1024)
    url = start_upload(registry.url, name)

    def patch(i: int) -> int:
        r = requests.patch(url, data=data, headers={"Content-Range": f"0-{len(data) - 1}"})
        return r.status_code

    statuses = _run_all(patch)
    assert sorted(statuses) == [202] + [416] * (THREADS - 1)
    st = requests.get(url)
    assert st.status_code == 204
    assert st.headers["Range"] == f"0-{len(data) - 1}"
    r = requests.put(with_query(url, f"digest={sha256(data)}"))
    assert r.status_code == 201, r.text
    assert fetch_blob(registry.url, name, sha256(data)).content == data


def test_same_chunk_sent_concurrently_to_2_workers_is_accepted_once(make_registry):
    reg = make_registry(workers=2)
    name = repo()
    for _ in range(10):
        data = rand_bytes(2_000_000)
        url = start_upload(reg.url, name)

        def patch(i: int, url: str = url, data: bytes = data) -> int:
            r = requests.patch(
                url,
                data=data,
                headers={"Content-Range": f"0-{len(data) - 1}", "Connection": "close"},
            )
            return r.status_code

        statuses = _run_all(patch)
        st = requests.get(url)
        assert sorted(statuses) == [202] + [416] * (THREADS - 1), statuses
        assert st.headers["Range"] == f"0-{len(data) - 1}"


def test_chunked_uploads_over_new_connections_with_2_workers(make_registry):
    """Each request on a new connection, so chunks land on different worker processes."""
    reg = make_registry(workers=2)
    name = repo()
    close = {"Connection": "close"}
    for i in range(20):
        data = rand_bytes(300_000 + i * 1000)
        digest = sha256(data)
        r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", headers=close)
        assert r.status_code == 202
        url = absolute(reg.url, r.headers["Location"])
        bounds = [0, 1, 100_000, 200_001, len(data)]
        for a, b in itertools.pairwise(bounds):
            r = requests.patch(
                url, data=data[a:b], headers={**close, "Content-Range": f"{a}-{b - 1}"}
            )
            assert r.status_code == 202, (i, a, r.text)
            assert r.headers["Range"] == f"0-{b - 1}"
            url = absolute(reg.url, r.headers["Location"])
            # a stale resend of the chunk just accepted is refused wherever it lands
            stale = requests.patch(
                url, data=data[a:b], headers={**close, "Content-Range": f"{a}-{b - 1}"}
            )
            assert stale.status_code == 416, (i, a, stale.status_code)
            st = requests.get(url, headers=close)
            assert st.status_code == 204
            assert st.headers["Range"] == f"0-{b - 1}"
        r = requests.put(with_query(url, f"digest={digest}"), headers=close)
        assert r.status_code == 201, (i, r.text)
        assert r.headers["Docker-Content-Digest"] == digest
        got = requests.get(f"{reg.url}/v2/{name}/blobs/{digest}", headers=close)
        assert got.status_code == 200
        assert sha256(got.content) == digest


def test_streamed_uploads_over_new_connections_with_2_workers(make_registry):
    """skopeo style (streamed PATCH, PUT without body) with a new connection per request."""
    reg = make_registry(workers=2)
    name = repo()
    close = {"Connection": "close"}
    for i in range(20):
        data = rand_bytes(64 * 1024 + i)
        digest = sha256(data)
        r = requests.post(f"{reg.url}/v2/{name}/blobs/uploads/", headers=close)
        url = absolute(reg.url, r.headers["Location"])
        r = requests.patch(url, data=iter([data[:1000], data[1000:]]), headers=close)
        assert r.status_code == 202
        url = absolute(reg.url, r.headers["Location"])
        r = requests.patch(url, data=b"tail", headers=close)
        assert r.status_code == 202
        url = absolute(reg.url, r.headers["Location"])
        r = requests.put(with_query(url, f"digest={sha256(data + b'tail')}"), headers=close)
        assert r.status_code == 201, (i, r.text)
        got = requests.get(f"{reg.url}/v2/{name}/blobs/{sha256(data + b'tail')}", headers=close)
        assert got.content == data + b"tail"
        assert digest != sha256(data + b"tail")


def test_manifest_reads_are_consistent_across_2_workers(make_registry):
    reg = make_registry(workers=2)
    name = repo()
    close = {"Connection": "close"}
    for _ in range(10):
        m = push_image(reg.url, name, "moving")
        for _ in range(3):
            r = get_manifest(reg.url, name, "moving", headers=close)
            assert r.status_code == 200
            assert r.headers["Docker-Content-Digest"] == m.digest
    assert requests.delete(f"{reg.url}/v2/{name}/manifests/{m.digest}").status_code == 202
    for _ in range(6):
        r = get_manifest(reg.url, name, m.digest, headers=close)
        assert r.status_code == 404
