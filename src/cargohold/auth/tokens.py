"""Bearer tokens (Docker registry token spec): verify them, and issue them (built-in server).

A token is a JWT signed by the token server with claims ``iss``, ``sub``, ``aud`` (the
registry's ``service``), ``exp``, ``nbf``, ``iat``, ``jti`` and ``access``: a list of
``{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}``.

The signing key is found as registry:2 finds it, from ``auth.token.rootcertbundle`` (and, as in
distribution 3, ``auth.token.jwks``): an ``x5c`` header whose chain ends at one of the bundle's
certificates, a ``jwk`` header equal to a trusted key, a ``kid`` naming one (libtrust key ID of
a bundle certificate, a JWKS ``kid`` or an RFC 7638 thumbprint), or with none of those, any
trusted key whose signature matches. ``alg`` must be an asymmetric algorithm from
``auth.token.signingalgorithms``; ``none`` and HMAC are never accepted.

The built-in token server signs with a key of its own (``auth.token.builtin.key``, created on
first start) and sends both ``kid`` and ``x5c``, so registry:2 itself accepts its tokens when
its ``rootcertbundle`` is the key's certificate.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from cargohold.atomicfile import create_exclusive, write_atomic
from cargohold.auth import certs
from cargohold.auth.scopes import Grants, InvalidToken, Scope
from cargohold.config import ConfigError, TokenConfig

log = logging.getLogger("cargohold.auth")

LEEWAY = 60  # seconds of clock skew tolerated on exp/nbf, as registry:2
CACHE_MAX = 4096
PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


@dataclass(frozen=True)
class Claims:
    subject: str  # "" for an anonymous token
    grants: Grants
    expires: float
    builtin: bool  # signed with the built-in token server's own key


# --------------------------------------------------------------------------- key identity


def public_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def libtrust_key_id(key: PublicKey) -> str:
    """docker/libtrust's key ID (what registry:2 expects in ``kid``): the SHA-256 of the DER
    public key, first 240 bits, base32, in twelve colon-separated groups of four."""
    encoded = base64.b32encode(hashlib.sha256(public_der(key)).digest()[:30]).decode()
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def jwk_thumbprint(key: PublicKey) -> str | None:
    """RFC 7638 thumbprint (SHA-256, base64url) of an RSA or EC key."""
    data = _key_to_jwk(key)
    if data is None:
        return None
    members = {k: data[k] for k in sorted(data) if k in ("crv", "e", "kty", "n", "x", "y")}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _key_to_jwk(key: PublicKey) -> dict[str, Any] | None:
    if isinstance(key, rsa.RSAPublicKey):
        result: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        return result
    if isinstance(key, ec.EllipticCurvePublicKey):
        result = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
        return result
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        result = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key))
        return result
    return None


def _fits(alg: str, key: PublicKey) -> bool:
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _CURVES[alg]
    if alg == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def _as_public_key(key: Any, source: str) -> PublicKey:
    if isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return key
    raise ValueError(f"{source}: unsupported key type {type(key).__name__}")


# --------------------------------------------------------------------------- verifying


class TokenVerifier:
    """Checks bearer tokens against ``auth.token``: signature, iss, aud, exp/nbf, access."""

    def __init__(self, config: TokenConfig, own: SigningKey | None = None) -> None:
        self.service = config.service
        self.issuer = config.issuer
        self.algorithms = list(config.signingalgorithms)
        self._roots: list[x509.Certificate] = []
        self._keys: dict[str, PublicKey] = {}
        self._all: list[PublicKey] = []
        self._own_der = public_der(own.public_key) if own is not None else b""
        if config.rootcertbundle:
            try:
                bundle = certs.load_certs(config.rootcertbundle)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load: {exc}", key="auth.token.rootcertbundle") from exc
            if not bundle:
                raise ConfigError("no certificates in it", key="auth.token.rootcertbundle")
            for cert in bundle:
                self._add_root(cert)
        if config.jwks:
            self._load_jwks(config.jwks)
        if own is not None:
            self._add_root(own.certificate)
        self._cache: dict[bytes, Claims] = {}

    def _add_key(self, key: PublicKey, *kids: str | None) -> None:
        if all(public_der(key) != public_der(k) for k in self._all):
            self._all.append(key)
        for kid in (libtrust_key_id(key), jwk_thumbprint(key), *kids):
            if kid:
                self._keys.setdefault(kid, key)

    def _add_root(self, cert: x509.Certificate) -> None:
        self._roots.append(cert)
        self._add_key(_as_public_key(cert.public_key(), "rootcertbundle"))

    def _load_jwks(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as fh:
                document = json.load(fh)
            keys = document["keys"] if isinstance(document, dict) else None
            if not isinstance(keys, list):
                raise ValueError('expected {"keys": [...]}')
            for item in keys:
                jwk = jwt.PyJWK.from_dict(item)
                self._add_key(_as_public_key(jwk.key, path), item.get("kid"))
        except (OSError, ValueError, KeyError, jwt.PyJWTError) as exc:
            raise ConfigError(f"cannot load: {exc}", key="auth.token.jwks") from exc

    def verify(self, token: str) -> Claims:
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires + LEEWAY > time.time():
                return cached
            del self._cache[digest]
        claims = self._verify(token)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = claims
        return claims

    def _verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken(f"signing algorithm {alg!r} not accepted")
        candidates = [k for k in self._candidate_keys(header) if _fits(alg, k)]
        if not candidates:
            raise InvalidToken(f"no trusted {alg} key for this token")
        for key in candidates:
            try:
                payload = jwt.decode(
                    token,
                    key=key,
                    algorithms=[alg],
                    audience=self.service,
                    issuer=self.issuer,
                    leeway=LEEWAY,
                    options={"require": ["exp", "iss", "aud"]},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.PyJWTError as exc:
                raise InvalidToken(str(exc)) from None
            subject = payload.get("sub") or ""
            if not isinstance(subject, str):
                raise InvalidToken("sub is not a string")
            return Claims(
                subject=subject,
                grants=Grants.from_claim(payload.get("access")),
                expires=float(payload["exp"]),
                builtin=bool(self._own_der) and public_der(key) == self._own_der,
            )
        raise InvalidToken("signature does not verify with any trusted key")

    def _candidate_keys(self, header: dict[str, Any]) -> list[PublicKey]:
        if "x5c" in header:
            return [self._verify_chain(header["x5c"])]
        if "jwk" in header:
            try:
                key = _as_public_key(jwt.PyJWK.from_dict(header["jwk"]).key, "jwk header")
            except (jwt.PyJWTError, ValueError, TypeError) as exc:
                raise InvalidToken(f"bad jwk header: {exc}") from None
            der = public_der(key)
            if not any(der == public_der(k) for k in self._all):
                raise InvalidToken("jwk header is not a trusted key")
            return [key]
        kid = header.get("kid")
        if kid is not None:
            named = self._keys.get(str(kid))
            if named is None:
                raise InvalidToken(f"unknown key id {str(kid)[:80]!r}")
            return [named]
        return list(self._all)

    def _verify_chain(self, x5c: Any) -> PublicKey:
        """The leaf's key, once the x5c chain is checked up to a trusted certificate."""
        if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
            raise InvalidToken("x5c header is not a list of certificates")
        try:
            chain = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in x5c[:10]]
        except ValueError as exc:
            raise InvalidToken(f"x5c: {exc}") from None
        now = datetime.datetime.now(datetime.UTC)
        for cert in chain:
            if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
                raise InvalidToken("x5c: a certificate is expired or not yet valid")
        for child, parent in itertools.pairwise(chain):
            if not _issued_by(child, parent, require_ca=True):
                raise InvalidToken("x5c: broken certificate chain")
        last = chain[-1]
        trusted = any(last == root for root in self._roots) or any(
            root.not_valid_before_utc <= now <= root.not_valid_after_utc
            and _issued_by(last, root, require_ca=True)
            for root in self._roots
        )
        if not trusted:
            raise InvalidToken("x5c: chain does not end at a rootcertbundle certificate")
        return _as_public_key(chain[0].public_key(), "x5c")


