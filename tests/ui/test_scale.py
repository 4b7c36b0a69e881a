"""The UI on a store of 10,000 repositories (and one of 1,000 tags), with no auth configured.

The store is written directly in registry:2's layout by ``bench/ui.py``'s ``fill_store`` (on
/dev/shm when there is one: ~50,000 small files), then served by cargohold. Checked: the first
page and its total, the order of every sort across all 10,000 (not just within a page),
search, the last page, the 1,000-tag repository's pages; and, as this registry has no auth and
``storage.delete`` off, that the UI is open like the API and offers no delete. Speed is not
asserted here (bench/ui.py measures it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import requests
from support.servers import RegistryProcess, cargohold_process


def _bench_ui() -> ModuleType:
    """bench/ui.py (loaded by path: the name ``ui`` is this test package's)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "ui.py"
    spec = importlib.util.spec_from_file_location("cargohold_bench_ui", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fill_store = _bench_ui().fill_store

REPOS = 10_000
TAGS = 1_000


@pytest.fixture(scope="module")
def big_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="cargohold-ui-scale-", dir=shm))
    try:
        fill_store(root, REPOS, TAGS, max_tags=1)
        config = {"storage": {"delete": {"enabled": False}}}
        server = cargohold_process(tmp_path_factory.mktemp("ui-scale"), config=config, root=root)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _get(server: RegistryProcess, path: str) -> requests.Response:
    resp = requests.get(server.url + path, timeout=120)
    assert resp.status_code == 200, resp.text[:500]
    return resp


def test_first_page_of_ten_thousand_repositories(big_registry: RegistryProcess) -> None:
    # Sorted by name, a page reads the names only as far as it shows: the total is not known.
    data = _get(big_registry, "/ui/api/repositories").json()
    assert data["paging"]["total"] is None and data["paging"]["pages"] is None
    assert data["paging"]["near"] == [1, 2] and data["registry_total"] is None
    names = [r["name"] for r in data["repositories"]]
    assert names[0] == "big/many-tags"
    assert names[1:] == [f"team-00/app-{i:05d}" for i in range(0, 4900, 100)]
    assert data["repositories"][0]["tags"] == TAGS
    assert all(r["tags"] == 1 and r["size"] > 0 for r in data["repositories"][1:])
    page = _get(big_registry, "/ui/").text
    assert page.count('<td class="name">') == 50
    assert "1\u201350 of more than 50 repositories" in page and 'rel="next"' in page
    third = _get(big_registry, "/ui/api/repositories?page=3").json()
    assert third["repositories"][0]["name"] == "team-00/app-09900"
    assert third["paging"]["near"] == [1, 2, 3, 4]
    # Deep pages read every name, and so learn the total.
    last = _get(big_registry, "/ui/api/repositories?page=201").json()
    assert [r["name"] for r in last["repositories"]] == ["team-99/app-09999"]
    assert last["paging"]["total"] == REPOS + 1
    assert last["paging"]["pages"] == -(-(REPOS + 1) // 50)


def test_sorting_covers_every_repository(big_registry: RegistryProcess) -> None:
    everything = _get(big_registry, "/ui/api/repositories?n=500&sort=name&order=desc").json()
    assert everything["paging"]["pages"] == 21
    by_push = []
    for page in range(1, 22):
        chunk = _get(big_registry, f"/ui/api/repositories?n=500&sort=pushed&page={page}").json()
        by_push.extend(chunk["repositories"])
    assert len(by_push) == REPOS + 1
    assert len({r["name"] for r in by_push}) == REPOS + 1
    pushed = [r["pushed"] for r in by_push]
    assert pushed == sorted(pushed, reverse=True)
    biggest = _get(big_registry, "/ui/api/repositories?sort=size&n=20").json()["repositories"]
    smallest = _get(big_registry, "/ui/api/repositories?sort=size&order=asc&n=20").json()
    sizes = [r["size"] for r in biggest]
    assert sizes == sorted(sizes, reverse=True)
    assert biggest[0]["name"] == "big/many-tags"  # 1,000 tags over the whole image pool
    assert smallest["repositories"][0]["size"] <= min(r["size"] for r in by_push)


def test_search_among_ten_thousand(big_registry: RegistryProcess) -> None:
    found = _get(big_registry, "/ui/api/repositories?q=app-0999").json()
    assert [r["name"] for r in found["repositories"]] == [
        f"team-{i % 100:02d}/app-{i:05d}" for i in range(9990, 10000)
    ]
    assert found["paging"]["total"] == 10
    page = _get(big_registry, "/ui/?q=team-42/").text
    assert "1\u201350 of 100 repositories" in page


def test_a_thousand_tags_are_paged(big_registry: RegistryProcess) -> None:
    data = _get(big_registry, "/ui/api/tags?repository=big/many-tags").json()
    assert data["tag_total"] == TAGS and data["paging"]["pages"] == 10
    pushed = [t["pushed"] for t in data["tags"]]
    assert len(pushed) == 100 and pushed == sorted(pushed, reverse=True)
    by_name = _get(big_registry, "/ui/api/tags?repository=big/many-tags&sort=name&page=10").json()
    assert [t["name"] for t in by_name["tags"]][-1] == "1.9.99"
    by_size = _get(big_registry, "/ui/api/tags?repository=big/many-tags&sort=size&n=500").json()
    sizes = [t["size"] for t in by_size["tags"]]
    assert sizes == sorted(sizes, reverse=True)
    html = _get(big_registry, "/ui/r/big/many-tags").text
    assert html.count('<td class="name">') == 100 and "1\u2013100 of 1,000 tags" in html


def test_without_auth_the_ui_is_open_and_without_deletes_offers_none(
    big_registry: RegistryProcess,
) -> None:
    session = _get(big_registry, "/ui/api/session").json()
    assert session == {
        "user": None,
        "authEnabled": False,
        "canLogin": False,
        "deleteEnabled": False,
    }
    page = _get(big_registry, "/ui/r/big/many-tags/-/tag/1.0.0").text
    assert "Delete" not in page and 'href="/ui/login' not in page
    assert 'href="/ui/storage"' in page  # no auth: everyone may see the totals, as with du
    tags = _get(big_registry, "/ui/r/big/many-tags").text
    assert "/-/delete?" not in tags
    assert "Last pull" not in tags  # no retention here: pulls are not recorded, so not shown
    confirm = requests.get(big_registry.url + "/ui/r/big/many-tags/-/delete?tag=1.0.0", timeout=30)
    assert confirm.status_code == 403 and "deletes are disabled" in confirm.text
