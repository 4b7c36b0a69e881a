"""Pull-through mirroring: fetch once, serve from the cache, refuse writes, survive outages.

The upstream is the reference registry with htpasswd auth behind a counting proxy
(``support.upstreamproxy``), so every assertion on "how many upstream requests" counts what
actually crossed the wire.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import threading

import pytest
import requests
from support.images import MANIFEST_ACCEPT, push_image, sha256_digest
from support.waiting import eventually

from .conftest import blob_path, mirror_entry, seed_upstream


def _pull(base: str, repo: str, ref: str) -> dict[str, bytes]:
    """Manifest by tag, then config and layers: every body checked against its digest."""
    got: dict[str, bytes] = {}
    r = requests.get(f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == sha256_digest(r.content)
    got["manifest"] = r.content
    doc = r.json()
    for desc in [doc["config"], *doc["layers"]]:
        b = requests.get(f"{base}/v2/{repo}/blobs/{desc['digest']}", timeout=120)
        assert b.status_code == 200, b.text
        assert sha256_digest(b.content) == desc["digest"]
        assert len(b.content) == desc["size"]
        got[desc["digest"]] = b.content
    return got


def test_pull_through_prefix_fetches_once(make_registry, proxy, upstream, upstream_session, images):
    image = images.get(seed=1301)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    name = f"hub/{remote}"
    first = _pull(reg.url, name, "latest")
    assert set(first) == {"manifest", image.config_digest, *image.layer_digests}
    for d in image.layer_digests:
        assert proxy.count("GET", f"/blobs/{d}") == 1
    assert proxy.count("GET", "/manifests/") == 1
    # Again: by digest nothing is asked; the tag is checked with a HEAD only.
    proxy.reset()
    again = _pull(reg.url, name, "latest")
    assert again == first
    assert proxy.count("GET") == 0
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/latest") == 1
    # Stored in the ordinary layout under the local name: catalog and tags see it.
    assert blob_path(reg.root, image.layer_digests[0]).exists()
    cat = requests.get(f"{reg.url}/v2/_catalog").json()
    assert name in cat["repositories"]
    tags = requests.get(f"{reg.url}/v2/{name}/tags/list").json()
    assert tags == {"name": name, "tags": ["latest"]}


def test_writes_to_mirrored_names_are_refused_ordinary_repos_work(make_registry, proxy, images):
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    r = requests.post(f"{reg.url}/v2/hub/library/x/blobs/uploads/")
    assert r.status_code == 405
    assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
    r = requests.put(f"{reg.url}/v2/hub/library/x/manifests/latest", data=b"{}")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    r = requests.delete(f"{reg.url}/v2/hub/library/x/manifests/latest")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert proxy.count("GET") + proxy.count("HEAD") == 0
    # Beside the mirror, an ordinary repository takes pushes as before (and "hubx" is not "hub").
    image = images.get(seed=1302)
    for repo in ("mine/app", "hubx/app"):
        push_image(reg.url, repo, image)
        assert _pull(reg.url, repo, "latest")["manifest"] == image.top.data


def test_allow_list_and_upstream_404(make_registry, proxy, upstream, upstream_session, images):
    image = images.get(seed=1303)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy, repositories=["library/**"])]})
    assert _pull(reg.url, f"hub/{remote}", "latest")
    r = requests.get(f"{reg.url}/v2/hub/other/thing/manifests/latest")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert proxy.count("GET", "/v2/other/") + proxy.count("HEAD", "/v2/other/") == 0
    r = requests.get(f"{reg.url}/v2/hub/{remote}/manifests/nosuchtag")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    missing = "sha256:" + "ab" * 32
    r = requests.get(f"{reg.url}/v2/hub/{remote}/blobs/{missing}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"


def test_upstream_down_serves_cache_and_fails_uncached_clearly(
    make_registry, proxy, upstream, upstream_session, images
):
    cached, uncached = images.get(seed=1304), images.get(seed=1305)
    remote = seed_upstream(upstream, upstream_session, cached)
    push_image(upstream.url, remote, uncached, tag="other", session=upstream_session)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy, timeout="2s")]})
    first = _pull(reg.url, f"hub/{remote}", "latest")
    proxy.down = True
    assert _pull(reg.url, f"hub/{remote}", "latest") == first  # stale serve
    r = requests.get(
        f"{reg.url}/v2/hub/{remote}/manifests/other", headers={"Accept": MANIFEST_ACCEPT}
    )
    assert r.status_code == 503
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
    assert "upstream" in r.json()["errors"][0]["message"]
    r = requests.get(f"{reg.url}/v2/hub/{remote}/blobs/{uncached.layer_digests[0]}")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"
    tags = requests.get(f"{reg.url}/v2/hub/{remote}/tags/list")
    assert tags.status_code == 200 and tags.json()["tags"] == ["latest"]
    assert "serving the cached" in reg.log_tail(20000)


def test_storm_one_upstream_get_per_blob_and_manifest(
    make_registry, proxy, upstream, upstream_session, images
):
    """50 concurrent pulls of an uncached image through two workers: one upstream GET each."""
    image = images.get(seed=1306, payload_size=8 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    gate = proxy.gate(f"/blobs/{layer}")  # hold the layer until every client is waiting on it
    # tagfreshness: a client arriving after the first check finished takes its outcome too
    # (with 0 it would check again, as registry:2 does: correct, but the count would depend
    # on when the threads start).
    entry = mirror_entry(proxy, tagfreshness="1m")
    reg = make_registry(config={"mirrors": [entry]}, workers=2)
    clients = 50
    received = [0] * clients
    results: list[dict[str, bytes] | None] = [None] * clients

    def pull(i: int) -> None:
        base, name = reg.url, f"hub/{remote}"
        r = requests.get(f"{base}/v2/{name}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT})
        assert r.status_code == 200, r.text
        doc = r.json()
        out = {"manifest": r.content}
        for desc in [doc["config"], *doc["layers"]]:
            with requests.get(f"{base}/v2/{name}/blobs/{desc['digest']}", stream=True) as b:
                assert b.status_code == 200, b.text
                h, data = hashlib.sha256(), bytearray()
                for chunk in b.iter_content(64 * 1024):
                    data += chunk
                    if desc["digest"] == layer:
                        received[i] += len(chunk)
                    h.update(chunk)
                assert "sha256:" + h.hexdigest() == desc["digest"]
                out[desc["digest"]] = bytes(data)
        results[i] = out

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(pull, i) for i in range(clients)]
        # Every client has bytes of the layer while the upstream still holds most of it back.
        eventually(lambda: all(n > 0 for n in received), timeout=120)
        assert all(n < image.platforms[0].blobs[-1].size for n in received)
        gate.set()
        for f in futures:
            f.result(timeout=300)
    assert all(r is not None and r == results[0] for r in results)
    for d in [image.config_digest, *image.layer_digests]:
        assert proxy.count("GET", f"/blobs/{d}") == 1, proxy.requests
    assert proxy.count("GET", "/manifests/") == 1, proxy.requests
    # The tag was checked once for all 50 on both workers, not once per client.
    assert proxy.count("HEAD", "/manifests/latest") == 1, proxy.requests


def test_corrupt_upstream_blob_is_refused_and_nothing_stored(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1307, payload_size=1 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    proxy.corrupt.add(f"/blobs/{layer}")
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    url = f"{reg.url}/v2/hub/{remote}/blobs/{layer}"
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(url, timeout=60)
        # If the body came back at all it must not be taken for the whole blob.
        if r.status_code == 200:
            assert len(r.content) < int(r.headers["Content-Length"])
        raise requests.exceptions.ConnectionError(f"status {r.status_code}")
    assert not blob_path(reg.root, layer).exists()
    leftovers = list((reg.root / "docker/registry/v2/_cargohold/mirror/fetch").glob("*.part"))
    assert leftovers == []
    proxy.corrupt.clear()
    r = requests.get(url, timeout=60)
    assert r.status_code == 200 and sha256_digest(r.content) == layer
    assert blob_path(reg.root, layer).exists()


def test_first_bytes_reach_the_client_before_the_upstream_finished(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1308, payload_size=4 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    size = image.platforms[0].blobs[-1].size
    gate = proxy.gate(f"/blobs/{layer}")
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    got = bytearray()
    first = threading.Event()

    def fetch() -> None:
        with requests.get(f"{reg.url}/v2/hub/{remote}/blobs/{layer}", stream=True) as r:
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == size
            for chunk in r.iter_content(16 * 1024):
                got.extend(chunk)
                first.set()

    t = threading.Thread(target=fetch)
    t.start()
    assert first.wait(60), "no byte arrived while the upstream held the rest back"
    assert 0 < len(got) < size
    assert not blob_path(reg.root, layer).exists()  # not visible before it is verified
    gate.set()
    t.join(120)
    assert sha256_digest(bytes(got)) == layer


def test_multi_arch_index_through_the_mirror(
    make_registry, proxy, upstream, upstream_session, images, skopeo, tmp_path
):
    image = images.get(seed=1309, multi_arch=True)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    name = f"hub/{remote}"
    # A client that cannot read indexes gets the linux/amd64 image, fetched on demand.
    amd64 = next(p for p in image.platforms if p.architecture == "amd64")
    r = requests.get(
        f"{reg.url}/v2/{name}/manifests/latest",
        headers={"Accept": amd64.manifest.media_type},
    )
    assert r.status_code == 200, r.text
    assert r.headers["Docker-Content-Digest"] == amd64.manifest_digest
    # skopeo --all: the index and every platform, bytes unchanged.
    out = tmp_path / "layout"
    digest = skopeo.copy_with_digest(
        f"docker://{reg.host}/{name}:latest", f"oci:{out}:x", all_images=True
    )
    assert digest == image.digest
    for p in image.platforms:
        for d in [p.manifest_digest, *p.layer_digests]:
            assert (out / "blobs/sha256" / d.split(":")[1]).exists()
    assert proxy.count("GET", f"/manifests/{amd64.manifest_digest}") == 1


def test_upstream_manners_retry_after_and_backoff(
    make_registry, proxy, upstream, upstream_session, images
):
    """429 with Retry-After is waited out, 5xx retried with backoff: the pull succeeds."""
    image = images.get(seed=1310)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    proxy.fail_next[f"/v2/{remote}/manifests/latest"] = [(429, {"Retry-After": "1"})]
    proxy.fail_next[f"/blobs/{layer}"] = [(503, {}), (502, {})]
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]})
    assert _pull(reg.url, f"hub/{remote}", "latest")
    # 429 (waited out), then 200 (the challenge was learned from GET /v2/ beforehand)
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/latest", status=429) == 1
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/latest", status=200) == 1
    assert proxy.count("HEAD", f"/v2/{remote}/manifests/latest") == 2
    assert proxy.count("GET", f"/blobs/{layer}") == 3  # 503, 502, then the blob
    # A Retry-After longer than we wait is an outage: the cached tag is served meanwhile.
    proxy.fail_next[f"/v2/{remote}/manifests/latest"] = [(429, {"Retry-After": "3600"})]
    r = requests.get(
        f"{reg.url}/v2/hub/{remote}/manifests/latest", headers={"Accept": MANIFEST_ACCEPT}
    )
    assert r.status_code == 200 and r.content == image.top.data
    assert "upstream hub throttles us: waiting 1.0s" in reg.log_tail(20000)
    assert "(Retry-After 3600s); serving the cached" in reg.log_tail(20000)


def test_hung_upstream_times_out_to_the_cache(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1314)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy, timeout="1s")]})
    first = _pull(reg.url, f"hub/{remote}", "latest")
    proxy.stall.add("/manifests/")
    assert _pull(reg.url, f"hub/{remote}", "latest") == first
    assert "serving the cached" in reg.log_tail(20000)
    # The next requests take that outcome for a while instead of waiting out the timeouts.
    asked = proxy.count("HEAD", "/manifests/latest")
    assert _pull(reg.url, f"hub/{remote}", "latest") == first
    assert proxy.count("HEAD", "/manifests/latest") == asked
    r = requests.get(f"{reg.url}/v2/hub/{remote}/manifests/other")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_a_client_that_disconnects_does_not_cancel_the_fetch(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1315, payload_size=4 << 20)
    remote = seed_upstream(upstream, upstream_session, image)
    layer = image.layer_digests[0]
    gate = proxy.gate(f"/blobs/{layer}")
    reg = make_registry(config={"mirrors": [mirror_entry(proxy)]}, workers=2)
    url = f"{reg.url}/v2/hub/{remote}/blobs/{layer}"
    # The first client starts the fetch, takes a few bytes and hangs up.
    first = requests.get(url, stream=True, timeout=120)
    assert first.status_code == 200
    assert first.raw.read(1024)
    # A second client follows the same fetch (on either worker)...
    second_bytes = bytearray()
    started = threading.Event()

    def follow() -> None:
        with requests.get(url, stream=True, timeout=120) as r:
            assert r.status_code == 200
            for chunk in r.iter_content(64 * 1024):
                second_bytes.extend(chunk)
                started.set()

    t = threading.Thread(target=follow)
    t.start()
    assert started.wait(60)
    first.close()  # ...and keeps receiving after the first one left
    gate.set()
    t.join(120)
    assert sha256_digest(bytes(second_bytes)) == layer
    assert proxy.count("GET", f"/blobs/{layer}", status=200) == 1
    assert blob_path(reg.root, layer).exists()


def test_tagfreshness_skips_the_check_on_every_worker(
    make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1316)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config={"mirrors": [mirror_entry(proxy, tagfreshness="1h")]}, workers=2)
    for _ in range(6):  # new connections: both workers serve some
        assert _pull(reg.url, f"hub/{remote}", "latest")["manifest"] == image.top.data
    assert proxy.count("HEAD", "/manifests/latest") == 1
