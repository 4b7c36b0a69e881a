"""Import into and export from a running registry over the HTTP API, with and without login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from authproxy import AuthProxy
from imagetools import cargohold, docker_archive, tagged_digest, tar_directory
from support.clients import Skopeo
from support.images import ImageCache, sha256_digest
from support.servers import RegistryProcess, unique_repo


def _served_digest(skopeo: Skopeo, host: str, ref: str) -> str:
    return sha256_digest(skopeo.inspect_raw(f"docker://{host}/{ref}"))


def test_import_over_http_then_pull(
    images: ImageCache, registry: RegistryProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    image = images.get(seed=301, layer_count=2)
    repo = unique_repo("images-http")
    # loopback: https is tried first and falls back to http, as docker does
    out = cargohold("import", image.layout, f"{repo}:v1", "--to", registry.host).stdout
    assert f"imported {repo}:v1 into {registry.host}" in out
    sk = skopeo.with_logs(registry)
    assert _served_digest(sk, registry.host, f"{repo}:v1") == image.digest

    # the second time every layer is already there: HEAD first, nothing sent again
    again = cargohold(
        "import", image.layout, f"{repo}:v2", "--to", registry.host, "--plain-http"
    ).stdout
    assert "2 layers (2 already present)" in again
    assert "written" not in again
    assert _served_digest(sk, registry.host, f"{repo}:v2") == image.digest


def test_import_docker_archive_over_http(
    images: ImageCache, registry: RegistryProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    image = images.get(seed=302)
    repo = unique_repo("images-dock")
    archive = docker_archive(skopeo, image, tmp_path / "saved.tar", f"{repo}:1")
    cargohold("import", archive, "--to", registry.host, "--plain-http")
    sk = skopeo.with_logs(registry)
    info = sk.inspect(f"docker://{registry.host}/{repo}:1", extra=["--config"])
    assert info["rootfs"]["diff_ids"] == list(image.platforms[0].diff_ids)
    pulled = tmp_path / "pulled"
    sk.copy(f"docker://{registry.host}/{repo}:1", f"oci:{pulled}:x")


def test_remote_import_of_a_broken_archive_tags_nothing(
    images: ImageCache, registry: RegistryProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    image = images.get(seed=303)
    repo = unique_repo("images-broken")
    archive = tar_directory(image.layout, tmp_path / "layout.tar")
    half = tmp_path / "half.tar"
    half.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    proc = cargohold("import", half, repo, "--to", registry.host, "--plain-http", check=False)
    assert proc.returncode == 1 and "truncated" in proc.stderr
    listing = skopeo.run(
        "list-tags", "--tls-verify=false", f"docker://{registry.host}/{repo}", check=False
    )
    assert listing.returncode != 0 or '"Tags": []' in listing.stdout


def test_export_from_a_remote_registry(
    images: ImageCache, registry: RegistryProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    image = images.get(seed=304, multi_arch=True)
    repo = unique_repo("images-from")
    skopeo.copy(image.oci_ref(), f"docker://{registry.host}/{repo}:m", all_images=True)
    layout = tmp_path / "out"
    cargohold("export", f"{repo}:m", "--from", registry.host, "--format", "oci", "-o", layout)
    assert sha256_digest(skopeo.inspect_raw(f"oci:{layout}:m")) == image.index_digest
    archive = tmp_path / "out.tar"
    cargohold(
        "export", f"{repo}@{image.index_digest}", "--from", registry.host, "-o", archive,
        "--platform", "linux/arm64", "--name", "arm/img:1",
    )  # fmt: skip
    info = skopeo.inspect(f"docker-archive:{archive}:arm/img:1", extra=["--config"])
    assert info["architecture"] == "arm64"


def test_unreachable_registry_is_a_clear_error(images: ImageCache, root: Path) -> None:
    proc = cargohold(
        "import", images.get(seed=305).layout, "x/y", "--to", "127.0.0.1:9", check=False
    )
    assert proc.returncode == 1
    assert "cannot connect" in proc.stderr and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- login


@pytest.fixture(params=["basic", "bearer"])
def proxy(request: pytest.FixtureRequest, registry: RegistryProcess) -> Iterator[AuthProxy]:
    front = AuthProxy(registry.url, request.param).start()
    yield front
    front.stop()


def test_import_and_export_through_login(
    images: ImageCache, proxy: AuthProxy, registry: RegistryProcess, skopeo: Skopeo, tmp_path: Path
) -> None:
    image = images.get(seed=306, layer_count=2)
    repo = unique_repo("images-auth")
    login = ["--username", proxy.username, "--password-stdin", "--plain-http"]
    cargohold("import", image.layout, f"{repo}:1", "--to", proxy.host, *login, input=proxy.password)
    assert _served_digest(skopeo, registry.host, f"{repo}:1") == image.digest
    if proxy.mode == "bearer":
        assert proxy.token_requests and all(r["basic"] for r in proxy.token_requests)
        scopes = {s for r in proxy.token_requests for s in r["scopes"]}
        assert f"repository:{repo}:pull,push" in scopes
        assert all(r["service"] == "cargohold-test" for r in proxy.token_requests)

    out = tmp_path / "out.tar"
    cargohold(
        "export", f"{repo}:1", "--from", proxy.host, "-o", out, "--format", "oci",
        "-u", proxy.username, "-p", proxy.password, "--plain-http",
    )  # fmt: skip
    imported = tmp_path / "root"
    cargohold("import", out, "--root", imported)


def test_wrong_or_missing_password_is_refused(
    images: ImageCache, proxy: AuthProxy, tmp_path: Path
) -> None:
    image = images.get(seed=307)
    base = ["import", image.layout, "auth/x", "--to", proxy.host, "--plain-http"]
    missing = cargohold(*base, check=False)
    assert missing.returncode == 1
    assert "--username" in missing.stderr or "refused" in missing.stderr, missing.stderr
    wrong = cargohold(*base, "-u", proxy.username, "-p", "wrong", check=False)
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "refused" in wrong.stderr or "authentication" in wrong.stderr, wrong.stderr


def test_expired_tokens_are_renewed(
    images: ImageCache, registry: RegistryProcess, skopeo: Skopeo
) -> None:
    """Docker's token server hands out short-lived tokens: a 401 mid-import means "get another"."""
    front = AuthProxy(registry.url, "bearer", max_uses=3).start()
    try:
        image = images.get(seed=308, layer_count=3)
        repo = unique_repo("images-expiry")
        cargohold(
            "import", image.layout, f"{repo}:1", "--to", front.host, "--plain-http",
            "-u", front.username, "-p", front.password,
        )  # fmt: skip
        assert len(front.token_requests) > 2
        assert _served_digest(skopeo, registry.host, f"{repo}:1") == image.digest
    finally:
        front.stop()


