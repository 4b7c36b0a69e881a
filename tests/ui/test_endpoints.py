"""The web UI's server side over real HTTP: JSON endpoints, pages, sessions, access, CSRF.

One registry per module (``ui_registry``: htpasswd auth, an access policy, seeded images);
the browser-driven scenario is in test_browser.py, the 10,000-repository store in
test_scale.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path

import requests
from support.images import ImageCache, push_image
from support.servers import cargohold_env
from support.waiting import eventually

from cargohold.auth import htpasswd

from .conftest import PASSWORDS, UiRegistry, basic
from .helpers import csrf_of, login, names, ui_session
from .seed import SBOM_TYPE, SIGNATURE_TYPE

# --------------------------------------------------------------------------- access


def test_anonymous_visitors_see_only_what_anonymous_rules_grant(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    assert names(requests.get(f"{url}/ui/api/repositories", timeout=30)) == ["public/tools"]
    page = requests.get(f"{url}/ui/", timeout=30)
    assert page.status_code == 200
    assert "public/tools" in page.text
    assert "team/app" not in page.text and "private/vault" not in page.text
    assert 'href="/ui/login' in page.text


def test_each_user_sees_exactly_the_repositories_they_may_pull(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    seen = {
        user: names(login(url, user, PASSWORDS[user]).get(f"{url}/ui/api/repositories"))
        for user in PASSWORDS
    }
    assert seen["alice"] == ["private/vault", "public/tools", "team/api", "team/app"]
    assert seen["dan"] == ["public/tools", "team/api", "team/app"]
    assert seen["eve"] == ["public/tools"]


def test_a_repository_one_may_not_pull_answers_like_one_that_does_not_exist(
    ui_registry: UiRegistry,
) -> None:
    url = ui_registry.url
    dan = login(url, "dan", PASSWORDS["dan"])
    hidden = dan.get(f"{url}/ui/r/private/vault", timeout=30)
    missing = dan.get(f"{url}/ui/r/no/such-repo", timeout=30)
    assert hidden.status_code == missing.status_code == 404
    assert "private/vault" not in hidden.text.replace("/ui/r/private/vault", "").split("<main")[0]
    for path in ("/ui/r/private/vault/-/tag/1", "/ui/api/tags?repository=private/vault"):
        assert dan.get(url + path, timeout=30).status_code == 404
    api = dan.get(f"{url}/ui/api/manifest?repository=private/vault&reference=1", timeout=30)
    assert api.status_code == 404
    assert api.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert ui_registry.seeded.digests["private/vault:1"] not in api.text
    anonymous = requests.get(f"{url}/ui/r/team/app", timeout=30)
    assert anonymous.status_code == 404
    assert 'href="/ui/login?next=' in anonymous.text  # the way out: log in


def test_search_sort_and_paging_of_repositories(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    alice = login(url, "alice", PASSWORDS["alice"])
    assert names(alice.get(f"{url}/ui/api/repositories?q=TEAM")) == ["team/api", "team/app"]
    assert names(alice.get(f"{url}/ui/api/repositories?q=nothing-like-it")) == []
    by_tags = alice.get(f"{url}/ui/api/repositories?sort=tags").json()["repositories"]
    assert by_tags[0]["name"] == "team/app" and by_tags[0]["tags"] == 4
    by_size = alice.get(f"{url}/ui/api/repositories?sort=size&order=asc").json()
    sizes = [r["size"] for r in by_size["repositories"]]
    assert sizes == sorted(sizes) and sizes[0] > 0
    page2 = alice.get(f"{url}/ui/api/repositories?n=3&page=2").json()
    assert [r["name"] for r in page2["repositories"]] == ["team/app"]
    assert page2["paging"] == {
        "page": 2,
        "pages": 2,
        "per_page": 3,
        "total": 4,
        "first": 4,
        "last": 4,
        "near": [1, 2],
    }
    empty = alice.get(f"{url}/ui/?q=nothing-like-it", timeout=30)
    assert "No repository matches" in empty.text


# --------------------------------------------------------------------------- what pages show


def test_tags_of_a_repository(ui_registry: UiRegistry) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    dan = login(url, "dan", PASSWORDS["dan"])
    data = dan.get(f"{url}/ui/api/tags?repository=team/app&sort=name").json()
    tags = {t["name"]: t for t in data["tags"]}
    assert [t["name"] for t in data["tags"]] == ["1.0", "1.1", "latest", "old"]
    for tag, t in tags.items():
        assert t["digest"] == seeded.digests[f"team/app:{tag}"]
        assert t["size"] > 4096 and t["pushed"] > time.time() - 3600
        assert t["pulled"] is None  # nobody pulled yet
    assert tags["1.0"]["size"] > tags["old"]["size"]  # two layers against one
    assert data["may_delete"] is True and data["pulls_recorded"] is True
    # a pull by tag is recorded (flushed every second here) and shown
    admin = requests.Session()
    admin.headers["Authorization"] = basic("alice")
    assert admin.get(f"{url}/v2/team/app/manifests/old", timeout=30).status_code == 200

    def pulled() -> float | None:
        rows = dan.get(f"{url}/ui/api/tags?repository=team/app").json()["tags"]
        return {t["name"]: t["pulled"] for t in rows}["old"]

    eventually(lambda: pulled() is not None, timeout=30)
    assert abs(time.time() - (pulled() or 0)) < 600
    api = dan.get(f"{url}/ui/api/tags?repository=team/api").json()["tags"]
    assert api[0]["index"] is True and api[0]["platforms"] == ["linux/amd64", "linux/arm64"]
    filtered = dan.get(f"{url}/ui/api/tags?repository=team/app&q=1.").json()
    assert [t["name"] for t in filtered["tags"]] == ["1.1", "1.0"]  # newest push first
    paged = dan.get(f"{url}/ui/api/tags?repository=team/app&n=3&page=2&sort=name").json()
    assert [t["name"] for t in paged["tags"]] == ["old"]


def test_a_tag_with_layers_config_and_referrers_by_artifact_type(ui_registry: UiRegistry) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    dan = login(url, "dan", PASSWORDS["dan"])
    data = dan.get(f"{url}/ui/api/manifest?repository=team/app&reference=1.0").json()
    assert data["digest"] == seeded.digests["team/app:1.0"]
    assert data["tags"] == ["1.0", "1.1", "latest"]
    assert len(data["layers"]) == 2
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in data["layers"])
    config = data["config"]
    assert config["platform"] == "linux/amd64"
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["cmd"] == ["/bin/true"] and config["env"] == ["PATH=/bin"]
    assert config["labels"] == {"org.cargohold.test.seed": "31"}
    assert [h["createdBy"] for h in config["history"]] == ["cargohold test seed 31"] * 2
    groups = {g["kind"]: g["manifests"] for g in data["referrers"]}
    assert [r["digest"] for r in groups["SBOMs (SPDX)"]] == [seeded.sbom]
    assert [r["digest"] for r in groups["Signatures (cosign)"]] == [seeded.signature]
    assert groups["SBOMs (SPDX)"][0]["artifactType"] == SBOM_TYPE
    assert groups["Signatures (cosign)"][0]["artifactType"] == SIGNATURE_TYPE
    host = ui_registry.server.host
    assert data["pull"] == [
        {"client": "docker", "command": f"docker pull {host}/team/app:1.0"},
        {"client": "podman", "command": f"podman pull {host}/team/app:1.0"},
        {
            "client": "skopeo",
            "command": f"skopeo copy --all docker://{host}/team/app:1.0 oci:app:1.0",
        },
        {"client": "ctr", "command": f"ctr images pull --plain-http {host}/team/app:1.0"},
    ]
    sbom = dan.get(f"{url}/ui/api/manifest?repository=team/app&reference={seeded.sbom}").json()
    assert sbom["subject"] == seeded.digests["team/app:1.0"]
    assert sbom["artifactType"] == SBOM_TYPE and sbom["tags"] == []
    page = dan.get(f"{url}/ui/r/team/app/-/manifest/{seeded.sbom}", timeout=30)
    assert page.status_code == 200 and "Refers to" in page.text


def test_a_multi_platform_index_links_each_platform(ui_registry: UiRegistry) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    dan = login(url, "dan", PASSWORDS["dan"])
    data = dan.get(f"{url}/ui/api/manifest?repository=team/api&reference=2.0").json()
    assert data["index"] is True and data["config"] is None
    platforms = {p["platform"]: p for p in data["platforms"]}
    assert {k: p["digest"] for k, p in platforms.items()} == seeded.platforms
    assert all(p["present"] for p in platforms.values())
    page = dan.get(f"{url}/ui/r/team/api/-/tag/2.0", timeout=30).text
    for digest in seeded.platforms.values():
        assert f'href="/ui/r/team/api/-/manifest/{digest}"' in page
    arm = dan.get(
        f"{url}/ui/api/manifest?repository=team/api&reference={seeded.platforms['linux/arm64']}"
    ).json()
    assert arm["config"]["platform"] == "linux/arm64"


def test_pages_escape_what_pushers_wrote_and_carry_a_strict_csp(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    page = requests.get(f"{url}/ui/", timeout=30)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert not re.search(r"<script(?![^>]*\bsrc=\"/ui/static/)", page.text)  # no inline script
    assert not re.search(r"\sstyle=", page.text)  # no inline style either
    for asset, ctype in (("ui.css", "text/css"), ("ui.js", "text/javascript"), ("icon.svg", "")):
        resp = requests.get(f"{url}/ui/static/{asset}", timeout=30)
        assert resp.status_code == 200 and resp.headers["Content-Type"].startswith(ctype)
        assert resp.headers["Content-Security-Policy"] == csp
        again = requests.get(
            f"{url}/ui/static/{asset}", headers={"If-None-Match": resp.headers["ETag"]}, timeout=30
        )
        assert again.status_code == 304
    assert requests.get(f"{url}/ui/static/nope.js", timeout=30).status_code == 404
    assert requests.get(f"{url}/ui/static/..%2Fviews.py", timeout=30).status_code == 404
    evil = requests.get(f"{url}/ui/?q=<script>alert(1)</script>", timeout=30).text
    assert "<script>alert(1)" not in evil and "&lt;script&gt;alert(1)" in evil


# --------------------------------------------------------------------------- sessions


def _cookie(resp: requests.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(resp.headers["Set-Cookie"])
    return jar


def test_login_sets_a_strict_http_only_expiring_cookie(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    http, csrf = ui_session(url)
    resp = http.post(
        f"{url}/ui/login",
        data={"username": "eve", "password": PASSWORDS["eve"], "csrf": csrf, "next": "/ui/x"},
        allow_redirects=False,
        timeout=30,
    )
    assert resp.status_code == 303
    morsel = _cookie(resp)["cargohold_ui"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict"
    assert morsel["path"] == "/ui/" and int(morsel["max-age"]) == 12 * 3600
    assert not morsel["secure"]  # plain HTTP here; under TLS (or an https http.host) it is set
    assert http.get(f"{url}/ui/api/session").json()["user"] == "eve"
    # no open redirect: "next" must stay inside the UI
    http2, csrf2 = ui_session(url)
    away = http2.post(
        f"{url}/ui/login",
        data={"username": "eve", "password": PASSWORDS["eve"], "csrf": csrf2, "next": "//evil/"},
        allow_redirects=False,
        timeout=30,
    )
    assert away.headers["Location"] == "/ui/"


def test_wrong_password_and_throttling(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    http, csrf = ui_session(url)
    wrong = http.post(
        f"{url}/ui/login",
        data={"username": "eve", "password": "not-her-password", "csrf": csrf},
        timeout=30,
    )
    assert wrong.status_code == 401 and "Wrong user name or password." in wrong.text
    assert http.get(f"{url}/ui/api/session").json()["user"] is None
    # the API's login throttle, shared: per user and address (a user no other test needs)
    for attempt in range(6):
        resp = http.post(
            f"{url}/ui/login",
            data={"username": "mallory", "password": f"guess-{attempt}", "csrf": csrf},
            timeout=30,
        )
        assert resp.status_code == 401
    assert "Too many failed attempts" in resp.text
    assert http.get(f"{url}/ui/api/session").json()["user"] is None


def test_session_cookie_is_not_accepted_by_the_api(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    dan = login(url, "dan", PASSWORDS["dan"])
    assert dan.get(f"{url}/ui/api/tags?repository=team/app").status_code == 200
    api = dan.get(f"{url}/v2/team/app/tags/list", timeout=30)
    assert api.status_code == 401 and "WWW-Authenticate" in api.headers
    # the cookie is scoped to /ui/ anyway; sent by hand it still changes nothing
    cookie = dan.cookies.get("cargohold_ui")
    assert cookie
    raw = requests.get(
        f"{url}/v2/team/app/tags/list", headers={"Cookie": f"cargohold_ui={cookie}"}, timeout=30
    )
    assert raw.status_code == 401


def test_forged_or_stale_sessions_are_anonymous(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    dan = login(url, "dan", PASSWORDS["dan"])
    cookie = dan.cookies["cargohold_ui"]
    payload, mac = cookie.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc["u"] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    resp = requests.get(
        f"{url}/ui/api/session", cookies={"cargohold_ui": f"{forged}.{mac}"}, timeout=30
    )
    assert resp.json()["user"] is None
    assert names(
        requests.get(
            f"{url}/ui/api/repositories", cookies={"cargohold_ui": f"{forged}.{mac}"}, timeout=30
        )
    ) == ["public/tools"]


def test_removing_a_user_ends_their_sessions(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    htpasswd.set_user(str(ui_registry.htpasswd), "temp", "temp-UI-pw-4444", cost=4)
    sessions: list[requests.Session] = []
    # poll slower than the file check (1 s): refused attempts count towards the login throttle
    eventually(
        lambda: _try_login(url, "temp", "temp-UI-pw-4444", sessions), timeout=30, interval=1.5
    )
    temp = sessions[0]
    assert temp.get(f"{url}/ui/api/session").json()["user"] == "temp"
    htpasswd.delete_user(str(ui_registry.htpasswd), "temp")
    eventually(lambda: temp.get(f"{url}/ui/api/session").json()["user"] is None, timeout=30)


def _try_login(url: str, user: str, password: str, out: list[requests.Session]) -> bool:
    http, csrf = ui_session(url)
    resp = http.post(
        f"{url}/ui/login",
        data={"username": user, "password": password, "csrf": csrf},
        allow_redirects=False,
        timeout=30,
    )
    if resp.status_code == 303:
        out.append(http)
    return resp.status_code == 303


# --------------------------------------------------------------------------- deletes and CSRF


def test_deletes_need_the_sessions_csrf_token_and_the_delete_action(
    ui_registry: UiRegistry,
) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    admin = requests.Session()
    admin.headers["Authorization"] = basic("alice")
    dan = login(url, "dan", PASSWORDS["dan"])
    confirm = dan.get(f"{url}/ui/r/team/app/-/delete?tag=1.1", timeout=30)
    assert confirm.status_code == 200 and "Delete tag" in confirm.text
    token = csrf_of(confirm.text)
    # no token, another session's token, another origin: refused, nothing deleted
    _other, other_token = ui_session(url)
    for data, headers in (
        ({"tag": "1.1"}, {}),
        ({"tag": "1.1", "csrf": other_token}, {}),
        ({"tag": "1.1", "csrf": token}, {"Origin": "http://evil.example"}),
        ({"tag": "1.1", "csrf": token}, {"Origin": "null"}),
    ):
        resp = dan.post(
            f"{url}/ui/r/team/app/-/delete",
            data=data,
            headers=headers,
            allow_redirects=False,
            timeout=30,
        )
        assert resp.status_code == 403, (data, headers)
    still = admin.get(f"{url}/v2/team/app/manifests/1.1", timeout=30)
    assert still.status_code == 200
    # eve may not delete (nor see) team/app; dan may not delete in public/
    eve = login(url, "eve", PASSWORDS["eve"])
    eve_token = csrf_of(eve.get(f"{url}/ui/", timeout=30).text)
    resp = eve.post(
        f"{url}/ui/r/team/app/-/delete", data={"tag": "1.1", "csrf": eve_token}, timeout=30
    )
    assert resp.status_code == 404
    resp = dan.post(
        f"{url}/ui/r/public/tools/-/delete", data={"tag": "stable", "csrf": token}, timeout=30
    )
    assert resp.status_code == 403
    tools = dan.get(f"{url}/ui/r/public/tools", timeout=30).text
    assert "/-/delete?" not in tools  # no delete button where it would be refused
    # the real thing
    done = dan.post(
        f"{url}/ui/r/team/app/-/delete",
        data={"tag": "1.1", "csrf": token},
        allow_redirects=False,
        timeout=30,
    )
    assert done.status_code == 303
    assert done.headers["Location"].replace("%3A", ":") == "/ui/r/team/app?deleted=tag:1.1"
    assert admin.get(f"{url}/v2/team/app/manifests/1.1", timeout=30).status_code == 404
    assert admin.get(f"{url}/v2/team/app/manifests/1.0", timeout=30).status_code == 200
    listed = dan.get(f"{url}/ui/api/tags?repository=team/app").json()["tags"]
    assert "1.1" not in [t["name"] for t in listed]
    summary = {r["name"]: r for r in dan.get(f"{url}/ui/api/repositories").json()["repositories"]}
    assert summary["team/app"]["tags"] == 3
    assert seeded.digests["team/app:1.1"] == seeded.digests["team/app:1.0"]


def test_logout_replaces_the_session(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    dan = login(url, "dan", PASSWORDS["dan"])
    token = csrf_of(dan.get(f"{url}/ui/", timeout=30).text)
    old = dan.cookies["cargohold_ui"]
    resp = dan.post(f"{url}/ui/logout", data={"csrf": token}, allow_redirects=False, timeout=30)
    assert resp.status_code == 303
    assert dan.get(f"{url}/ui/api/session").json()["user"] is None
    assert dan.cookies["cargohold_ui"] != old
    assert names(dan.get(f"{url}/ui/api/repositories")) == ["public/tools"]


# --------------------------------------------------------------------------- storage page


def test_storage_page_is_for_admins_and_shows_du_and_gc_runs(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    config = str(ui_registry.server.config_path)
    subprocess.run(
        [sys.executable, "-m", "cargohold", "garbage-collect", config, "--dry-run", "--quiet"],
        env={**os.environ, **cargohold_env()},
        check=True,
        timeout=120,
    )
    online = requests.post(f"{ui_registry.debug_url}/admin/gc?dryrun=true&wait=true", timeout=120)
    assert online.status_code == 200, online.text[:500]
    alice = login(url, "alice", PASSWORDS["alice"])
    data = alice.get(f"{url}/ui/api/storage").json()
    usage = data["usage"]
    assert usage["blobs"] > 10 and usage["stored"] > 0
    assert {r["repository"] for r in usage["repositories"]} == {
        "private/vault",
        "public/tools",
        "team/api",
        "team/app",
    }
    runs = data["gcRuns"]  # newest first: the online run, then the offline one
    assert [(r["online"], r["dryRun"]) for r in runs[:2]] == [(True, True), (False, True)]
    assert runs[0]["id"] == online.json()["id"]
    page = alice.get(f"{url}/ui/storage", timeout=30)
    assert page.status_code == 200 and "offline · dry run" in page.text
    assert "online · dry run" in page.text
    assert data["mirrors"] == [] and "<h2>Mirrors</h2>" not in page.text  # none configured
    dan = login(url, "dan", PASSWORDS["dan"])
    assert dan.get(f"{url}/ui/storage", timeout=30).status_code == 403
    assert dan.get(f"{url}/ui/api/storage", timeout=30).status_code == 403
    assert 'href="/ui/storage"' not in dan.get(f"{url}/ui/", timeout=30).text
    assert requests.get(f"{url}/ui/api/storage", timeout=30).status_code == 403


# --------------------------------------------------------------------------- / and the switch


def test_browsers_asking_for_root_go_to_the_ui_and_probes_do_not(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    browser = requests.get(
        f"{url}/", headers={"Accept": "text/html,application/xhtml+xml"}, allow_redirects=False
    )
    assert browser.status_code == 302 and browser.headers["Location"] == "/ui/"
    for accept in (None, "*/*", "text/plain"):
        headers = {"Accept": accept} if accept else {}
        probe = requests.get(f"{url}/", headers=headers, allow_redirects=False, timeout=30)
        assert probe.status_code == 200 and probe.text == "cargohold registry\n"
    assert requests.get(f"{url}/ui", allow_redirects=False, timeout=30).status_code == 301


def test_a_push_shows_at_once_after_the_lists_were_read(ui_registry: UiRegistry) -> None:
    """The names and summaries are cached per worker; a push through the same worker updates
    them at once (other workers and replicas catch up within the snapshot's 15 s)."""
    url = ui_registry.url
    dan = login(url, "dan", PASSWORDS["dan"])
    before = dan.get(f"{url}/ui/api/repositories?sort=pushed").json()["repositories"]
    assert "team/fresh" not in [r["name"] for r in before]
    admin = requests.Session()
    admin.headers["Authorization"] = basic("alice")
    image = ImageCache(Path(tempfile.mkdtemp(prefix="ui-fresh-"))).get(seed=36)
    push_image(url, "team/fresh", image, "new", session=admin)
    after = dan.get(f"{url}/ui/api/repositories?sort=pushed").json()["repositories"]
    assert after[0]["name"] == "team/fresh" and after[0]["tags"] == 1
    assert "team/fresh" in names(dan.get(f"{url}/ui/api/repositories"))


def test_deleting_a_manifest_takes_its_tags_with_it(ui_registry: UiRegistry) -> None:
    url, seeded = ui_registry.url, ui_registry.seeded
    digest = seeded.digests["team/app:old"]
    dan = login(url, "dan", PASSWORDS["dan"])
    confirm = dan.get(f"{url}/ui/r/team/app/-/delete?digest={digest}", timeout=30)
    assert confirm.status_code == 200 and "Delete manifest" in confirm.text
    assert "old" in confirm.text  # names the tags that go with it
    done = dan.post(
        f"{url}/ui/r/team/app/-/delete",
        data={"digest": digest, "csrf": csrf_of(confirm.text)},
        timeout=30,
    )
    assert done.status_code == 200 and "Deleted manifest" in done.text
    admin = requests.Session()
    admin.headers["Authorization"] = basic("alice")
    assert admin.get(f"{url}/v2/team/app/manifests/{digest}", timeout=30).status_code == 404
    assert admin.get(f"{url}/v2/team/app/manifests/old", timeout=30).status_code == 404
    tags = [t["name"] for t in dan.get(f"{url}/ui/api/tags?repository=team/app").json()["tags"]]
    assert "old" not in tags and "1.0" in tags
    gone = dan.get(f"{url}/ui/r/team/app/-/manifest/{digest}", timeout=30)
    assert gone.status_code == 404


def test_unknown_ui_paths_get_the_uis_404_not_a_login_challenge(ui_registry: UiRegistry) -> None:
    url = ui_registry.url
    for path in ("/ui/nope", "/ui/api/nope", "/ui/r"):
        resp = requests.get(url + path, timeout=30)
        assert resp.status_code == 404, path
        assert "WWW-Authenticate" not in resp.headers  # no browser login dialog
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "Not found" in resp.text
    wrong = requests.put(f"{url}/ui/storage", timeout=30)
    assert wrong.status_code == 405 and "WWW-Authenticate" not in wrong.headers
