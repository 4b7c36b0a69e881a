"""``_catalog`` of a bucket with 100,000 repositories: a page costs one S3 listing.

The repository index (``cargohold.registry.repoindex``) is put into a moto server directly
(100,000 entries and a fresh built-marker, see :mod:`support.seededmoto`), and every S3 request
of cargohold goes through a counting proxy (:mod:`support.faultproxy`). Pages anywhere in the
catalog must cost exactly one ``ListObjectsV2`` of the index, and hold exactly the names that
registry:2's component order (:func:`cargohold.registry.catalog.order_key`, the filesystem
walk's order) puts after ``last``, with the ``Link`` to the next page.
"""

from __future__ import annotations

import base64
import bisect
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, unquote

import pytest
import requests
from support.faultproxy import FaultProxy
from support.seededmoto import SeededMotoServer
from support.servers import RegistryProcess

from cargohold.auth import htpasswd
from cargohold.registry.catalog import order_key
from cargohold.registry.core import FILTERED_SCAN
from cargohold.registry.repoindex import STAMP_FORMAT
from cargohold.storage import paths

Factory = Callable[..., RegistryProcess]
COUNT = 100_000
BUCKET = "catalog-100k"
INDEX_PREFIX = paths.CATALOG.lstrip("/") + "/"
VARIANTS = ("{}", "{}/x", "{}-x", "{}.x", "{}_x")  # "/", "-", ".", "_" all next to each other


