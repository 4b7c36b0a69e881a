"""A private CA, server and client certificates, made with ``cryptography`` (no openssl binary).

``cargohold cert --out DIR --host registry.example.com --host 10.0.0.5`` writes::

    DIR/ca.crt, DIR/ca.key           the CA (kept and reused when DIR already has one)
    DIR/server.crt, DIR/server.key   for http.tls.certificate / http.tls.key
    DIR/NAME.cert, DIR/NAME.key      with --client NAME: a client certificate for mutual TLS
                                     (docker's certs.d names client pairs *.cert / *.key)

Private keys are written 0600, certificates 0644, each atomically (temporary file + rename),
so a running registry that re-reads its certificate never sees half a file.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cargohold.atomicfile import write_atomic

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
CA_DAYS = 3650
LEAF_DAYS = 825  # the longest validity Apple's and browsers' rules still accept
_DNS_NAME = re.compile(
    r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)


def new_key(kind: str = "ec") -> PrivateKey:
    """An ECDSA P-256 key (``ec``, the default: small and fast) or RSA 3072 (``rsa``)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {kind!r} (expected ec or rsa)")


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cargohold"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, days: int
) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _key_usage(*, signing: bool, cert_sign: bool = False, encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def make_ca(
    key: PrivateKey, common_name: str = "cargohold CA", days: int = CA_DAYS
) -> x509.Certificate:
    name = _name(common_name)
    builder = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signing=True, cert_sign=True), critical=True)
    )
    return _sign(builder, key)


def parse_hosts(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """Subject alternative names: IP addresses as IPs, everything else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        text = host.strip().strip("[]")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(text)))
            continue
        except ValueError:
            pass
        dns = text.lower().rstrip(".")
        if not _DNS_NAME.match(dns):
            raise ValueError(f"not an IP address or DNS name: {host!r}")
        names.append(x509.DNSName(dns))
    return names


def _leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    key: PrivateKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    days: int,
) -> x509.CertificateBuilder:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        _builder(_name(common_name), ca_cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            _key_usage(signing=True, encipher=isinstance(key, rsa.RSAPrivateKey)), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )


def issue_server(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    key: PrivateKey,
    hosts: Sequence[str],
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """A server certificate for ``hosts`` (DNS names and IP addresses, all in the SAN)."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    builder = _leaf(ca_key, ca_cert, key, hosts[0], ExtendedKeyUsageOID.SERVER_AUTH, days)
    builder = builder.add_extension(x509.SubjectAlternativeName(parse_hosts(hosts)), critical=False)
    return _sign(builder, ca_key)


def issue_client(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    key: PrivateKey,
    name: str,
    days: int = LEAF_DAYS,
) -> x509.Certificate:
    """A client certificate (CN = ``name``) for mutual TLS."""
    builder = _leaf(ca_key, ca_cert, key, name, ExtendedKeyUsageOID.CLIENT_AUTH, days)
    return _sign(builder, ca_key)


def self_signed(key: PrivateKey, common_name: str, days: int = CA_DAYS) -> x509.Certificate:
    """A self-signed certificate carrying a token-signing key (for rootcertbundle and x5c)."""
    name = _name(common_name)
    builder = (
        _builder(name, name, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signing=True), critical=True)
    )
    return _sign(builder, key)


# --------------------------------------------------------------------------- files


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(path: str) -> PrivateKey:
    with open(path, "rb") as fh:
        key = serialization.load_pem_private_key(fh.read(), password=None)
    if not isinstance(
        key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"{path}: unsupported key type {type(key).__name__}")
    return key


def load_cert(path: str) -> x509.Certificate:
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificate(fh.read())


