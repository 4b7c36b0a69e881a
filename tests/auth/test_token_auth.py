"""Bearer tokens over HTTP: the built-in token server and tokens from an external one."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from support.images import ImageCache, push_image
from support.servers import RegistryProcess

from cargohold.auth import certs

from .helpers import PASSWORDS, POLICY, assert_no_secrets

SERVICE = "cargohold-test"


@pytest.fixture
def server(
    make_registry: Callable[..., RegistryProcess], htpasswd_file: Path, tmp_path: Path
) -> RegistryProcess:
    builtin = {"htpasswd": str(htpasswd_file), "key": str(tmp_path / "keys" / "token.key")}
    config = {"auth": {"token": {"service": SERVICE, "builtin": builtin}}, "access": POLICY}
    return make_registry(config)


def token_for(
    server: RegistryProcess, user: str | None, *scopes: str, password: str | None = None
) -> requests.Response:
    auth = None if user is None else (user, password or PASSWORDS[user])
    params: list[tuple[str, str]] = [("service", SERVICE), *(("scope", s) for s in scopes)]
    return requests.get(f"{server.url}/auth/token", params=params, auth=auth, timeout=10)


def bearer(token: str) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {token}"
    return http


def access_of(token: str) -> list[dict[str, Any]]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    access: list[dict[str, Any]] = claims["access"]
    return access


def test_challenges_name_realm_service_and_scope(server: RegistryProcess) -> None:
    realm = f'Bearer realm="{server.url}/auth/token",service="{SERVICE}"'
    pull, push = "repository:team/app:pull", "repository:team/app:pull,push"
    cases = [
        ("GET", "/v2/", realm),
        ("GET", "/v2/_catalog", f'{realm},scope="registry:catalog:*"'),
        ("GET", "/v2/team/app/manifests/v1", f'{realm},scope="{pull}"'),
        ("HEAD", "/v2/team/app/blobs/sha256:" + "0" * 64, f'{realm},scope="{pull}"'),
        ("POST", "/v2/team/app/blobs/uploads/", f'{realm},scope="{push}"'),
        ("PUT", "/v2/team/app/manifests/v1", f'{realm},scope="{push}"'),
        ("DELETE", "/v2/team/app/manifests/v1", f'{realm},scope="repository:team/app:delete"'),
    ]
    for method, path, header in cases:
        resp = requests.request(method, server.url + path, timeout=10)
        assert resp.status_code == 401, (method, path)
        assert resp.headers["WWW-Authenticate"] == header
    resp = requests.get(server.url + "/v2/", headers={"Authorization": "Bearer junk"}, timeout=10)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].endswith(',error="invalid_token"')


def test_token_endpoint_grants_the_intersection(server: RegistryProcess) -> None:
    resp = token_for(server, "bob", "repository:team/app:pull,push", "repository:secret/x:pull")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert resp.headers["Cache-Control"] == "no-store"
    assert access_of(body["token"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull"]}
    ]
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("bob", SERVICE, "cargohold")

    admin = token_for(server, "alice", "repository:any/thing:*", "registry:catalog:*").json()
    assert access_of(admin["token"]) == [
        {"type": "repository", "name": "any/thing", "actions": ["pull", "push", "delete"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    anonymous = token_for(server, None, "repository:public/x:pull,push", "repository:team/app:pull")
    assert anonymous.status_code == 200
    assert access_of(anonymous.json()["token"]) == [
        {"type": "repository", "name": "public/x", "actions": ["pull"]}
    ]


def test_token_endpoint_refuses(server: RegistryProcess) -> None:
    wrong = token_for(server, "bob", "repository:team/app:pull", password="wrong")
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"] == f'Basic realm="{SERVICE}"'
    other_service = requests.get(f"{server.url}/auth/token?service=elsewhere", timeout=10)
    assert other_service.status_code == 400
    refresh = requests.post(
        f"{server.url}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": "x"},
        timeout=10,
    )
    assert refresh.status_code == 400


def test_oauth_password_grant(server: RegistryProcess) -> None:
    resp = requests.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "password",
            "username": "carol",
            "password": PASSWORDS["carol"],
            "service": SERVICE,
            "scope": "repository:team/app:pull,push",
            "client_id": "test",
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    assert access_of(resp.json()["access_token"])[0]["actions"] == ["pull", "push"]


def test_pushing_and_pulling_with_tokens(server: RegistryProcess, images: ImageCache) -> None:
    image = images.get(seed=401)
    carol = token_for(server, "carol", "repository:team/app:pull,push").json()["token"]
    push_image(server.url, "team/app", image, session=bearer(carol))
    bob = token_for(server, "bob", "repository:team/app:pull,push").json()["token"]
    resp = bearer(bob).get(f"{server.url}/v2/team/app/tags/list", timeout=10)
    assert resp.json()["tags"] == ["latest"]
    # bob's token has pull only, and the policy would not give him push: 403, not a new token
    resp = bearer(bob).post(f"{server.url}/v2/team/app/blobs/uploads/", timeout=10)
    assert resp.status_code == 403
    assert resp.json()["errors"][0]["code"] == "DENIED"
    # carol's pull-only token could become pull,push: 401 insufficient_scope sends her back
    pull_only = token_for(server, "carol", "repository:team/app:pull").json()["token"]
    resp = bearer(pull_only).post(f"{server.url}/v2/team/app/blobs/uploads/", timeout=10)
    assert resp.status_code == 401
    challenge = resp.headers["WWW-Authenticate"]
    assert 'scope="repository:team/app:pull,push"' in challenge
    assert challenge.endswith('error="insufficient_scope"')
    # anyone, token or not, may pull public/**; pushing there needs a login
    alice = token_for(server, "alice", "repository:public/app:pull,push").json()["token"]
    push_image(server.url, "public/app", image, session=bearer(alice))
    assert requests.get(f"{server.url}/v2/public/app/tags/list", timeout=10).ok
    anonymous = token_for(server, None, "repository:public/app:pull,push").json()["token"]
    resp = bearer(anonymous).post(f"{server.url}/v2/public/app/blobs/uploads/", timeout=10)
    assert resp.status_code == 401

    catalog = token_for(server, "bob", "registry:catalog:*").json()["token"]
    assert bearer(catalog).get(f"{server.url}/v2/_catalog", timeout=10).json() == {
        "repositories": ["public/app", "team/app"]
    }
    resp = bearer(bob).get(f"{server.url}/v2/_catalog", timeout=10)  # no catalog scope
    assert resp.status_code == 401
    assert_no_secrets(
        server.log_path, [carol, bob, pull_only, alice, anonymous, catalog, *PASSWORDS.values()]
    )


def test_the_token_key_is_created_once_and_exported(
    server: RegistryProcess, tmp_path: Path
) -> None:
    key, cert = tmp_path / "keys" / "token.key", tmp_path / "keys" / "token.crt"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    token = token_for(server, "bob", "repository:team/app:pull").json()["token"]
    leaf = base64.b64decode(jwt.get_unverified_header(token)["x5c"][0])
    assert leaf == certs.load_cert(str(cert)).public_bytes(serialization.Encoding.DER)
    server.restart()
    again = token_for(server, "bob", "repository:team/app:pull").json()["token"]
    assert jwt.get_unverified_header(again)["kid"] == jwt.get_unverified_header(token)["kid"]
    assert bearer(token).get(f"{server.url}/v2/team/app/tags/list", timeout=10).status_code in (
        200,
        404,
    )


def test_tokens_from_an_external_token_server(
    make_registry: Callable[..., RegistryProcess], tmp_path: Path, images: ImageCache
) -> None:
    """registry:2's auth.token: the registry only verifies; a test key plays the token server."""
    ca_key = certs.new_key()
    ca = certs.make_ca(ca_key, "auth CA")
    signer_key = certs.new_key("rsa")
    signer = certs.issue_client(ca_key, ca, signer_key, "auth signer")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(certs.cert_pem(ca))
    server = make_registry(
        {
            "auth": {
                "token": {
                    "realm": "https://auth.example.com/token",
                    "service": "registry.example.com",
                    "issuer": "auth.example.com",
                    "rootcertbundle": str(bundle),
                }
            }
        }
    )
    x5c = [base64.b64encode(signer.public_bytes(serialization.Encoding.DER)).decode()]

    def mint(**overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "auth.example.com",
            "sub": "robot",
            "aud": "registry.example.com",
            "exp": now + 60,
            "nbf": now,
            "iat": now,
            "access": [{"type": "repository", "name": "ext/app", "actions": ["pull", "push"]}],
            **overrides,
        }
        return jwt.encode(claims, signer_key, algorithm="RS256", headers={"x5c": x5c})

    resp = requests.get(server.url + "/v2/ext/app/tags/list", timeout=10)
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:ext/app:pull"'
    )
    push_image(server.url, "ext/app", images.get(seed=402), session=bearer(mint()))
    for bad in (mint(aud="other"), mint(exp=int(time.time()) - 600), mint(iss="evil")):
        resp = bearer(bad).get(server.url + "/v2/ext/app/tags/list", timeout=10)
        assert resp.status_code == 401
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    # a valid token without the scope: insufficient_scope (only that server can widen it)
    resp = bearer(mint()).get(server.url + "/v2/other/app/tags/list", timeout=10)
    assert resp.status_code == 401
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    assert "denied user=robot" in server.log_path.read_text()


def test_workers_share_the_signing_key(
    make_registry: Callable[..., RegistryProcess], htpasswd_file: Path, tmp_path: Path
) -> None:
    """Workers start together and race to create the key: one wins, every worker signs with
    it, so a token from one worker is good on all (each request here is a new connection)."""
    builtin = {"htpasswd": str(htpasswd_file), "key": str(tmp_path / "shared" / "token.key")}
    config = {"auth": {"token": {"service": SERVICE, "builtin": builtin}}, "access": POLICY}
    server = make_registry(config, workers=3)
    kids = set()
    for _ in range(12):
        token = token_for(server, "bob", "repository:team/app:pull").json()["token"]
        kids.add(jwt.get_unverified_header(token)["kid"])
        resp = requests.get(
            f"{server.url}/v2/team/app/tags/list",
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=10,
        )
        assert resp.status_code == 404  # authorized; the repository just does not exist
    assert len(kids) == 1