def repository_names() -> list[str]:
    """100 namespaces x 200 bases x 5 variants: ``ns07/a12``, ``ns07/a12/x``, ``ns07/a12-x``..."""
    return [
        f"ns{i % 100:02d}/" + VARIANTS[(i // 100) % 5].format(f"a{i // 500}") for i in range(COUNT)
    ]


NAMES = sorted(repository_names(), key=order_key)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultProxy]:
    objects = {INDEX_PREFIX + paths.catalog_key(n): "" for n in NAMES}
    # Reconciled just now: no replica walks the (here empty) layout for RECONCILE_SECONDS.
    objects[paths.CATALOG_BUILT.lstrip("/")] = datetime.now(UTC).strftime(STAMP_FORMAT)
    moto = SeededMotoServer(tmp_path_factory.mktemp("moto100k"), {BUCKET: objects})
    moto.start(timeout=300)
    proxy = FaultProxy(moto).start()
    yield proxy
    proxy.stop()
    moto.stop()


def index_listings(proxy: FaultProxy) -> int:
    return sum(
        1
        for s in list(proxy.seen)
        if "list-type=2" in s.path_qs and f"prefix={INDEX_PREFIX}" in unquote(s.path_qs)
    )


def get_page(
    reg: RegistryProcess, proxy: FaultProxy, query: str, auth: tuple[str, str] | None = None
) -> tuple[list[str], str | None, int]:
    """(repositories, Link header, index listings it cost)."""
    proxy.reset_counts()
    r = requests.get(f"{reg.url}/v2/_catalog?{query}", auth=auth, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["repositories"], r.headers.get("Link"), index_listings(proxy)


def link(n: int, last: str) -> str:
    """registry:2's (2.8.2, checked): ``last`` first and query-escaped, then ``n``."""
    return f'</v2/_catalog?last={last.replace("/", "%2F")}&n={n}>; rel="next"'


def test_a_page_of_100000_repositories_costs_one_listing(
    store: FaultProxy, make_registry: Factory
) -> None:
    assert NAMES.index("ns07/a1/x") < NAMES.index("ns07/a1-x")  # component order, not bytes
    reg = make_registry(config={"storage": store.storage_section(BUCKET), "ui": {"enabled": False}})
    page, nxt, _ = get_page(reg, store, "n=100")  # (the first also reads the built-marker)
    assert page == NAMES[:100]
    assert nxt == link(100, NAMES[99])
    for at in (0, 99, 4_321, 50_000, 77_777, COUNT - 102, COUNT - 101):
        page, nxt, listings = get_page(reg, store, f"n=100&last={NAMES[at]}")
        assert page == NAMES[at + 1 : at + 101], at
        assert listings == 1, at
        # A Link exactly when more follow (registry:2 also sends one after a page that ends
        # the catalog exactly, which leads clients to one more, empty, page).
        assert nxt == (link(100, page[-1]) if at + 101 < COUNT else None), at
    # The end: a short last page, then an empty page past the last name.
    page, nxt, listings = get_page(reg, store, f"n=100&last={NAMES[COUNT - 100]}")
    assert (page, nxt, listings) == (NAMES[COUNT - 99 :], None, 1)
    assert get_page(reg, store, f"n=100&last={NAMES[-1]}") == ([], None, 1)
    # A ``last`` that is no repository pages from where it would sort.
    for last in ("ns42/a150/w", "ns42/a150-", "ns5", "a", "zzz"):
        at = bisect.bisect_right(NAMES, order_key(last), key=order_key)
        page, _, listings = get_page(reg, store, f"n=100&last={last}")
        assert page == NAMES[at : at + 100] and listings == 1, last
    # Following Links across the nested, "-", "." and "_" names of one base, 7 at a time.
    start = NAMES.index("ns63/a17")
    seen: list[str] = []
    query = f"n=7&last={NAMES[start - 1]}"
    for _ in range(6):
        page, nxt, listings = get_page(reg, store, query)
        assert listings == 1 and nxt == link(7, page[-1])
        seen += page
        query = nxt[len("</v2/_catalog?") : nxt.index(">")]
    assert seen == NAMES[start : start + 42]
    # n=1000, the largest page: one listing of 1000 and one of 1 (is there a next page?).
    page, _, listings = get_page(reg, store, f"n=1000&last={NAMES[12_345]}")
    assert page == NAMES[12_346:13_346] and listings == 2


BOB = ("bob", "bob-password")


def bobs_registry(store: FaultProxy, make_registry: Factory, tmp_path: Path) -> RegistryProcess:
    """A registry on the 100,000 where bob may pull ``ns07/**`` (1000 of them)."""
    users = tmp_path / "htpasswd"
    htpasswd.set_user(str(users), *BOB, cost=4)
    config = {
        "storage": store.storage_section(BUCKET),
        "ui": {"enabled": False},
        "auth": {"htpasswd": {"realm": "catalog", "path": str(users)}},
        "access": {"rules": [{"repositories": ["ns07/**"], "users": ["bob"], "actions": ["pull"]}]},
    }
    return make_registry(config=config)


def test_an_access_filtered_page_reads_only_until_it_is_full(
    store: FaultProxy, make_registry: Factory, tmp_path: Path
) -> None:
    """bob may pull ``ns07/**`` (1000 of the 100,000): his first page reads the index up to
    his hundredth repository (8 listings: 7,000 names of ns00-ns06 come first), the next one a
    single listing, never the whole index (100 listings)."""
    reg = bobs_registry(store, make_registry, tmp_path)
    visible = [n for n in NAMES if n.startswith("ns07/")]
    assert len(visible) == 1000
    page, nxt, listings = get_page(reg, store, "n=100", auth=BOB)
    assert page == visible[:100] and nxt == link(100, visible[99])
    assert 8 <= listings <= 9, listings
    page, nxt, listings = get_page(reg, store, f"n=100&last={visible[99]}", auth=BOB)
    assert page == visible[100:200] and nxt == link(100, visible[199])
    assert listings == 1


def test_an_access_filtered_page_stops_reading_after_a_bound(
    store: FaultProxy, make_registry: Factory, tmp_path: Path
) -> None:
    """After bob's last repository (``ns07/**``) come 92,000 he may not see: a page reads at
    most FILTERED_SCAN (10,000) of them and answers short, with a ``Link`` that goes on from
    where it stopped without naming it. Following the Links yields each of his repositories
    once; a client that goes on from the last name shown instead still gets to the end."""
    reg = bobs_registry(store, make_registry, tmp_path)
    visible = [n for n in NAMES if n.startswith("ns07/")]
    seen: list[str] = []
    query: str | None = "n=100"
    requests_made = 0
    while query is not None:
        page, nxt, listings = get_page(reg, store, query, auth=BOB)
        requests_made += 1
        assert listings <= FILTERED_SCAN // 1000 + 1, (query, listings)
        seen += page
        if nxt is None:
            break
        query = nxt[len("</v2/_catalog?") : nxt.index(">")]
        params = parse_qs(query)
        assert set(params) <= {"last", "n", "_resume"}, params
        if "last" in params:
            assert params["last"] == [seen[-1]]  # the last name shown, never a hidden one
        if "_resume" in params:
            raw = base64.urlsafe_b64decode(params["_resume"][0] + "==")
            assert not re.search(rb"ns\d\d/", raw)  # sealed: no name in it
        assert requests_made < 50
    assert seen == visible
    assert requests_made > 11  # the last page and the hidden tail took several requests
    # A client that ignores the Link and goes on from the last name (or sends a _resume this
    # secret did not seal) is read to the end: each request gets further than the one before.
    page, nxt, listings = get_page(
        reg, store, f"n=100&last={visible[-1]}&_resume=bm90LWEtdG9rZW4", auth=BOB
    )
    assert (page, nxt) == ([], None) and listings > FILTERED_SCAN // 1000


def test_the_web_ui_reads_the_index_only_as_far_as_a_page_shows(
    store: FaultProxy, make_registry: Factory
) -> None:
    """Two workers start without listing a name (they once read all 100,000: 100 listings
    each), and the UI's first pages by name cost one listing of the index each."""
    store.reset_counts()
    reg = make_registry(config={"storage": store.storage_section(BUCKET)}, workers=2)
    assert index_listings(store) == 0
    for page in (1, 2, 3):
        if page > 1:  # the first counts with the start: the workers' reads may still be going
            store.reset_counts()
        r = requests.get(f"{reg.url}/ui/api/repositories?page={page}", timeout=300)
        assert r.status_code == 200, r.text
        assert index_listings(store) == 1, page
        data = r.json()
        assert [x["name"] for x in data["repositories"]] == NAMES[(page - 1) * 50 : page * 50]
        assert data["paging"]["total"] is None  # more than this page: how many is not read
    html = requests.get(f"{reg.url}/ui/", timeout=300).text
    assert "1\u201350 of more than 50 repositories" in html