def load_certs(path: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle."""
    with open(path, "rb") as fh:
        return x509.load_pem_x509_certificates(fh.read())


@dataclass(frozen=True)
class Issued:
    ca_cert: str
    ca_key: str
    cert: str
    key: str
    ca_created: bool


def ensure_ca(
    out: str, key_type: str = "ec", days: int = CA_DAYS
) -> tuple[PrivateKey, x509.Certificate, bool]:
    """The CA in ``out`` (ca.crt + ca.key), created when missing; True when created."""
    ca_cert_path, ca_key_path = os.path.join(out, "ca.crt"), os.path.join(out, "ca.key")
    if os.path.exists(ca_cert_path) and os.path.exists(ca_key_path):
        return load_key(ca_key_path), load_cert(ca_cert_path), False
    if os.path.exists(ca_cert_path) or os.path.exists(ca_key_path):
        raise FileExistsError(
            f"{out} has only one of ca.crt and ca.key; remove it or use another --out"
        )
    ca_key = new_key(key_type)
    ca_cert = make_ca(ca_key, days=days)
    write_atomic(ca_key_path, key_pem(ca_key), mode=0o600)
    write_atomic(ca_cert_path, cert_pem(ca_cert), mode=0o644)
    return ca_key, ca_cert, True


def _issue_files(
    out: str,
    key_type: str,
    cert_file: str,
    key_file: str,
    issue: Callable[[PrivateKey, x509.Certificate, PrivateKey], x509.Certificate],
) -> Issued:
    """A new key and certificate signed by the CA in ``out`` (made on first use), written
    beside it: the key 0600, the certificate 0644."""
    os.makedirs(out, mode=0o755, exist_ok=True)
    ca_key, ca_cert, created = ensure_ca(out, key_type)
    key = new_key(key_type)
    cert = issue(ca_key, ca_cert, key)
    paths = Issued(
        ca_cert=os.path.join(out, "ca.crt"),
        ca_key=os.path.join(out, "ca.key"),
        cert=os.path.join(out, cert_file),
        key=os.path.join(out, key_file),
        ca_created=created,
    )
    # the key first: a registry re-reading the pair skips a key that does not match yet
    write_atomic(paths.key, key_pem(key), mode=0o600)
    write_atomic(paths.cert, cert_pem(cert), mode=0o644)
    return paths


def make_server_files(
    out: str, hosts: Sequence[str], key_type: str = "ec", days: int = LEAF_DAYS
) -> Issued:
    def issue(ca_key: PrivateKey, ca: x509.Certificate, key: PrivateKey) -> x509.Certificate:
        return issue_server(ca_key, ca, key, hosts, days)

    return _issue_files(out, key_type, "server.crt", "server.key", issue)


def make_client_files(out: str, name: str, key_type: str = "ec", days: int = LEAF_DAYS) -> Issued:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", name):
        raise ValueError(f"client name {name!r}: letters, digits, . _ @ - only")

    def issue(ca_key: PrivateKey, ca: x509.Certificate, key: PrivateKey) -> x509.Certificate:
        return issue_client(ca_key, ca, key, name, days)

    return _issue_files(out, key_type, f"{name}.cert", f"{name}.key", issue)


# --------------------------------------------------------------------------- instructions


def host_port(host: str, port: int) -> str:
    """``HOST:PORT`` as docker and containerd spell it in certs.d (no port for 443)."""
    bare = host.strip("[]")
    shown = f"[{bare}]" if ":" in bare else bare
    return shown if port == 443 else f"{shown}:{port}"


def server_instructions(issued: Issued, hosts: Sequence[str], port: int) -> str:
    ca = os.path.abspath(issued.ca_cert)
    lines = [
        f"CA certificate:      {ca}"
        + ("  (new)" if issued.ca_created else "  (existing CA reused)"),
        f"CA private key:      {os.path.abspath(issued.ca_key)}  (0600; keep it safe)",
        f"server certificate:  {os.path.abspath(issued.cert)}  (SANs: {', '.join(hosts)})",
        f"server private key:  {os.path.abspath(issued.key)}  (0600)",
        "",
        "Serve with it (registry:2 config keys, or the same environment variables):",
        "  http:",
        "    tls:",
        f"      certificate: {os.path.abspath(issued.cert)}",
        f"      key: {os.path.abspath(issued.key)}",
        f"  REGISTRY_HTTP_TLS_CERTIFICATE={os.path.abspath(issued.cert)} "
        f"REGISTRY_HTTP_TLS_KEY={os.path.abspath(issued.key)} cargohold serve",
        "",
        "Give every client machine the CA certificate (not the keys):",
    ]
    for host in hosts:
        hp = host_port(host, port)
        lines += [
            "",
            f"== {hp}",
            "docker (no restart needed):",
            f"  sudo mkdir -p /etc/docker/certs.d/{hp}",
            f"  sudo cp {ca} /etc/docker/certs.d/{hp}/ca.crt",
            "podman, buildah, skopeo (they read the docker directory too):",
            f"  sudo mkdir -p /etc/containers/certs.d/{hp}",
            f"  sudo cp {ca} /etc/containers/certs.d/{hp}/ca.crt",
            "  (or per command: --cert-dir DIR / --dest-cert-dir DIR with DIR/ca.crt)",
            f"containerd: /etc/containerd/certs.d/{hp}/hosts.toml (config_path = "
            '"/etc/containerd/certs.d" in the CRI registry section; ctr: --hosts-dir '
            "/etc/containerd/certs.d):",
            f"  sudo mkdir -p /etc/containerd/certs.d/{hp}",
            f"  sudo cp {ca} /etc/containerd/certs.d/{hp}/ca.crt",
            *(("  " + line).rstrip() for line in hosts_toml(host, port).splitlines()),
        ]
    lines += [
        "",
        "Whole system (curl, Python requests via the system store, Go programs...):",
        f"  sudo cp {ca} /usr/local/share/ca-certificates/cargohold-ca.crt",
        "  sudo update-ca-certificates",
        "  (docker picks this up after: sudo systemctl restart docker)",
    ]
    return "\n".join(lines) + "\n"


def hosts_toml(
    host: str, port: int, ca_path: str | None = None, client: tuple[str, str] | None = None
) -> str:
    hp = host_port(host, port)
    url = f"https://{hp}"
    lines = [
        f'server = "{url}"',
        "",
        f'[host."{url}"]',
        '  capabilities = ["pull", "resolve", "push"]',
        f'  ca = "{ca_path or f"/etc/containerd/certs.d/{hp}/ca.crt"}"',
    ]
    if client is not None:
        lines.append(f'  client = [["{client[0]}", "{client[1]}"]]')
    return "\n".join(lines) + "\n"


def client_instructions(issued: Issued, name: str, hosts: Sequence[str], port: int) -> str:
    cert, key = os.path.abspath(issued.cert), os.path.abspath(issued.key)
    lines = [
        f"client certificate:  {cert}  (CN={name})",
        f"client private key:  {key}  (0600)",
        f"issued by:           {os.path.abspath(issued.ca_cert)}",
        "",
        "The registry asks for client certificates signed by this CA with:",
        "  http:",
        "    tls:",
        "      clientcas:",
        f"        - {os.path.abspath(issued.ca_cert)}",
    ]
    for host in hosts or ["HOST"]:
        hp = host_port(host, port)
        lines += [
            "",
            f"== {hp}",
            "docker, podman, buildah, skopeo: next to ca.crt in the certs.d directory",
            f"  sudo cp {cert} /etc/docker/certs.d/{hp}/{name}.cert",
            f"  sudo cp {key} /etc/docker/certs.d/{hp}/{name}.key",
            "  (the same in /etc/containers/certs.d/, or --cert-dir DIR for podman/skopeo)",
            "containerd hosts.toml:",
            *(
                ("  " + line).rstrip()
                for line in hosts_toml(
                    host,
                    port,
                    client=(
                        f"/etc/containerd/certs.d/{hp}/{name}.cert",
                        f"/etc/containerd/certs.d/{hp}/{name}.key",
                    ),
                ).splitlines()
            ),
            f"curl: curl --cacert ca.crt --cert {cert} --key {key} https://{hp}/v2/",
        ]
    return "\n".join(lines) + "\n"
