"""A small registry HTTP API client (aiohttp) with Docker's auth dance and TLS options.

Only what import and export need: ping, blob HEAD/GET, chunked upload, manifest GET/PUT.

Authentication follows what real clients do, since registries send a challenge rather than
advertise anything: the first request goes out without credentials; a 401 with
``WWW-Authenticate: Basic realm=...`` makes every later request carry Basic credentials; a 401
with ``Bearer realm=...,service=...,scope=...`` makes the client fetch a token from the realm (with
Basic credentials when it has some, anonymously otherwise) for the challenged scope plus the
repository scope it is about to need, and retry with ``Authorization: Bearer``. A ``GET /v2/``
ping up front settles this before any streamed body is sent, because a streamed body cannot be
sent twice.

Transport: ``https`` with certificate verification by default (``ca_cert`` adds a CA bundle);
``plain_http`` uses ``http``; ``insecure`` skips verification and, like Docker's
insecure-registries, falls back to ``http`` when the registry does not speak TLS. Loopback hosts
get the same fallback, again as Docker does.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp

from cargohold.mediatypes import MANIFEST_ACCEPT

USER_AGENT = "cargohold-images/1"
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class RemoteError(Exception):
    """The registry refused or failed a request; the message says which and why."""


BodyFactory = Callable[[], AsyncIterator[bytes]]

_PARAM_RE = re.compile(r'([a-zA-Z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="...",scope="..."`` → (``bearer``, params)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace(
            '\\"', '"'
        )
        for m in _PARAM_RE.finditer(rest)
    }
    return scheme.lower(), params


def is_loopback(host: str) -> bool:
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """One registry host; use as ``async with RegistryClient(...) as client``."""

    def __init__(
        self,
        host: str,
        *,
        plain_http: bool = False,
        insecure: bool = False,
        ca_cert: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        scheme = None
        if host.startswith(("http://", "https://")):
            scheme, host = host.split("://", 1)
        self.host = host.rstrip("/")
        if plain_http:
            scheme = "http"
        self._explicit_scheme = scheme
        self.scheme = scheme or "https"
        self.insecure = insecure
        self.fallback = scheme is None and (insecure or is_loopback(self.host))
        self.username = username
        self.password = password
        self._ssl: ssl.SSLContext | bool = True
        if insecure:
            self._ssl = False
        elif ca_cert:
            try:
                self._ssl = ssl.create_default_context(cafile=ca_cert)
            except (OSError, ssl.SSLError) as e:
                raise RemoteError(f"cannot read --ca-cert {ca_cert}: {e}") from None
        self._session: aiohttp.ClientSession | None = None
        self._auth: str | None = None  # the Authorization header currently in use
        self._scopes: set[str] = set()

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    async def __aenter__(self) -> RegistryClient:
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            timeout=UPLOAD_TIMEOUT,
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=8),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use RegistryClient as an async context manager"
        return self._session

    # -- transport and auth ------------------------------------------------------------------

    async def ping(self, repo_scope: str | None = None) -> None:
        """``GET /v2/``: pick the scheme, learn the auth scheme, get credentials ready."""
        if repo_scope:
            self._scopes.add(repo_scope)
        try:
            resp = await self._send("GET", "/v2/")
        except aiohttp.ClientError as e:
            if not (self.scheme == "https" and self.fallback and not _is_cert_error(e)):
                raise self._connect_error(e) from None
            self.scheme = "http"  # Docker's insecure-registry rule: no TLS there, try plain
            try:
                resp = await self._send("GET", "/v2/")
            except aiohttp.ClientError as e2:
                raise self._connect_error(e2) from None
        async with resp:
            if resp.status == 401:
                await self._authenticate(resp)
                async with await self._send("GET", "/v2/") as again:
                    if again.status == 401 and self.username:
                        raise RemoteError(
                            f"{self.host} refused the credentials of {self.username!r}"
                        )
                    await self._check(again, (200,), "GET /v2/")
            else:
                await self._check(resp, (200,), "GET /v2/ (is this a registry?)")

    def _connect_error(self, e: Exception, what: str = "") -> RemoteError:
        if _is_cert_error(e):
            return RemoteError(
                f"{self.host}: the TLS certificate could not be verified ({e}); pass the CA with "
                "--ca-cert FILE, or --insecure to skip verification"
            )
        if isinstance(e, aiohttp.ClientSSLError):
            return RemoteError(
                f"{self.host}: TLS handshake failed ({e}); use --plain-http for a registry "
                "without TLS"
            )
        if what and not isinstance(e, aiohttp.ClientConnectorError):
            return RemoteError(f"{what} failed: {type(e).__name__}: {e}")
        return RemoteError(f"cannot connect to {self.base}: {e}")

    def _url(self, path_or_url: str) -> str:
        if path_or_url.startswith(("http://", "https://")):
            return path_or_url
        return urljoin(self.base + "/", path_or_url.lstrip("/"))

    async def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | BodyFactory | None = None,
        allow_redirects: bool = True,
    ) -> aiohttp.ClientResponse:
        all_headers = dict(headers or {})
        if self._auth:
            all_headers["Authorization"] = self._auth
        data: Any = body() if callable(body) else body
        return await self.session.request(
            method,
            self._url(path_or_url),
            headers=all_headers,
            data=data,
            allow_redirects=allow_redirects,
        )

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | BodyFactory | None = None,
    ) -> aiohttp.ClientResponse:
        """Send, answering one auth challenge if the registry makes one; caller checks status."""
        if scope:
            self._scopes.add(scope)
        try:
            resp = await self._send(method, path_or_url, headers=headers, body=body)
            if resp.status == 401:
                await self._authenticate(resp)
                resp.release()
                resp = await self._send(method, path_or_url, headers=headers, body=body)
        except aiohttp.ClientError as e:
            raise self._connect_error(e, f"{method} {self._url(path_or_url)}") from None
        return resp

    async def _authenticate(self, resp: aiohttp.ClientResponse) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header)
        had_auth = self._auth is not None
        if scheme == "basic":
            if not self.username:
                raise RemoteError(
                    f"{self.host} requires a login: pass --username and --password "
                    "(or --password-stdin)"
                )
            if had_auth:
                raise RemoteError(f"{self.host} refused the credentials of {self.username!r}")
            self._auth = "Basic " + _basic(self.username, self.password or "")
            return
        if scheme == "bearer":
            realm = params.get("realm")
            if not realm:
                raise RemoteError(f"{self.host}: Bearer challenge without a realm: {header!r}")
            # Always a fresh token: a 401 while holding one means it expired (Docker's token
            # server hands out 60 s tokens) or lacks a scope. If the new token does not help,
            # the retried request's own 401 is the error.
            scopes = set(self._scopes)
            if params.get("scope"):
                scopes.update(params["scope"].split(" "))
            token = await self._fetch_token(realm, params.get("service"), sorted(scopes))
            self._auth = f"Bearer {token}"
            return
        raise RemoteError(
            f"{self.host} answered 401 with an unsupported challenge {header!r}"
            if header
            else f"{self.host} answered 401 without a WWW-Authenticate challenge"
        )

    async def _fetch_token(self, realm: str, service: str | None, scopes: list[str]) -> str:
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        query += [("scope", s) for s in scopes]
        if self.username:
            query.append(("account", self.username))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        headers = {}
        if self.username:
            headers["Authorization"] = "Basic " + _basic(self.username, self.password or "")
        try:
            async with self.session.get(url, headers=headers) as resp:
                text = await resp.text()
                if resp.status in (401, 403):
                    who = repr(self.username) if self.username else "anonymous access"
                    raise RemoteError(f"the token service {realm} refused {who} ({resp.status})")
                if resp.status != 200:
                    raise RemoteError(
                        f"the token service {realm} answered {resp.status}: {text[:300]}"
                    )
        except aiohttp.ClientError as e:
            raise RemoteError(f"cannot reach the token service {realm}: {e}") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise RemoteError(
                f"the token service {realm} answered something else than JSON"
            ) from None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"the token service {realm} answered without a token")
        return token

    async def _check(
        self, resp: aiohttp.ClientResponse, expected: tuple[int, ...], what: str
    ) -> None:
        if resp.status in expected:
            return
        text = await resp.text(errors="replace")
        detail = text[:500]
        try:
            errors = json.loads(text).get("errors") or []
            detail = "; ".join(
                f"{e.get('code')}: {e.get('message')}"
                + (f" ({json.dumps(e['detail'])[:200]})" if e.get("detail") else "")
                for e in errors
            )
        except (ValueError, AttributeError, TypeError):
            pass
        if resp.status == 401:
            hint = "" if self.username else "; pass --username and --password"
            raise RemoteError(f"{what}: authentication failed ({detail}){hint}")
        if resp.status == 403:
            raise RemoteError(f"{what}: access denied ({detail})")
        raise RemoteError(f"{what}: {self.host} answered {resp.status} {detail}".rstrip())

    # -- blobs -------------------------------------------------------------------------------

    async def blob_size(self, repo: str, digest: str) -> int | None:
        """``HEAD`` the blob: its size if this repository has it, else None."""
        async with await self.request(
            "HEAD", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull")
        ) as resp:
            if resp.status == 404:
                return None
            await self._check(resp, (200,), f"HEAD blob {digest}")
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None

    async def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        body: BodyFactory,
        verify: Callable[[], str],
    ) -> None:
        """POST an upload, PATCH the bytes, then PUT ``?digest=`` only if ``verify()`` agrees.

        ``verify`` returns the digest of what was actually sent; when it differs (the file changed
        under us) the upload is cancelled, so the registry never even sees a completion request.
        """
        what = f"upload of {digest} to {repo}"
        scope = _scope(repo, "pull,push")
        async with await self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, headers={"Content-Length": "0"}
        ) as resp:
            await self._check(resp, (202,), what)
            location = self._location(resp)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        async with await self.request(
            "PATCH", location, scope=scope, headers=headers, body=body
        ) as resp:
            await self._check(resp, (202, 204), what)
            location = self._location(resp)
        sent = verify()
        if sent != digest:
            async with await self.request("DELETE", location, scope=scope):
                pass
            raise RemoteError(f"{what}: the bytes sent hash to {sent}; upload cancelled")
        sep = "&" if "?" in location else "?"
        async with await self.request(
            "PUT",
            f"{location}{sep}{urlencode({'digest': digest})}",
            scope=scope,
            headers={"Content-Length": "0"},
        ) as resp:
            await self._check(resp, (201, 204), what)

    def _location(self, resp: aiohttp.ClientResponse) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RemoteError(f"{self.host} started an upload without a Location header")
        return urljoin(str(resp.url), location)

    async def open_blob(self, repo: str, digest: str) -> aiohttp.ClientResponse:
        """``GET`` a blob (following redirects); the caller reads and releases the response."""
        resp = await self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=_scope(repo, "pull"))
        try:
            await self._check(resp, (200,), f"GET blob {digest} of {repo}")
        except BaseException:
            resp.release()
            raise
        return resp

    # -- manifests ---------------------------------------------------------------------------

    async def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """Manifest bytes exactly as stored, and their media type."""
        async with await self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=_scope(repo, "pull"),
            headers={"Accept": MANIFEST_ACCEPT},
        ) as resp:
            if resp.status == 404:
                raise RemoteError(f"{repo}:{reference} is not on {self.host}")
            await self._check(resp, (200,), f"GET manifest {repo}:{reference}")
            data = await resp.read()
            media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
            return data, media_type

    async def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        async with await self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=_scope(repo, "pull,push"),
            headers={"Content-Type": media_type},
            body=data,
        ) as resp:
            await self._check(resp, (201, 200, 202), f"PUT manifest {repo}:{reference}")
            return resp.headers.get("Docker-Content-Digest", "")


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def _is_cert_error(e: BaseException) -> bool:
    return isinstance(e, aiohttp.ClientConnectorCertificateError)
