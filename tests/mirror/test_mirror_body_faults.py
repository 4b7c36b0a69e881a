"""An upstream that sends a manifest's or a tag list's status and headers, then stalls or cuts
the connection halfway through the body: an upstream failure like any other (the cached copy
served, else the spec's 503 UNAVAILABLE), not an error of the server. The upstream proxy
(``support.upstreamproxy``: ``stall_body``, ``cut_body``) does it on every such request."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from support.images import MANIFEST_ACCEPT, push_image, sha256_digest
from support.upstreamproxy import UpstreamProxy

from .conftest import mirror_entry, seed_upstream

TIMEOUT = 120
FAULTS = ("stall_body", "cut_body")
READONLY = {"storage": {"maintenance": {"readonly": {"enabled": True}}}}


def _manifest(base: str, repo: str, ref: str) -> requests.Response:
    return requests.get(
        f"{base}/v2/{repo}/manifests/{ref}", headers={"Accept": MANIFEST_ACCEPT}, timeout=TIMEOUT
    )


def _mirrors(proxy: UpstreamProxy) -> dict[str, Any]:
    """A mirror of the proxied upstream that gives up on a silent upstream after a second."""
    return {"mirrors": [mirror_entry(proxy, timeout="1s")]}


def _unavailable(r: requests.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text[:500])
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.json()["errors"][0]
    assert error["code"] == "UNAVAILABLE" and "upstream" in error["message"]


@pytest.mark.parametrize("fault", FAULTS)
def test_tag_list_body_fault_lists_the_cached_tags(
    fault, make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1341)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config=_mirrors(proxy))
    assert _manifest(reg.url, f"hub/{remote}", "latest").status_code == 200  # cached now
    push_image(upstream.url, remote, images.get(seed=1342), tag="newer", session=upstream_session)
    getattr(proxy, fault).add("/tags/list")
    r = requests.get(f"{reg.url}/v2/hub/{remote}/tags/list", timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    assert r.json() == {"name": f"hub/{remote}", "tags": ["latest"]}  # not the upstream's
    assert proxy.count("GET", "/tags/list") >= 1
    assert "listing the cached tags" in reg.log_tail(20000)


@pytest.mark.parametrize("fault", FAULTS)
def test_manifest_body_fault_without_a_cached_copy_is_unavailable(
    fault, make_registry, proxy, upstream, upstream_session, images
):
    image = images.get(seed=1343)
    remote = seed_upstream(upstream, upstream_session, image)
    reg = make_registry(config=_mirrors(proxy))
    getattr(proxy, fault).add("/manifests/")
    digest = sha256_digest(image.top.data)
    _unavailable(_manifest(reg.url, f"hub/{remote}", digest))  # by digest
    _unavailable(_manifest(reg.url, f"hub/{remote}", "latest"))  # by tag: HEAD, then GET
    assert proxy.count("GET", "/manifests/") >= 2
    # Nothing half-read was kept: once the upstream answers whole, the manifest is fetched.
    getattr(proxy, fault).clear()
    r = _manifest(reg.url, f"hub/{remote}", digest)
    assert r.status_code == 200 and r.content == image.top.data


@pytest.mark.parametrize("readonly", [False, True], ids=["writable", "readonly"])
@pytest.mark.parametrize("fault", FAULTS)
def test_manifest_body_fault_of_a_moved_tag_serves_the_cached_one(
    fault, readonly, make_registry, proxy, upstream, upstream_session, images
):
    """The tag moved upstream (its HEAD names a new digest) but the new manifest's body fails:
    the cached manifest of the tag is served, as when the upstream is down (in read-only mode
    too, where the new one would have been passed through)."""
    image = images.get(seed=1344)
    remote = seed_upstream(upstream, upstream_session, image)
    mirrors = _mirrors(proxy)
    reg = make_registry(config=mirrors)
    first = _manifest(reg.url, f"hub/{remote}", "latest")
    assert first.status_code == 200 and first.content == image.top.data
    if readonly:
        root = reg.root
        reg.stop()
        reg = make_registry(config={**mirrors, **READONLY}, root=root)
    moved = images.get(seed=1345)
    push_image(upstream.url, remote, moved, session=upstream_session)  # "latest" moves
    getattr(proxy, fault).add("/manifests/")
    r = _manifest(reg.url, f"hub/{remote}", "latest")
    assert r.status_code == 200, r.text[:500]
    assert r.content == image.top.data
    assert proxy.count("GET", f"/manifests/{sha256_digest(moved.top.data)}") >= 1
    assert "serving the cached" in reg.log_tail(20000)
