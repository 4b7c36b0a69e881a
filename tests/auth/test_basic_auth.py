"""htpasswd logins and the access policy over HTTP (the shared ``make_registry`` fixture).

Users (helpers.PASSWORDS / POLICY): alice is an admin, bob may pull team/**, carol (group dev)
may pull and push team/**, everyone may pull public/**, each user owns home/<user>/**.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from support.images import ImageCache, TestImage, push_image, sha256_digest
from support.servers import RegistryProcess
from support.waiting import eventually

from .helpers import PASSWORDS, POLICY, add_user, assert_no_secrets, cargohold_cli

REALM = "cargohold test realm"
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


@pytest.fixture
def server(make_registry: Callable[..., RegistryProcess], htpasswd_file: Path) -> RegistryProcess:
    return make_registry(
        {"auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd_file)}}, "access": POLICY}
    )


def session(user: str | None = None, password: str | None = None) -> requests.Session:
    http = requests.Session()
    if user is not None:
        http.auth = (user, password if password is not None else PASSWORDS[user])
    return http


def push(server: RegistryProcess, repo: str, image: TestImage, user: str = "alice") -> str:
    return push_image(server.url, repo, image, session=session(user))


def error_code(resp: requests.Response) -> str:
    code: str = resp.json()["errors"][0]["code"]
    return code


def assert_challenge(resp: requests.Response, method: str) -> None:
    assert resp.status_code == 401, (method, resp.url, resp.status_code, resp.text)
    assert resp.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
    if method != "HEAD":
        assert error_code(resp) == "UNAUTHORIZED"


DIGEST = "sha256:" + "a" * 64
ENDPOINTS = [
    ("GET", "/v2/"),
    ("GET", "/v2/_catalog"),
    ("GET", "/v2/team/app/tags/list"),
    ("GET", "/v2/team/app/manifests/latest"),
    ("HEAD", "/v2/team/app/manifests/latest"),
    ("PUT", "/v2/team/app/manifests/latest"),
    ("DELETE", f"/v2/team/app/manifests/{DIGEST}"),
    ("GET", f"/v2/team/app/blobs/{DIGEST}"),
    ("HEAD", f"/v2/team/app/blobs/{DIGEST}"),
    ("DELETE", f"/v2/team/app/blobs/{DIGEST}"),
    ("POST", "/v2/team/app/blobs/uploads/"),
    ("GET", "/v2/team/app/blobs/uploads/some-id"),
    ("PATCH", "/v2/team/app/blobs/uploads/some-id"),
    ("PUT", f"/v2/team/app/blobs/uploads/some-id?digest={DIGEST}"),
    ("DELETE", "/v2/team/app/blobs/uploads/some-id"),
    ("GET", f"/v2/team/app/referrers/{DIGEST}"),
    ("GET", "/v2/no/such/endpoint"),
    ("POST", "/v2/public/app/blobs/uploads/"),  # public is pull-only for anonymous callers
]


def test_every_endpoint_challenges_without_credentials(server: RegistryProcess) -> None:
    for method, path in ENDPOINTS:
        assert_challenge(requests.request(method, server.url + path, timeout=10), method)


def test_wrong_password_is_401_and_right_one_works(server: RegistryProcess) -> None:
    assert_challenge(session("alice", "nope").get(server.url + "/v2/", timeout=10), "GET")
    assert_challenge(session("mallory", "x").get(server.url + "/v2/", timeout=10), "GET")
    resp = requests.get(server.url + "/v2/", headers={"Authorization": "Basic !!"}, timeout=10)
    assert_challenge(resp, "GET")
    resp = requests.get(server.url + "/v2/", headers={"Authorization": "Bearer x"}, timeout=10)
    assert_challenge(resp, "GET")
    assert session("alice").get(server.url + "/v2/", timeout=10).status_code == 200


def test_read_only_user(server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=301)
    digest = push(server, "team/app", image)
    push(server, "secret/app", images.get(seed=302))
    bob = session("bob")
    manifest = bob.get(f"{server.url}/v2/team/app/manifests/latest", headers=ACCEPT, timeout=10)
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest
    layer = image.layer_digests[0]
    assert bob.get(f"{server.url}/v2/team/app/blobs/{layer}", timeout=10).status_code == 200
    assert bob.get(f"{server.url}/v2/team/app/tags/list", timeout=10).json()["tags"] == ["latest"]

    for method, path in [
        ("POST", "/v2/team/app/blobs/uploads/"),
        ("PUT", "/v2/team/app/manifests/v2"),
        ("DELETE", f"/v2/team/app/manifests/{digest}"),
        ("DELETE", f"/v2/team/app/blobs/{layer}"),
        ("GET", "/v2/secret/app/manifests/latest"),
    ]:
        resp = bob.request(method, server.url + path, timeout=10)
        assert resp.status_code == 403, (method, path, resp.text)
        assert error_code(resp) == "DENIED"
        assert "WWW-Authenticate" not in resp.headers

    assert bob.get(f"{server.url}/v2/_catalog", timeout=10).json() == {"repositories": ["team/app"]}
    everything = session("alice").get(f"{server.url}/v2/_catalog", timeout=10).json()
    assert everything == {"repositories": ["secret/app", "team/app"]}
    log = server.log_path.read_text()
    assert "cargohold.audit: denied user=bob addr=127.0.0.1 method=POST" in log
    assert "path=/v2/team/app/blobs/uploads/ reason=not allowed to pull/push" not in log
    assert "reason=not allowed to push on team/app" in log


def test_catalog_pagination_counts_only_visible_repositories(
    server: RegistryProcess, images: ImageCache
) -> None:
    image = images.get(seed=303)
    for repo in ("team/a", "secret/b", "team/c", "secret/d", "team/e"):
        push(server, repo, image)
    bob = session("bob")
    first = bob.get(f"{server.url}/v2/_catalog?n=2", timeout=10)
    assert first.json() == {"repositories": ["team/a", "team/c"]}
    assert "last=team%2Fc" in first.headers["Link"] or "last=team/c" in first.headers["Link"]
    rest = bob.get(f"{server.url}/v2/_catalog?n=2&last=team/c", timeout=10)
    assert rest.json() == {"repositories": ["team/e"]}


def test_anonymous_pull_of_public_repositories(server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=304)
    digest = push(server, "public/tool", image)
    anonymous = requests.get(
        f"{server.url}/v2/public/tool/manifests/latest", headers=ACCEPT, timeout=10
    )
    assert anonymous.status_code == 200
    assert anonymous.headers["Docker-Content-Digest"] == digest
    assert_challenge(
        requests.post(f"{server.url}/v2/public/tool/blobs/uploads/", timeout=10), "POST"
    )
    assert_challenge(requests.get(f"{server.url}/v2/_catalog", timeout=10), "GET")
    # a logged-in user without rules of their own still gets what anonymous callers get
    assert session("carol").get(f"{server.url}/v2/public/tool/tags/list", timeout=10).ok


def test_group_and_home_rules(server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=305)
    push(server, "team/dev-app", image, user="carol")
    push(server, "home/carol/scratch", image, user="carol")
    carol = session("carol")
    digest = image.digest
    resp = carol.delete(f"{server.url}/v2/home/carol/scratch/manifests/{digest}", timeout=10)
    assert resp.status_code == 202
    resp = carol.delete(f"{server.url}/v2/team/dev-app/manifests/{digest}", timeout=10)
    assert resp.status_code == 403
    resp = carol.post(f"{server.url}/v2/home/bob/x/blobs/uploads/", timeout=10)
    assert resp.status_code == 403
    resp = carol.post(f"{server.url}/v2/secret/x/blobs/uploads/", timeout=10)
    assert resp.status_code == 403


def test_cross_repository_mount_needs_pull_on_the_source(
    server: RegistryProcess, images: ImageCache
) -> None:
    image = images.get(seed=306)
    push(server, "secret/base", image)
    layer = image.layer_digests[0]
    query = f"?mount={layer}&from=secret/base"
    carol = session("carol")
    resp = carol.post(f"{server.url}/v2/team/app/blobs/uploads/{query}", timeout=10)
    assert resp.status_code == 202, resp.text  # an ordinary upload session, not a mount
    assert carol.head(f"{server.url}/v2/team/app/blobs/{layer}", timeout=10).status_code == 404
    assert "mount refused user=carol" in server.log_path.read_text()
    resp = session("alice").post(f"{server.url}/v2/team/app/blobs/uploads/{query}", timeout=10)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Docker-Content-Digest"] == layer


def test_htpasswd_file_is_reread_while_running(
    server: RegistryProcess, htpasswd_file: Path
) -> None:
    dave = session("dave", "dave-new-pw")
    assert dave.get(server.url + "/v2/", timeout=10).status_code == 401
    add_user(htpasswd_file, "dave", "dave-new-pw")
    # The file is looked at again at most once a second, and every refused attempt counts
    # towards the login throttle (5 per minute): polling faster could be throttled before the
    # re-read lands.
    eventually(lambda: dave.get(server.url + "/v2/", timeout=10).status_code == 200, interval=1.1)
    bob = session("bob")
    assert bob.get(server.url + "/v2/", timeout=10).status_code == 200  # now cached
    cargohold_cli("htpasswd", "delete", str(htpasswd_file), "bob")
    eventually(lambda: bob.get(server.url + "/v2/", timeout=10).status_code == 401, interval=0.2)


def test_failed_logins_are_throttled(server: RegistryProcess) -> None:
    wrong = session("carol", "guess")
    statuses = [wrong.get(server.url + "/v2/", timeout=10).status_code for _ in range(5)]
    assert statuses == [401] * 5
    for http in (wrong, session("carol")):  # even the right password waits now
        resp = http.get(server.url + "/v2/_catalog", timeout=10)
        assert resp.status_code == 429, resp.text
        assert error_code(resp) == "TOOMANYREQUESTS"
        assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert session("alice").get(server.url + "/v2/", timeout=10).status_code == 200
    assert "reason=too many failed logins" in server.log_path.read_text()


def test_passwords_never_reach_the_log(server: RegistryProcess, images: ImageCache) -> None:
    push(server, "team/logged", images.get(seed=307), user="carol")
    session("bob", "bob-typo-password").get(server.url + "/v2/", timeout=10)
    requests.get(server.url + "/v2/?password=hunter2-in-query", timeout=10)
    secrets = [*PASSWORDS.values(), "bob-typo-password", "hunter2-in-query"]
    secrets += [f"{user}:{password}" for user, password in PASSWORDS.items()]
    assert_no_secrets(server.log_path, secrets)
    assert "user=carol" in server.log_path.read_text()  # the access log names the user


def test_without_auth_the_registry_stays_open(
    make_registry: Callable[..., RegistryProcess], images: ImageCache
) -> None:
    server = make_registry()
    push_image(server.url, "open/app", images.get(seed=308))
    assert requests.get(server.url + "/v2/_catalog", timeout=10).json() == {
        "repositories": ["open/app"]
    }


def test_monolithic_upload_as_a_user(server: RegistryProcess) -> None:
    data = b"hello secure world"
    digest = sha256_digest(data)
    carol = session("carol")
    resp = carol.post(
        f"{server.url}/v2/team/mono/blobs/uploads/?digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=10,
    )
    assert resp.status_code == 201, resp.text
