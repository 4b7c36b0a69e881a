"""The web UI's storage page with a mirror: its upstream, cached size, hits and misses (issue 16),
pulled through a real upstream (the reference registry)."""

from __future__ import annotations

import re

import requests

from cargohold.auth import htpasswd

from .conftest import mirror_entry, seed_upstream
from .test_mirror_pull import _pull

PASSWORDS = {"alice": "alice-UI-pw-1", "dan": "dan-UI-pw-22"}


def _login(base: str, user: str) -> requests.Session:
    http = requests.Session()
    form = http.get(f"{base}/ui/login", timeout=30)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert form.status_code == 200 and csrf, form.text[:500]
    resp = http.post(
        f"{base}/ui/login",
        data={"username": user, "password": PASSWORDS[user], "csrf": csrf.group(1), "next": "/ui/"},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303, resp.text[:1000]
    return http


def test_storage_page_shows_mirror_hits_and_misses(
    make_registry, proxy, upstream, upstream_session, images, tmp_path
):
    image = images.get(seed=1341, payload_size=64 * 1024)
    remote = seed_upstream(upstream, upstream_session, image)
    users = tmp_path / "htpasswd"
    for user, password in PASSWORDS.items():
        htpasswd.set_user(str(users), user, password, cost=4)
    config = {
        "auth": {"htpasswd": {"realm": "cargohold-mirror-ui", "path": str(users)}},
        "access": {
            "admins": ["alice"],
            "rules": [{"repositories": ["hub/**"], "anonymous": True, "actions": ["pull"]}],
        },
        "http": {"secret": "mirror-ui-test-secret"},
        "mirrors": [mirror_entry(proxy)],
    }
    reg = make_registry(config=config)
    name = f"hub/{remote}"
    _pull(reg.url, name, "latest")  # misses: manifest, config, layer
    _pull(reg.url, name, "latest")  # the same three, now hits

    alice = _login(reg.url, "alice")
    r = alice.get(f"{reg.url}/ui/api/storage", timeout=60)
    assert r.status_code == 200, r.text[:500]
    (hub,) = r.json()["mirrors"]
    size = sum(b.size for b in image.platforms[0].blobs) + len(image.top.data)
    assert (hub["mirror"], hub["prefix"], hub["upstream"]) == ("hub", "hub", proxy.url)
    assert (hub["hits"], hub["misses"], hub["hitRate"]) == (3, 3, 0.5)
    assert (hub["repositories"], hub["images"], hub["size"]) == (1, 1, size)
    assert hub["sizeHuman"].endswith("KiB")

    # One more pull: the counts are read fresh, not with the minute-long du cache.
    _pull(reg.url, name, "latest")
    page = alice.get(f"{reg.url}/ui/storage", timeout=60)
    assert page.status_code == 200
    text = page.text
    assert "<h2>Mirrors</h2>" in text and proxy.url in text
    row = text[text.index("<h2>Mirrors</h2>") :]
    assert '<td class="num" data-label="Hits">6</td>' in row
    assert '<td class="num" data-label="Misses">3</td>' in row
    assert "66.7%" in row
    assert alice.get(f"{reg.url}/ui/api/storage", timeout=60).json()["mirrors"][0]["hits"] == 6

    # The storage page stays admin-only.
    dan = _login(reg.url, "dan")
    assert dan.get(f"{reg.url}/ui/api/storage", timeout=30).status_code == 403
    assert dan.get(f"{reg.url}/ui/storage", timeout=30).status_code == 403
    assert requests.get(f"{reg.url}/ui/api/storage", timeout=30).status_code == 403