def _issued_by(child: x509.Certificate, parent: x509.Certificate, *, require_ca: bool) -> bool:
    if require_ca:
        try:
            constraints = parent.extensions.get_extension_for_class(x509.BasicConstraints).value
            if not constraints.ca:
                return False
        except x509.ExtensionNotFound:
            pass  # v1 certificates (old CAs) have no extensions
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


# --------------------------------------------------------------------------- issuing


@dataclass(frozen=True)
class SigningKey:
    private: certs.PrivateKey
    certificate: x509.Certificate
    algorithm: str
    kid: str

    @property
    def public_key(self) -> PublicKey:
        return _as_public_key(self.private.public_key(), "signing key")

    @property
    def x5c(self) -> list[str]:
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return [base64.b64encode(der).decode()]


def _algorithm_for(key: certs.PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    curve = key.curve.name
    for alg, name in _CURVES.items():
        if name == curve:
            return alg
    raise ValueError(f"unsupported EC curve {curve}")


def load_or_create_signing_key(key_path: str, cert_path: str) -> SigningKey:
    """The built-in token server's key and certificate, created (0600 / 0644) when missing.

    Safe when several workers start at once: files are created complete or not at all, and
    everyone then uses what is on disk.
    """
    if not os.path.exists(key_path):
        os.makedirs(os.path.dirname(os.path.abspath(key_path)), mode=0o700, exist_ok=True)
        if create_exclusive(key_path, certs.key_pem(certs.new_key("ec")), mode=0o600):
            log.info("created token signing key %s", key_path)
    key = certs.load_key(key_path)
    cert = None
    if os.path.exists(cert_path):
        cert = certs.load_cert(cert_path)
        if public_der(_as_public_key(cert.public_key(), cert_path)) != public_der(
            _as_public_key(key.public_key(), key_path)
        ):
            log.warning("%s does not match %s; writing a new certificate", cert_path, key_path)
            new = certs.self_signed(key, "cargohold token signer")
            write_atomic(cert_path, certs.cert_pem(new), mode=0o644)
            cert = certs.load_cert(cert_path)
    else:
        new = certs.self_signed(key, "cargohold token signer")
        if create_exclusive(cert_path, certs.cert_pem(new), mode=0o644):
            log.info("created token signing certificate %s (rootcertbundle for others)", cert_path)
        cert = certs.load_cert(cert_path)
    algorithm = _algorithm_for(key)
    public = _as_public_key(key.public_key(), key_path)
    return SigningKey(key, cert, algorithm, libtrust_key_id(public))


class TokenIssuer:
    """Signs tokens for the built-in token server."""

    def __init__(self, config: TokenConfig, key: SigningKey, expiration: float) -> None:
        self.service = config.service
        self.issuer = config.issuer
        self.key = key
        self.expiration = max(1, int(expiration))

    def issue(self, subject: str, scopes: Sequence[Scope]) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + self.expiration,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(18),
            "access": [
                {"type": s.type, "name": s.name, "actions": list(s.actions)}
                for s in scopes
                if s.actions
            ],
        }
        headers = {"kid": self.key.kid, "x5c": self.key.x5c}
        token = jwt.encode(claims, self.key.private, algorithm=self.key.algorithm, headers=headers)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expiration,
            "issued_at": issued.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