def test_import_and_export_over_tls_with_htpasswd_login(images: ImageCache, tmp_path: Path) -> None:
    """The real server with http.tls and auth.htpasswd: --ca-cert verifies, --insecure skips."""
    from support.servers import RegistryProcess as Server
    from support.servers import cargohold_command, cargohold_env

    pki, htpasswd = tmp_path / "pki", tmp_path / "htpasswd"
    made = cargohold("cert", "--out", pki, "--host", "127.0.0.1", check=False)
    if made.returncode != 0:
        pytest.skip(f"`cargohold cert` is not available: {made.stderr.strip()[:200]}")
    cargohold("htpasswd", "add", "--password-stdin", "--cost", "4", htpasswd, "alice", input="pw\n")
    server = Server(
        "cargohold",
        cargohold_command(),
        tmp_path / "server",
        env=cargohold_env(),
        ready_scheme="https",
        config={
            "http": {
                "tls": {"certificate": str(pki / "server.crt"), "key": str(pki / "server.key")}
            },
            "auth": {"htpasswd": {"realm": "test", "path": str(htpasswd)}},
        },
    )
    server.start()
    try:
        image = images.get(seed=309)
        to = ["import", image.layout, "tls/app:1", "--to", server.host]
        unverified = cargohold(*to, "-u", "alice", "-p", "pw", check=False)
        assert unverified.returncode == 1 and "--ca-cert" in unverified.stderr
        anonymous = cargohold(*to, "--ca-cert", pki / "ca.crt", check=False)
        assert anonymous.returncode == 1 and "requires a login" in anonymous.stderr
        wrong = cargohold(*to, "--ca-cert", pki / "ca.crt", "-u", "alice", "-p", "no", check=False)
        assert wrong.returncode == 1 and "refused the credentials" in wrong.stderr
        ok = cargohold(
            *to, "--ca-cert", pki / "ca.crt", "-u", "alice", "--password-stdin", input="pw\n"
        )
        assert image.digest in ok.stdout
        again = cargohold(*to, "--insecure", "-u", "alice", "-p", "pw").stdout
        assert "1 layers (1 already present)" in again
        out = tmp_path / "out"
        cargohold(
            "export", "tls/app:1", "--from", server.host, "--ca-cert", pki / "ca.crt",
            "-u", "alice", "-p", "pw", "--format", "oci", "-o", out,
        )  # fmt: skip
        fresh = tmp_path / "fresh"
        cargohold("import", out, "--root", fresh)
        assert tagged_digest(fresh, "tls/app", "1") == image.digest
    finally:
        server.stop()
