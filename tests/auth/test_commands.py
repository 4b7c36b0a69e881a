"""``cargohold cert`` and ``cargohold htpasswd``: files, permissions, interop with openssl's and
Apache's view of them, and the instructions printed for each client."""

from __future__ import annotations

import ipaddress
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from cargohold.auth import htpasswd

from .helpers import Pki, add_user, cargohold_cli, make_pki


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_cert_writes_ca_and_server_pair_with_safe_modes(pki: Pki) -> None:
    assert _mode(pki.dir / "ca.key") == 0o600
    assert _mode(pki.server_key) == 0o600
    assert _mode(pki.client_key) == 0o600
    assert _mode(pki.ca) == 0o644
    assert _mode(pki.server_cert) == 0o644


def test_server_certificate_has_the_sans_and_chains_to_the_ca(pki: Pki) -> None:
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    client.verify_directly_issued_by(ca)
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_openssl_verifies_the_chain_for_its_purpose(pki: Pki) -> None:
    for cert, purpose in ((pki.server_cert, "sslserver"), (pki.client_cert, "sslclient")):
        out = subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", str(pki.ca), str(cert)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr


def test_cert_prints_where_every_client_wants_the_ca(pki: Pki) -> None:
    out = pki.server_output
    for expected in (
        "/etc/docker/certs.d/127.0.0.1:5000/ca.crt",
        "/etc/docker/certs.d/localhost:5000/ca.crt",
        "/etc/containers/certs.d/127.0.0.1:5000/ca.crt",
        "/etc/containerd/certs.d/127.0.0.1:5000/hosts.toml",
        'server = "https://127.0.0.1:5000"',
        '[host."https://127.0.0.1:5000"]',
        "/usr/local/share/ca-certificates/",
        "update-ca-certificates",
        f"REGISTRY_HTTP_TLS_CERTIFICATE={pki.server_cert}",
        f"REGISTRY_HTTP_TLS_KEY={pki.server_key}",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    client = pki.client_output
    assert "/etc/docker/certs.d/127.0.0.1:5000/ci-runner.cert" in client
    assert "clientcas" in client
    assert 'client = [["/etc/containerd/certs.d/127.0.0.1:5000/ci-runner.cert"' in client


def test_cert_reuses_the_ca_and_port_443_has_no_port(tmp_path: Path) -> None:
    make_pki(tmp_path)
    ca_before = (tmp_path / "ca.crt").read_bytes()
    again = cargohold_cli(
        "cert", "--out", str(tmp_path), "--host", "registry.example.com", "--host", "::1",
        "--port", "443", "--key-type", "rsa",
    )  # fmt: skip
    assert (tmp_path / "ca.crt").read_bytes() == ca_before
    assert "existing CA reused" in again.stdout
    assert "/etc/docker/certs.d/registry.example.com/ca.crt" in again.stdout
    assert "/etc/docker/certs.d/[::1]/ca.crt" in again.stdout
    cert = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]


@pytest.mark.parametrize(
    "args",
    [
        ["--host", "bad host!"],
        [],
        ["--host", "ok.example", "--port", "0"],
        ["--client", "../evil"],
    ],
)
def test_cert_rejects_bad_input(tmp_path: Path, args: list[str]) -> None:
    out = cargohold_cli("cert", "--out", str(tmp_path / "pki"), *args, check=False)
    assert out.returncode == 1, out.stdout
    assert not (tmp_path / "pki" / "server.crt").exists()


def test_htpasswd_add_list_delete(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "first-pass")
    add_user(path, "bob", "bob-pass")
    add_user(path, "alice", "second-pass")  # replaces, keeps order
    assert _mode(path) == 0o600
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["alice", "bob"]
    assert all(line.split(":", 1)[1].startswith("$2y$04$") for line in lines)
    entries = htpasswd.parse(path.read_text())
    assert htpasswd.verify_password("second-pass", entries["alice"])
    assert not htpasswd.verify_password("first-pass", entries["alice"])

    listed = cargohold_cli("htpasswd", "list", str(path))
    assert listed.stdout.split() == ["alice", "bob"]
    cargohold_cli("htpasswd", "delete", str(path), "bob")
    missing = cargohold_cli("htpasswd", "delete", str(path), "bob", check=False)
    assert missing.returncode == 1 and "no user bob" in missing.stderr
    assert cargohold_cli("htpasswd", "list", str(path)).stdout.split() == ["alice"]


def test_htpasswd_keeps_a_files_mode_and_refuses_bad_names(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    add_user(path, "alice", "pw")
    path.chmod(0o640)
    add_user(path, "bob", "pw2")
    assert _mode(path) == 0o640
    for bad in ("a:b", "with space", ""):
        out = cargohold_cli(
            "htpasswd", "add", str(path), bad, "--password-stdin", input="x\n", check=False
        )
        assert out.returncode != 0
    no_tty = cargohold_cli("htpasswd", "add", str(path), "carol", check=False)
    assert no_tty.returncode == 1 and "--password-stdin" in no_tty.stderr


@pytest.mark.skipif(shutil.which("htpasswd") is None, reason="apache2-utils htpasswd not installed")
def test_htpasswd_files_interoperate_with_apache_htpasswd(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    add_user(ours, "alice", "pa55-word")
    check = subprocess.run(
        ["htpasswd", "-vb", str(ours), "alice", "pa55-word"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    theirs = subprocess.run(
        ["htpasswd", "-Bbn", "testuser", "testpassword"], capture_output=True, text=True, check=True
    ).stdout
    entries = htpasswd.parse(theirs)
    assert htpasswd.verify_password("testpassword", entries["testuser"])
    assert not htpasswd.verify_password("wrong", entries["testuser"])
