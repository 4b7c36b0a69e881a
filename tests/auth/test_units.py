"""The security pieces in isolation: policy, token verification, throttling, the access log,
htpasswd files and the password cache, TLS reloading, and the configuration they read."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from cargohold.api import routes
from cargohold.auth import certs
from cargohold.auth.accesslog import USER_KEY, AccessLog, redact_query
from cargohold.auth.htpasswd import HtpasswdFile, PasswordChecker, hash_password, parse
from cargohold.auth.middleware import Target, parse_basic, target_of
from cargohold.auth.policy import Policy, glob_match
from cargohold.auth.scopes import Grants, InvalidToken, Scope, parse_scopes
from cargohold.auth.throttle import Throttle
from cargohold.auth.tokens import (
    TokenIssuer,
    TokenVerifier,
    jwk_thumbprint,
    libtrust_key_id,
    load_or_create_signing_key,
)
from cargohold.config import Config, ConfigError, TlsConfig, TokenConfig, load_config
from cargohold.tls import ServerTLS

from .helpers import POLICY, Pki

# --------------------------------------------------------------------------- policy


@pytest.mark.parametrize(
    ("pattern", "name", "user", "matches"),
    [
        ("team/**", "team/a/b", None, True),
        ("team/**", "team", None, False),
        ("team/*", "team/a", None, True),
        ("team/*", "team/a/b", None, False),
        ("a?c", "abc", None, True),
        ("a?c", "a/c", None, False),
        ("**", "x/y/z", None, True),
        ("home/{user}/**", "home/alice/app", "alice", True),
        ("home/{user}/**", "home/bob/app", "alice", False),
        ("home/{user}/**", "home/alice/app", None, False),
        ("lib.x/*", "libyx/a", None, False),  # dots are literal
    ],
)
def test_globs(pattern: str, name: str, user: str | None, matches: bool) -> None:
    assert glob_match(pattern, name, user) is matches


def _config(tmp_path: Path, extra: dict[str, Any]) -> Config:
    raw = {"version": "0.1", "storage": {"inmemory": {}}, **extra}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(str(path), {})


def _policy(tmp_path: Path, access: dict[str, Any] = POLICY) -> Policy:
    config = _config(
        tmp_path, {"auth": {"htpasswd": {"realm": "r", "path": "/p"}}, "access": access}
    )
    assert config.access is not None
    return Policy(config.access)


def test_policy_grants(tmp_path: Path) -> None:
    policy = _policy(tmp_path)
    assert policy.allowed("alice", "secret/x") == {"pull", "push", "delete"}
    assert policy.allowed("bob", "team/app") == {"pull"}
    assert policy.allowed("bob", "secret/x") == set()
    assert policy.allowed("carol", "team/app") == {"pull", "push"}
    assert policy.allowed("carol", "home/carol/tools") == {"pull", "push", "delete"}
    assert policy.allowed("carol", "home/bob/tools") == set()
    assert policy.allowed(None, "public/app") == {"pull"}
    assert policy.allowed("bob", "public/app") == {"pull"}  # anonymous rules apply to everyone
    assert policy.allowed(None, "team/app") == set()
    repos = ["public/a", "secret/x", "team/app", "home/bob/y"]
    assert policy.may_list("bob", repos) == ["public/a", "team/app", "home/bob/y"]
    assert policy.may_list(None, repos) == ["public/a"]


def test_no_policy_means_every_user_everything_and_anonymous_nothing() -> None:
    policy = Policy(None)
    assert policy.allowed("anyone", "x/y") == {"pull", "push", "delete"}
    assert policy.allowed(None, "x/y") == set()


def test_push_implies_pull(tmp_path: Path) -> None:
    rule = {"repositories": ["drop/*"], "users": ["u"], "actions": ["push"]}
    assert _policy(tmp_path, {"rules": [rule]}).allowed("u", "drop/box") == {"pull", "push"}


# --------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("method", "tail", "expected"),
    [
        ("GET", "", Target("base")),
        ("GET", "_catalog", Target("catalog")),
        ("GET", "a/b/manifests/latest", Target("repository", "a/b", ("pull",))),
        ("HEAD", "a/blobs/sha256:" + "0" * 64, Target("repository", "a", ("pull",))),
        ("PUT", "a/manifests/v1", Target("repository", "a", ("pull", "push"))),
        ("POST", "x/blobs/uploads/", Target("repository", "x", ("pull", "push"))),
        ("PATCH", "x/blobs/uploads/abc", Target("repository", "x", ("pull", "push"))),
        ("DELETE", "x/blobs/uploads/abc", Target("repository", "x", ("push",))),
        ("DELETE", "x/manifests/sha256:" + "1" * 64, Target("repository", "x", ("delete",))),
        ("GET", "x/tags/list", Target("repository", "x", ("pull",))),
        ("GET", "x/referrers/sha256:" + "2" * 64, Target("repository", "x", ("pull",))),
        ("GET", "nonsense", Target("other")),
    ],
)
def test_targets(method: str, tail: str, expected: Target) -> None:
    assert target_of(method, routes.match(tail)) == expected


def test_challenge_scopes() -> None:
    assert Target("repository", "a/b", ("pull", "push")).scope == "repository:a/b:pull,push"
    assert Target("catalog").scope == "registry:catalog:*"
    assert Target("base").scope == ""


def test_parse_basic() -> None:
    assert parse_basic(base64.b64encode(b"u:p:with:colons").decode()) == ("u", "p:with:colons")
    assert parse_basic("!!!") is None
    assert parse_basic(base64.b64encode(b"nocolon").decode()) is None
    assert parse_basic(base64.b64encode(b":nouser").decode()) is None


# --------------------------------------------------------------------------- scopes


def test_scopes_parse_and_merge() -> None:
    scopes = parse_scopes(
        [
            "repository:a/b:pull",
            "repository:a/b:push repository:c:pull",
            "registry:catalog:*",
            "garbage",
        ]
    )
    assert [str(s) for s in scopes] == [
        "repository:a/b:pull,push",
        "repository:c:pull",
        "registry:catalog:*",
    ]
    assert Scope.parse("repository:host:5000/x:pull") == Scope(
        "repository", "host:5000/x", ("pull",)
    )


def test_grants_from_claim() -> None:
    grants = Grants.from_claim(
        [
            {"type": "repository", "name": "a", "actions": ["pull"]},
            {"type": "repository", "name": "b", "actions": ["*"]},
        ]
    )
    assert grants.actions("repository", "a") == {"pull"}
    assert {"pull", "push", "delete"} <= grants.actions("repository", "b")
    assert grants.actions("repository", "c") == set()
    for bad in (
        "x",
        [1],
        [{"type": 1, "name": "a"}],
        [{"type": "t", "name": "n", "actions": "pull"}],
    ):
        with pytest.raises(InvalidToken):
            Grants.from_claim(bad)


# --------------------------------------------------------------------------- tokens


class TokenKit:
    """A CA, a signing certificate it issued, and helpers to mint tokens."""

    def __init__(self, tmp: Path) -> None:
        self.ca_key = certs.new_key("ec")
        self.ca = certs.make_ca(self.ca_key, "token CA")
        self.key = certs.new_key("rsa")
        self.cert = certs.issue_client(self.ca_key, self.ca, self.key, "token signer")
        self.bundle = tmp / "bundle.pem"
        self.bundle.write_bytes(certs.cert_pem(self.ca))
        self.config = TokenConfig(
            realm="https://auth.example/token",
            service="registry.example",
            issuer="auth.example",
            rootcertbundle=str(self.bundle),
        )

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "auth.example",
            "sub": "alice",
            "aud": "registry.example",
            "exp": now + 300,
            "nbf": now - 5,
            "iat": now,
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull"]}],
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def x5c(self, *chain: x509.Certificate) -> list[str]:
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain
        ]

    def mint(
        self,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        alg: str = "RS256",
        **claims: Any,
    ) -> str:
        return jwt.encode(
            self.claims(**claims), key or self.key, algorithm=alg, headers=headers or {}
        )


@pytest.fixture
def kit(tmp_path: Path) -> TokenKit:
    return TokenKit(tmp_path)


def test_x5c_chain_to_the_bundle_is_accepted(kit: TokenKit) -> None:
    verifier = TokenVerifier(kit.config)
    for chain in ((kit.cert,), (kit.cert, kit.ca)):
        claims = verifier.verify(kit.mint({"x5c": kit.x5c(*chain)}))
        assert claims.subject == "alice"
        assert claims.grants.actions("repository", "team/app") == {"pull"}
        assert not claims.builtin


def test_kid_of_a_bundle_key_and_plain_key_match(kit: TokenKit, tmp_path: Path) -> None:
    # a bundle that holds the signing certificate itself, as registry:2 setups often do
    kit.bundle.write_bytes(certs.cert_pem(kit.cert))
    verifier = TokenVerifier(kit.config)
    public = kit.key.public_key()
    assert verifier.verify(kit.mint({"kid": libtrust_key_id(public)})).subject == "alice"
    assert verifier.verify(kit.mint({"kid": jwk_thumbprint(public)})).subject == "alice"
    assert verifier.verify(kit.mint()).subject == "alice"  # no kid: key match
    with pytest.raises(InvalidToken, match="unknown key id"):
        verifier.verify(kit.mint({"kid": "NOPE"}))


def test_jwks_and_jwk_header(kit: TokenKit, tmp_path: Path) -> None:
    other = certs.new_key("ec")
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(other.public_key()))
    jwk["kid"] = "key-1"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    config = TokenConfig(
        realm="r", service="registry.example", issuer="auth.example", jwks=str(jwks)
    )
    verifier = TokenVerifier(config)
    assert verifier.verify(kit.mint({"kid": "key-1"}, key=other, alg="ES256")).subject == "alice"
    assert verifier.verify(kit.mint({"jwk": jwk}, key=other, alg="ES256")).subject == "alice"
    stranger = certs.new_key("ec")
    stranger_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(stranger.public_key()))
    with pytest.raises(InvalidToken, match="not a trusted key"):
        verifier.verify(kit.mint({"jwk": stranger_jwk}, key=stranger, alg="ES256"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"aud": "other-registry"}, "audience"),
        ({"iss": "evil"}, "issuer"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"exp": None}, "exp"),
    ],
)
def test_claims_are_checked(kit: TokenKit, overrides: dict[str, Any], message: str) -> None:
    verifier = TokenVerifier(kit.config)
    with pytest.raises(InvalidToken, match=f"(?i){message}"):
        verifier.verify(kit.mint({"x5c": kit.x5c(kit.cert)}, **overrides))


def test_forged_tokens_are_refused(kit: TokenKit) -> None:
    verifier = TokenVerifier(kit.config)
    # a self-signed certificate in x5c
    rogue_key = certs.new_key("rsa")
    rogue = certs.self_signed(rogue_key, "token signer")
    with pytest.raises(InvalidToken, match="rootcertbundle"):
        verifier.verify(kit.mint({"x5c": kit.x5c(rogue)}, key=rogue_key))
    # the right certificate, signed by another key
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(kit.mint({"x5c": kit.x5c(kit.cert)}, key=rogue_key))
    # a leaf of the trusted CA cannot issue certificates for others
    fake = certs.issue_client(kit.key, kit.cert, rogue_key, "fake")  # signed by a non-CA leaf
    with pytest.raises(InvalidToken, match="chain"):
        verifier.verify(kit.mint({"x5c": kit.x5c(fake, kit.cert)}, key=rogue_key))
    # alg none and HMAC with the public key as secret
    unsigned = jwt.encode(kit.claims(), "", algorithm="none")
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(unsigned)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(
        b"="
    )
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(header.decode() + ".e30.sig")
    with pytest.raises(InvalidToken, match="malformed"):
        verifier.verify("not-a-token")


def test_builtin_signing_key_roundtrip(tmp_path: Path) -> None:
    key_path, cert_path = tmp_path / "k" / "token.key", tmp_path / "k" / "token.crt"
    key = load_or_create_signing_key(str(key_path), str(cert_path))
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    again = load_or_create_signing_key(str(key_path), str(cert_path))
    assert again.kid == key.kid and again.certificate == key.certificate
    config = TokenConfig(realm="", service="svc", issuer="cargohold")
    issued = TokenIssuer(config, key, 300).issue("bob", [Scope("repository", "a", ("pull",))])
    assert issued["token"] == issued["access_token"] and issued["expires_in"] == 300
    datetime.datetime.strptime(issued["issued_at"], "%Y-%m-%dT%H:%M:%SZ")
    header = jwt.get_unverified_header(issued["token"])
    assert header["alg"] == "ES256" and header["kid"] == key.kid and len(header["x5c"]) == 1
    claims = TokenVerifier(config, own=key).verify(issued["token"])
    assert claims.builtin and claims.subject == "bob"
    # another registry trusting only token.crt (registry:2's rootcertbundle) accepts it too
    remote = TokenConfig(
        realm="r", service="svc", issuer="cargohold", rootcertbundle=str(cert_path)
    )
    assert not TokenVerifier(remote).verify(issued["token"]).builtin


# --------------------------------------------------------------------------- throttle


def test_throttle(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    throttle = Throttle(limit=3, window=60)
    key = ("bob", "10.0.0.1")

    async def scenario() -> None:
        for _ in range(3):
            assert await throttle.retry_after(key) is None
            await throttle.failure(key)
            now[0] += 1
        # the first failure (t=0) expires at t=60; now t=3
        assert await throttle.retry_after(key) == 57
        assert await throttle.retry_after(("bob", "10.0.0.2")) is None
        now[0] += 57
        assert await throttle.retry_after(key) is None
        await throttle.failure(key)
        await throttle.success(key)
        assert await throttle.retry_after(key) is None

    asyncio.run(scenario())


# --------------------------------------------------------------------------- access log


def test_redact_query() -> None:
    assert (
        redact_query("/v2/x/blobs/uploads/1?digest=sha256:ab")
        == "/v2/x/blobs/uploads/1?digest=sha256:ab"
    )
    assert redact_query("/auth/token?account=a&password=hunter2&scope=repository:x:pull") == (
        "/auth/token?account=a&password=REDACTED&scope=repository%3Ax%3Apull"
    )
    assert "=tok" not in redact_query("/x?access_token=tok&Token=tok")


def test_access_log_format_and_user(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp.test_utils import make_mocked_request
    from aiohttp.web import Response

    logger = logging.getLogger("test.access")
    log = AccessLog(logger, '%a "%r" %s %b "%{User-Agent}i" "%{Authorization}i" %Tfs')
    request = make_mocked_request(
        "GET", "/v2/?password=x", headers={"User-Agent": "ua", "Authorization": "Basic c2VjcmV0"}
    )
    request[USER_KEY] = "alice"
    response = Response(status=200, body=b"{}")
    with caplog.at_level(logging.INFO, logger="test.access"):
        log.log(request, response, 0.25)
    line = caplog.records[-1].getMessage()
    assert '"GET /v2/?password=REDACTED HTTP/1.1" 200' in line
    assert '"ua" "REDACTED" 0.250000s user=alice' in line
    assert "c2VjcmV0" not in line


# --------------------------------------------------------------------------- htpasswd


def test_parse_skips_non_bcrypt_without_logging_hashes(caplog: pytest.LogCaptureFixture) -> None:
    bcrypt_entry = "alice:$2y$05$abcdefghijklmnopqrstuuOKOKOKOKOKOKOKOKOKOKOKOKOKOKOKOK"
    text = f"# comment\n{bcrypt_entry}\nmd5:$apr1$xyz$secrethash\nbroken\n"
    with caplog.at_level(logging.WARNING):
        entries = parse(text)
    assert list(entries) == ["alice"]
    assert "md5" in caplog.text and "secrethash" not in caplog.text


def test_password_checker_caches_and_follows_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{hash_password('pw1', 4)}\n")
    file = HtpasswdFile(str(path), check_interval=0)
    checker = PasswordChecker(file)
    calls: list[int] = []
    original = checker._verify_sync

    def counting(password: str, hashed: str | None) -> bool:
        calls.append(1)
        return bool(original(password, hashed))

    monkeypatch.setattr(checker, "_verify_sync", counting)

    async def scenario() -> None:
        assert await checker.check("alice", "pw1")
        assert await checker.check("alice", "pw1")
        assert len(calls) == 1  # the second check came from the cache
        assert not await checker.check("alice", "wrong")
        assert not await checker.check("nobody", "pw1")
        results = await asyncio.gather(*(checker.check("alice", "pw1") for _ in range(5)))
        assert all(results)
        # the file changes: the cached success no longer counts
        path.write_text(f"alice:{hash_password('pw2', 4)}\n")
        os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
        assert not await checker.check("alice", "pw1")
        assert await checker.check("alice", "pw2")

    asyncio.run(scenario())


def test_missing_htpasswd_file_means_nobody(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{hash_password('pw', 4)}\n")
    file = HtpasswdFile(str(path), check_interval=0)
    path.unlink()
    file.refresh()
    assert file.lookup("alice") is None
    with pytest.raises(OSError):
        HtpasswdFile(str(path))


# --------------------------------------------------------------------------- TLS


def _served_serial(context: ssl.SSLContext, ca: Path) -> int:
    """Handshake in memory against ``context``; the serial of the certificate it presents."""
    client = ssl.create_default_context(cafile=str(ca))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_side = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        done = 0
        for side in (client_side, server_side):
            try:
                side.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == 2:
            break
    der = client_side.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_tls_reload_picks_up_a_new_pair_and_skips_a_broken_one(pki: Pki, tmp_path: Path) -> None:
    for name in ("ca.crt", "ca.key", "server.crt", "server.key"):
        (tmp_path / name).write_bytes((pki.dir / name).read_bytes())
    config = TlsConfig(certificate=str(tmp_path / "server.crt"), key=str(tmp_path / "server.key"))
    tls = ServerTLS(config)
    first = _served_serial(tls.context, pki.ca)
    assert not tls.check()  # nothing changed

    certs.make_server_files(str(tmp_path), ["localhost"])
    assert tls.check()
    second = _served_serial(tls.context, pki.ca)
    assert second != first

    # a key that does not match the certificate: skipped, the previous pair keeps serving
    (tmp_path / "server.key").write_bytes(certs.key_pem(certs.new_key()))
    assert not tls.check()
    assert not tls.check()  # warned once, not retried until the files change again
    assert _served_serial(tls.context, pki.ca) == second


def test_tls_minimum_version_and_client_cas(pki: Pki) -> None:
    config = TlsConfig(str(pki.server_cert), str(pki.server_key), [str(pki.ca)], "tls1.3")
    context = ServerTLS(config).context
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert context.verify_mode == ssl.CERT_REQUIRED


# --------------------------------------------------------------------------- configuration


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yml"
    path.write_text("version: 0.1\nstorage:\n  inmemory: {}\n" + text)
    return load_config(str(path), env or {})


def test_config_reads_the_seed_variables(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "",
        {
            "REGISTRY_HTTP_TLS_CERTIFICATE": "/certs/server.crt",
            "REGISTRY_HTTP_TLS_KEY": "/certs/server.key",
            "REGISTRY_AUTH": "htpasswd",
            "REGISTRY_AUTH_HTPASSWD_REALM": "Registry Realm",
            "REGISTRY_AUTH_HTPASSWD_PATH": "/auth/htpasswd",
        },
    )
    assert config.http.tls.certificate == "/certs/server.crt"
    assert config.auth.htpasswd.realm == "Registry Realm"
    assert config.access is None


def test_config_token_with_builtin_defaults(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        "auth:\n  token:\n    builtin:\n      htpasswd: /a/htpasswd\n      key: /a/token.key\n",
    )
    token = config.auth.token
    assert (token.service, token.issuer, token.realm) == ("cargohold", "cargohold", "")
    assert token.builtin.certificate == "/a/token.crt"
    assert token.builtin.expiration == 300


TOKEN = "auth:\n  token: "
RULES = "auth:\n  htpasswd: {realm: r, path: /p}\naccess:\n  rules:\n    - "


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("http:\n  tls:\n    certificate: /c\n", "http.tls.key"),
        ("http:\n  tls:\n    clientcas: [/ca]\n", "http.tls.clientcas"),
        (
            "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: ssl3\n",
            "http.tls.minimumtls",
        ),
        (
            "http:\n  tls:\n    certificate: /c\n    key: /k\n    ciphersuites: [TLS_RC4]\n",
            "http.tls.ciphersuites[0]",
        ),
        ("auth:\n  htpasswd: {realm: r}\n", "auth.htpasswd.path"),
        ("auth:\n  htpasswd: {path: /p}\n", "auth.htpasswd.realm"),
        ("auth:\n  silly: {realm: r, service: s}\n", "auth.silly"),
        ("auth:\n  htpasswd: {realm: r, path: /p}\n  token: {realm: r}\n", "auth"),
        ("auth:\n  ldap: {}\n", "auth"),
        ("auth:\n  token: {realm: r, service: s, issuer: i}\n", "auth.token.rootcertbundle"),
        ("auth:\n  token: {service: s, issuer: i, rootcertbundle: /b}\n", "auth.token.realm"),
        (
            TOKEN
            + "{realm: r, service: s, issuer: i, rootcertbundle: /b, signingalgorithms: [HS256]}\n",
            "auth.token.signingalgorithms[0]",
        ),
        ("access:\n  rules: []\n", "access"),
        ("auth:\n  htpasswd: {realm: r, path: /p}\naccess:\n  rule: []\n", "access.rule"),
        (
            RULES + "{repositories: [a], actions: [pull]}\n",
            "access.rules[0]",
        ),
        (
            RULES + "{repositories: [a], users: [u], actions: [read]}\n",
            "access.rules[0].actions[0]",
        ),
        (
            RULES + "{repositories: [a], groups: [ops], actions: [pull]}\n",
            "access.rules[0].groups[0]",
        ),
        (
            RULES + "{repository: [a], users: [u], actions: [pull]}\n",
            "access.rules[0].repository",
        ),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key, str(info.value)


def test_old_tls_versions_are_raised_to_tls12(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        config = _load(
            tmp_path, "http:\n  tls:\n    certificate: /c\n    key: /k\n    minimumtls: tls1.0\n"
        )
    assert config.http.tls.minimumtls == "tls1.2"
    assert "insecure" in caplog.text


def test_tls_files_that_do_not_load_stop_the_start_naming_the_key(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ServerTLS(TlsConfig(str(pki.server_cert), str(pki.dir / "ca.key")))  # not its key
    assert info.value.key == "http.tls.certificate"
    with pytest.raises(ConfigError) as info:
        ServerTLS(TlsConfig(str(pki.server_cert), str(pki.server_key), [str(tmp_path / "none")]))
    assert info.value.key == "http.tls.clientcas[0]"


def test_cert_command_default_validity_is_the_certs_one() -> None:
    from cargohold.auth import commands

    assert commands.LEAF_DAYS == certs.LEAF_DAYS


def test_a_registry_without_token_auth_does_not_load_cryptography(tmp_path: Path) -> None:
    """PyJWT and cryptography cost ~15 MiB in every worker; only token auth and TLS need them."""
    code = (
        "import sys\n"
        "from cargohold.cli import build_parser\n"
        "from cargohold.config import load_config\n"
        "from cargohold.api.app import create_app\n"
        "from cargohold.mirror.mirrored import MirroredRegistry\n"
        "import cargohold.server\n"
        "build_parser()\n"
        "cfg = load_config(None, {}, default_root=sys.argv[1])\n"
        "create_app(MirroredRegistry(cfg))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('cryptography', 'jwt'))\n"
        "print(' '.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == ""
