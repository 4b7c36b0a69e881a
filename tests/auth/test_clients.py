"""Real clients against a registry with TLS (a CA made by ``cargohold cert``) and logins:
skopeo, podman, docker, containerd's ctr; mutual TLS; certificate reload; the token flow,
including registry:2 itself trusting cargohold's token server."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from cryptography import x509
from support.clients import Containerd, DockerDaemon, Podman, run
from support.images import ImageCache, TestImage
from support.servers import RegistryProcess

from cargohold.auth import certs

from .helpers import (
    PASSWORDS,
    POLICY,
    Pki,
    SecureFactory,
    SecureRegistry,
    assert_no_secrets,
    cargohold_cli,
    make_pki,
    tls_config,
)

pytestmark = pytest.mark.clients
SERVICE = "cargohold-clients"


def cert_dir(tmp_path: Path, pki: Pki, *, client: bool = False, name: str = "certs") -> Path:
    """A containers-style cert dir: ca.crt, plus NAME.cert/NAME.key for mutual TLS."""
    directory = tmp_path / name
    directory.mkdir()
    shutil.copy(pki.ca, directory / "ca.crt")
    if client:
        shutil.copy(pki.client_cert, directory / "client.cert")
        shutil.copy(pki.client_key, directory / "client.key")
    return directory


def skopeo(
    *args: str, check: bool = True, logs: tuple[RegistryProcess, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run(["skopeo", "--insecure-policy", *args], check=check, logs=logs)


def creds(user: str) -> str:
    return f"{user}:{PASSWORDS[user]}"


def basic_config(htpasswd_file: Path) -> dict[str, object]:
    return {
        "auth": {"htpasswd": {"realm": "Registry Realm", "path": str(htpasswd_file)}},
        "access": POLICY,
    }


def token_config(htpasswd_file: Path, keys: Path) -> dict[str, object]:
    builtin = {"htpasswd": str(htpasswd_file), "key": str(keys / "token.key")}
    return {"auth": {"token": {"service": SERVICE, "builtin": builtin}}, "access": POLICY}


def push_with_skopeo(
    server: SecureRegistry, certs_dir: Path, image: TestImage, repo: str, user: str = "alice"
) -> str:
    ref = f"docker://{server.host}/{repo}"
    skopeo(
        "copy",
        "--dest-cert-dir",
        str(certs_dir),
        "--dest-creds",
        creds(user),
        image.oci_ref(),
        ref,
        logs=(server,),
    )
    return ref


def all_secrets(*extra: str) -> list[str]:
    return [*PASSWORDS.values(), *(f"{u}:{p}" for u, p in PASSWORDS.items()), *extra]


# --------------------------------------------------------------------------- skopeo


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_skopeo_with_the_ca_and_credentials(
    secure_registry: SecureFactory,
    pki: Pki,
    htpasswd_file: Path,
    images: ImageCache,
    tmp_path: Path,
    mode: str,
) -> None:
    config = (
        basic_config(htpasswd_file)
        if mode == "htpasswd"
        else token_config(htpasswd_file, tmp_path / "keys")
    )
    server = secure_registry(config)
    certs_dir = cert_dir(tmp_path, pki)
    image = images.get(seed=501)
    ref = push_with_skopeo(server, certs_dir, image, "team/app:v1", user="carol")
    out = skopeo(
        "inspect", "--cert-dir", str(certs_dir), "--creds", creds("bob"), ref, logs=(server,)
    )
    assert image.digest in out.stdout

    # no CA: the certificate is refused (it is signed by our private CA)
    untrusted = skopeo("inspect", "--creds", creds("bob"), ref, check=False)
    assert untrusted.returncode != 0
    assert "certificate signed by unknown authority" in untrusted.stderr
    # bob may pull but not push
    denied = skopeo(
        "copy", "--dest-cert-dir", str(certs_dir), "--dest-creds", creds("bob"),
        image.oci_ref(), f"docker://{server.host}/team/app:bob", check=False,
    )  # fmt: skip
    assert denied.returncode != 0
    assert "denied" in denied.stderr, denied.stderr
    # anonymous pull of public/**, anonymous push refused
    public = push_with_skopeo(server, certs_dir, image, "public/app:v1")
    assert image.digest in skopeo("inspect", "--cert-dir", str(certs_dir), public).stdout
    anonymous_push = skopeo(
        "copy", "--dest-cert-dir", str(certs_dir), image.oci_ref(), f"docker://{server.host}/public/app:anon",
        check=False,
    )  # fmt: skip
    assert anonymous_push.returncode != 0
    assert (
        "unauthorized" in anonymous_push.stderr.lower()
        or "authentication required" in anonymous_push.stderr
    )
    private = skopeo("inspect", "--cert-dir", str(certs_dir), ref, check=False)
    assert private.returncode != 0
    assert_no_secrets(server.log_path, all_secrets())


# --------------------------------------------------------------------------- podman


def test_podman_login_with_cert_dir(
    secure_registry: SecureFactory,
    pki: Pki,
    htpasswd_file: Path,
    podman: Podman,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    server = secure_registry(basic_config(htpasswd_file))
    certs_dir = cert_dir(tmp_path, pki)
    authfile = tmp_path / "auth.json"
    base = [*podman.prefix]
    wrong = run(
        [
            *base,
            "login",
            "--cert-dir",
            str(certs_dir),
            "--authfile",
            str(authfile),
            "-u",
            "bob",
            "--password-stdin",
            server.host,
        ],
        input="not-the-password\n",
        check=False,
    )
    assert wrong.returncode != 0
    login = run(
        [
            *base,
            "login",
            "--cert-dir",
            str(certs_dir),
            "--authfile",
            str(authfile),
            "-u",
            "bob",
            "--password-stdin",
            server.host,
        ],
        input=PASSWORDS["bob"] + "\n",
        logs=[server],
    )
    assert "Login Succeeded" in login.stdout
    image = images.get(seed=502)
    push_with_skopeo(server, certs_dir, image, "team/podman:v1")
    ref = f"{server.host}/team/podman:v1"
    run(
        [*base, "pull", "--cert-dir", str(certs_dir), "--authfile", str(authfile), ref],
        logs=[server],
    )
    assert podman.inspect(ref)["Digest"] == image.digest
    pushed = run(
        [
            *base,
            "push",
            "--cert-dir",
            str(certs_dir),
            "--authfile",
            str(authfile),
            ref,
            f"docker://{server.host}/team/podman:bob",
        ],
        check=False,
    )
    assert pushed.returncode != 0 and "denied" in pushed.stderr
    run([*base, "logout", "--authfile", str(authfile), server.host])
    podman.podman("rmi", "--force", ref)
    assert_no_secrets(server.log_path, all_secrets("not-the-password"))


# --------------------------------------------------------------------------- docker


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_docker_login_push_pull(
    secure_registry: SecureFactory,
    pki: Pki,
    htpasswd_file: Path,
    dockerd: DockerDaemon,
    images: ImageCache,
    tmp_path: Path,
    mode: str,
) -> None:
    """docker treats 127.0.0.0/8 as insecure: it speaks HTTPS here without checking the cert."""
    config = (
        basic_config(htpasswd_file)
        if mode == "htpasswd"
        else token_config(htpasswd_file, tmp_path / "keys")
    )
    server = secure_registry(config)
    certs_dir = cert_dir(tmp_path, pki)
    image = images.get(seed=503 if mode == "htpasswd" else 504)
    push_with_skopeo(server, certs_dir, image, "team/docker:v1")
    source, dest = f"{server.host}/team/docker:v1", f"{server.host}/team/docker:copy"

    def docker(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["docker", *args], env=dockerd.env, input=input, check=check, logs=[server, dockerd]
        )

    anonymous = docker("pull", source, check=False)
    assert anonymous.returncode != 0
    wrong = docker(
        "login", "-u", "carol", "--password-stdin", server.host, input="bad\n", check=False
    )
    assert wrong.returncode != 0
    assert (
        "Login Succeeded"
        in docker(
            "login", "-u", "carol", "--password-stdin", server.host, input=PASSWORDS["carol"]
        ).stdout
    )
    try:
        docker("pull", source)
        docker("tag", source, dest)
        docker("push", dest)
        resp = server.get("/v2/team/docker/tags/list", auth=("alice", PASSWORDS["alice"]))
        if mode == "token":
            token = server.get(
                f"/auth/token?service={SERVICE}&scope=repository:team/docker:pull",
                auth=("alice", PASSWORDS["alice"]),
            ).json()["token"]
            resp = server.get(
                "/v2/team/docker/tags/list", headers={"Authorization": f"Bearer {token}"}
            )
        assert sorted(resp.json()["tags"]) == ["copy", "v1"]

        docker("login", "-u", "bob", "--password-stdin", server.host, input=PASSWORDS["bob"])
        bob_push = docker("push", dest, check=False)
        assert bob_push.returncode != 0
        assert "denied" in (bob_push.stdout + bob_push.stderr)
    finally:
        docker("logout", server.host, check=False)
        docker("rmi", "--force", source, dest, check=False)
    assert_no_secrets(server.log_path, all_secrets("carol:bad"))


# --------------------------------------------------------------------------- containerd


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_ctr_through_hosts_toml(
    secure_registry: SecureFactory,
    pki: Pki,
    htpasswd_file: Path,
    containerd: Containerd,
    images: ImageCache,
    tmp_path: Path,
    mode: str,
) -> None:
    config = (
        basic_config(htpasswd_file)
        if mode == "htpasswd"
        else token_config(htpasswd_file, tmp_path / "keys")
    )
    server = secure_registry(config)
    hosts_dir = tmp_path / "hosts.d"
    (hosts_dir / server.host).mkdir(parents=True)
    (hosts_dir / server.host / "hosts.toml").write_text(
        certs.hosts_toml("127.0.0.1", server.port, ca_path=str(pki.ca))
    )
    image = images.get(seed=505 if mode == "htpasswd" else 506)
    push_with_skopeo(server, cert_dir(tmp_path, pki), image, "team/ctr:v1")
    source, dest = f"{server.host}/team/ctr:v1", f"{server.host}/team/ctr:pushed"
    hosts = ("--hosts-dir", str(hosts_dir))
    containerd.ctr("images", "pull", *hosts, "--user", creds("bob"), source, logs=[server])
    assert containerd.image_digest(source) == image.digest
    containerd.ctr("images", "tag", "--force", source, dest)
    denied = containerd.ctr("images", "push", *hosts, "--user", creds("bob"), dest, check=False)
    assert denied.returncode != 0
    containerd.ctr("images", "push", *hosts, "--user", creds("carol"), dest, logs=[server])
    tags = server.get("/v2/team/ctr/tags/list", auth=("alice", PASSWORDS["alice"]))
    if mode == "htpasswd":
        assert sorted(tags.json()["tags"]) == ["pushed", "v1"]
    containerd.ctr("images", "rm", source, dest, check=False)
    assert_no_secrets(server.log_path, all_secrets())


# --------------------------------------------------------------------------- mutual TLS


def test_mutual_tls(
    secure_registry: SecureFactory, pki: Pki, images: ImageCache, tmp_path: Path
) -> None:
    config = {"http": {"tls": tls_config(pki, clientcas=[str(pki.ca)], minimumtls="tls1.3")}}
    server = secure_registry(config, client=(pki.client_cert, pki.client_key))
    refused = (requests.exceptions.SSLError, requests.exceptions.ConnectionError)
    with pytest.raises(refused):  # TLS 1.3 reports the missing certificate after the handshake
        requests.get(server.url + "/v2/", verify=str(pki.ca), timeout=10)
    assert server.get("/v2/").status_code == 200
    stranger = make_pki(tmp_path / "other-ca")
    with pytest.raises(refused):
        requests.get(
            server.url + "/v2/",
            verify=str(pki.ca),
            cert=(str(stranger.client_cert), str(stranger.client_key)),
            timeout=10,
        )
    tls12 = ssl.create_default_context(cafile=str(pki.ca))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    tls12.load_cert_chain(pki.client_cert, pki.client_key)
    with pytest.raises(ssl.SSLError), socket.create_connection(("127.0.0.1", server.port)) as sock:
        tls12.wrap_socket(sock, server_hostname="127.0.0.1")

    image = images.get(seed=507)
    with_cert = cert_dir(tmp_path, pki, client=True, name="with-client")
    ref = f"docker://{server.host}/mtls/app:v1"
    skopeo("copy", "--dest-cert-dir", str(with_cert), image.oci_ref(), ref, logs=(server,))
    without = skopeo(
        "inspect", "--cert-dir", str(cert_dir(tmp_path, pki, name="ca-only")), ref, check=False
    )
    assert without.returncode != 0


# --------------------------------------------------------------------------- reload


def _serial(server: SecureRegistry, ca: Path) -> int:
    pem = ssl.get_server_certificate(("127.0.0.1", server.port), ca_certs=str(ca))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_certificate_is_reloaded_without_restart(
    secure_registry: SecureFactory, pki: Pki, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    shutil.copytree(pki.dir, live)
    server = secure_registry(
        {
            "http": {
                "tls": {"certificate": str(live / "server.crt"), "key": str(live / "server.key")}
            }
        }
    )
    before = _serial(server, pki.ca)
    cargohold_cli("cert", "--out", str(live), "--host", "127.0.0.1", "--host", "localhost")
    deadline = time.monotonic() + 20
    while _serial(server, pki.ca) == before:
        assert time.monotonic() < deadline, f"certificate not reloaded\n{server.describe_log()}"
        time.sleep(0.5)
    assert server.get("/v2/").status_code == 200
    assert (
        "TLS certificate" in server.log_path.read_text()
        and "reloaded" in server.log_path.read_text()
    )


# ------------------------------------------------------------------------ registry:2 + our tokens


def test_reference_registry_accepts_cargohold_tokens(
    make_registry: Callable[..., RegistryProcess],
    make_reference_registry: Callable[..., RegistryProcess],
    htpasswd_file: Path,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    """cargohold as the token server of a registry:2: x5c/kid tokens that distribution verifies."""
    keys = tmp_path / "keys"
    issuer = make_registry(token_config(htpasswd_file, keys))
    reference = make_reference_registry(
        config={
            "auth": {
                "token": {
                    "realm": f"{issuer.url}/auth/token",
                    "service": SERVICE,
                    "issuer": "cargohold",
                    "rootcertbundle": str(keys / "token.crt"),
                }
            }
        }
    )
    image = images.get(seed=508)
    ref = f"docker://{reference.host}/team/ref:v1"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds("carol"),
        image.oci_ref(),
        ref,
        logs=(reference, issuer),
    )
    out = skopeo(
        "inspect", "--tls-verify=false", "--creds", creds("bob"), ref, logs=(reference, issuer)
    )
    assert image.digest in out.stdout
    denied = skopeo(
        "copy", "--dest-tls-verify=false", "--dest-creds", creds("bob"), image.oci_ref(),
        f"docker://{reference.host}/team/ref:bob", check=False,
    )  # fmt: skip
    assert denied.returncode != 0


def test_tls_and_logins_with_several_workers(
    secure_registry: SecureFactory,
    pki: Pki,
    htpasswd_file: Path,
    images: ImageCache,
    tmp_path: Path,
) -> None:
    """Each worker serves TLS and checks logins; a push's requests land on all of them."""
    server = secure_registry(token_config(htpasswd_file, tmp_path / "keys"), workers=3)
    certs_dir = cert_dir(tmp_path, pki)
    image = images.get(seed=509, layer_count=3)
    ref = push_with_skopeo(server, certs_dir, image, "team/workers:v1", user="carol")
    out = skopeo(
        "inspect", "--cert-dir", str(certs_dir), "--creds", creds("bob"), ref, logs=(server,)
    )
    assert image.digest in out.stdout
    assert_no_secrets(server.log_path, all_secrets())


