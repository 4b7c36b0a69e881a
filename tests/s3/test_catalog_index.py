"""The repository index on S3 (moto): catalog order across pages, replicas pushing and deleting
at once, and the move from the first index layout. ``tests/scale/test_catalog_100k.py`` has
what a page costs in a bucket of 100,000 repositories."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest
import requests
from support.faultproxy import FaultProxy
from support.images import push_blob, push_manifest, sha256_digest
from support.servers import RegistryProcess, reference_available
from support.stores import MotoServer
from support.waiting import eventually

from cargohold.digest import Digest
from cargohold.registry.catalog import order_key
from cargohold.storage import paths

Factory = Callable[..., RegistryProcess]
CONFIG_BLOB = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
INDEX_PREFIX = paths.CATALOG.lstrip("/") + "/"
# Every neighbour of "/" in a name: "-", ".", "_" and digits sort differently in plain key order.
NAMES = [
    "a", "a/b", "a/b/c", "a-c", "a.b", "a_b", "a__b", "ab", "a0", "a/a-b", "a/a/b", "a-/x",
    "b", "b/a", "b-a/x", "b.a/x", "c/d/e", "c/d-e", "c/d.e", "c/d_e", "lib/alpine",
    "lib/alpine-edge", "lib/alpine/sub", "lib/alpine.x", "z9", "z10", "z1/z",
]  # fmt: skip
NAMES = [n for n in NAMES if n != "a-/x"]  # ("a-" is no valid component)


def manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(CONFIG_BLOB),
                "size": len(CONFIG_BLOB),
            },
            "layers": [],
        }
    ).encode()


def push(url: str, name: str, tag: str = "v1") -> None:
    """The smallest image: a config blob and a manifest with no layers."""
    http = requests.Session()
    push_blob(url, name, CONFIG_BLOB, session=http)
    push_manifest(url, name, tag, manifest(), session=http)


def catalog(url: str, n: int) -> list[str]:
    """Every repository, following ``Link`` pages of ``n``; each page checked on the way."""
    names: list[str] = []
    nxt: str | None = f"/v2/_catalog?n={n}"
    while nxt:
        r = requests.get(url + nxt, timeout=60)
        assert r.status_code == 200, r.text
        page = r.json()["repositories"]
        assert len(page) <= n
        names += page
        link = r.headers.get("Link")
        if link is not None:
            assert len(page) == n
            last = page[-1].replace("/", "%2F")  # registry:2's form, byte for byte
            assert link == f'</v2/_catalog?last={last}&n={n}>; rel="next"'
        nxt = link[1 : link.index(">")] if link else None
        assert len(names) < 1000
    return names


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    server = FaultProxy(moto).start()
    yield server
    server.stop()


def index_listings(proxy: FaultProxy) -> int:
    return sum(
        1
        for s in list(proxy.seen)
        if "list-type=2" in s.path_qs and f"prefix={INDEX_PREFIX}" in unquote(s.path_qs)
    )


def layout_listings(proxy: FaultProxy) -> int:
    prefix = paths.REPOSITORIES.lstrip("/")
    return sum(
        1
        for s in list(proxy.seen)
        if "list-type=2" in s.path_qs and f"prefix={prefix}" in unquote(s.path_qs)
    )


def test_names_page_in_registry2_order_across_page_boundaries(
    moto: MotoServer, proxy: FaultProxy, make_registry: Factory, make_reference_registry: Factory
) -> None:
    bucket = moto.new_bucket("order")
    reg = make_registry(config={"storage": proxy.storage_section(bucket)})
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: push(reg.url, n), NAMES))
    expected = sorted(NAMES, key=order_key)  # the filesystem walk's order (test_catalog.py)
    assert expected != sorted(NAMES)  # plain string order differs: the test means something
    assert catalog(reg.url, 1000) == expected  # (the first call builds the index)
    eventually(lambda: paths.CATALOG_BUILT.lstrip("/") in moto.keys(bucket), timeout=60)
    keys = moto.keys(bucket, INDEX_PREFIX)
    assert sorted(keys) == [INDEX_PREFIX + paths.catalog_key(n) for n in expected]
    for n in (1, 2, 3, 5, 8):
        proxy.reset_counts()
        assert catalog(reg.url, n) == expected, n
        pages = -(-len(expected) // n)
        assert index_listings(proxy) == pages, n  # n + 1 asked: no empty last page
        assert layout_listings(proxy) == 0
    for i, last in enumerate(expected):
        r = requests.get(f"{reg.url}/v2/_catalog?n=3&last={last}", timeout=30)
        assert r.json()["repositories"] == expected[i + 1 : i + 4], last
    if reference_available():  # the same bucket through registry:2: the same pages
        ref = make_reference_registry(config={"storage": moto.storage_section(bucket)})
        for n in (3, 1000):
            assert catalog(ref.url, n) == expected, n


def test_replicas_pushing_at_once_all_appear(s3_registry: Callable[..., RegistryProcess]) -> None:
    first = s3_registry()
    second = s3_registry(bucket=first.bucket)  # type: ignore[attr-defined]
    catalog(first.url, 100)  # the index is built (empty) before the pushes
    names = [f"team{i % 3}/app-{i:02d}" for i in range(24)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: push((first, second)[i % 2].url, names[i]), range(len(names))))
    expected = sorted(names, key=order_key)
    # Acknowledged pushes are in the catalog at once, on either replica, for any page size.
    for reg in (first, second):
        for n in (5, 100):
            assert catalog(reg.url, n) == expected


def test_a_push_racing_the_delete_of_the_last_manifest(
    s3_registry: Callable[..., RegistryProcess],
) -> None:
    """Replica A deletes the repository's only manifest while replica B pushes it again: the
    catalog lists the repository exactly when it has manifests, whoever won."""
    config = {"storage": {"delete": {"enabled": True}}}
    a = s3_registry(config=config)
    b = s3_registry(bucket=a.bucket, config=config)  # type: ignore[attr-defined]
    name = "race/app"
    digest = sha256_digest(manifest())
    push(a.url, name)
    start = threading.Barrier(2)
    for _ in range(8):

        def delete() -> None:
            start.wait()
            r = requests.delete(f"{a.url}/v2/{name}/manifests/{digest}", timeout=60)
            assert r.status_code in (202, 404), r.text

        def repush() -> None:
            start.wait()
            push_manifest(b.url, name, "v1", manifest())

        with ThreadPoolExecutor(2) as pool:
            for f in [pool.submit(delete), pool.submit(repush)]:
                f.result()
        # A repository is what has anything below ``_manifests``: the revision, or a tag
        # (the delete may have removed the tags before the push, the revision after it).
        head = requests.head(f"{a.url}/v2/{name}/manifests/{digest}", timeout=30)
        tags = requests.get(f"{a.url}/v2/{name}/tags/list", timeout=30)
        assert head.status_code in (200, 404) and tags.status_code in (200, 404)
        present = head.status_code == 200 or bool(tags.status_code == 200 and tags.json()["tags"])
        for reg in (a, b):
            assert (name in catalog(reg.url, 100)) == present
        if not present:
            push(a.url, name)


def test_the_first_index_layout_is_replaced(
    moto: MotoServer, proxy: FaultProxy, make_registry: Factory
) -> None:
    """A bucket indexed by an earlier cargohold (``_cargohold/catalog/<name>/_repository``, in
    plain key order): the first catalog call answers from a walk of the layout, the new entries
    are written, the old ones removed, and pages then cost one listing of the new index."""
    bucket = moto.new_bucket("legacy")
    client = moto.client()
    digest = Digest.parse(sha256_digest(b"x"))
    root = paths.ROOT.lstrip("/")
    legacy = f"{root}/_cargohold/catalog"
    for name in NAMES:
        link = paths.revision_link(name, digest).lstrip("/")
        client.put_object(Bucket=bucket, Key=link, Body=str(digest).encode())
        client.put_object(Bucket=bucket, Key=f"{legacy}/{name}/_repository", Body=b"")
    # A stale entry of the old index (its repository is gone) and the old marker.
    client.put_object(Bucket=bucket, Key=f"{legacy}/gone/_repository", Body=b"")
    client.put_object(Bucket=bucket, Key=f"{legacy}-built", Body=b"2026-01-01T00:00:00Z")
    reg = make_registry(config={"storage": proxy.storage_section(bucket)})
    expected = sorted(NAMES, key=order_key)
    assert catalog(reg.url, 4) == expected
    eventually(lambda: paths.CATALOG_BUILT.lstrip("/") in moto.keys(bucket), timeout=60)
    assert moto.keys(bucket, f"{legacy}/") == []
    assert f"{legacy}-built" not in moto.keys(bucket)
    keys = moto.keys(bucket, INDEX_PREFIX)
    assert sorted(keys) == [INDEX_PREFIX + paths.catalog_key(n) for n in expected]
    proxy.reset_counts()
    r = requests.get(f"{reg.url}/v2/_catalog?n=3&last=a/b/c", timeout=30)
    assert r.json()["repositories"] == expected[expected.index("a/b/c") + 1 :][:3]
    assert (index_listings(proxy), layout_listings(proxy)) == (1, 0)


def test_pages_on_a_real_s3_server(rgw_registry: Callable[..., RegistryProcess]) -> None:
    """Ceph's RADOS Gateway lists keys with ``!`` in them, after ``StartAfter``, in the byte
    order the index relies on (moto is one implementation of S3; this is another)."""
    reg = rgw_registry()
    names = ["a", "a/b", "a/b/c", "a-c", "a.b", "a_b", "ab", "lib/alpine", "lib/alpine-edge"]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: push(reg.url, n), names))
    expected = sorted(names, key=order_key)
    assert catalog(reg.url, 1000) == expected  # (the first call builds the index)
    eventually(lambda: catalog(reg.url, 2) == expected and _built(reg), timeout=60, interval=0.5)
    for i, last in enumerate(expected):
        r = requests.get(f"{reg.url}/v2/_catalog?n=2&last={last}", timeout=30)
        assert r.json()["repositories"] == expected[i + 1 : i + 3], last


def _built(reg: RegistryProcess) -> bool:
    """Whether the index is written (pages then come from its listing, not from the walk)."""
    return "repository index reconciled" in reg.log_path.read_text()