def test_large_uploads_over_tls(secure_registry: SecureFactory, pki: Pki) -> None:
    """Bodies of a megabyte or more bypass aiohttp's parser (api.socketbody); over TLS they are
    read through asyncio's SSL protocol, straight into the upload's buffers all the same."""
    server = secure_registry()
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    ca = str(pki.ca)  # per request: REQUESTS_CA_BUNDLE would override a Session's verify
    with requests.Session() as s:
        started = s.post(f"{server.url}/v2/tls/big/blobs/uploads/", timeout=10, verify=ca)
        assert started.status_code == 202
        location = started.headers["Location"]
        url = location if location.startswith("http") else server.url + location
        half = len(data) // 2
        r = s.patch(
            url, data=data[:half], headers={"Content-Range": f"0-{half - 1}"}, timeout=30, verify=ca
        )
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        url = location if location.startswith("http") else server.url + location
        sep = "&" if "?" in url else "?"
        r = s.put(f"{url}{sep}digest={digest}", data=data[half:], timeout=30, verify=ca)
        assert r.status_code == 201, r.text
        assert r.headers["Connection"].lower() == "close"  # it was read off the connection
        got = s.get(f"{server.url}/v2/tls/big/blobs/{digest}", timeout=30, verify=ca)
        assert got.content == data
