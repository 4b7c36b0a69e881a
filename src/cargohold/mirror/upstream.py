"""The client of one upstream registry: auth, retries, manners and a connection limit.

Everything a mirror asks an upstream goes through :meth:`Upstream.request`, which

- answers the upstream's ``401`` challenge: ``Basic`` with the configured credentials, or
  ``Bearer`` by the token flow Docker Hub uses (``GET realm?service=..&scope=repository:NAME:pull``
  with optional Basic credentials); tokens are cached per scope until shortly before they
  expire, and a known challenge is answered up front so a warm mirror makes one request, not two;
- retries idempotent requests (all of a mirror's: GET and HEAD) on connection errors, timeouts
  and 5xx, with exponential backoff and jitter, and honours ``429`` + ``Retry-After`` (a wait
  longer than :data:`MAX_RETRY_AFTER` is not sat out: the caller serves its cache instead);
- keeps at most ``maxconnections`` connections to the upstream open per worker process.

It raises :class:`Unreachable` (down, slow, 5xx, throttled), :class:`NotFound` (404) or
:class:`Refused` (401/403 after answering the challenge); the mirror turns those into cached
serves or the spec's errors.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import ssl
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from cargohold import metrics
from cargohold.config import MirrorConfig

log = logging.getLogger("cargohold.mirror")

ATTEMPTS = 4
BACKOFF = 0.25  # seconds before the second attempt; doubles each time
MAX_RETRY_AFTER = 30.0
TOKEN_MARGIN = 0.9  # a token is reused for this share of its lifetime
MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


class UpstreamError(Exception):
    """The upstream could not give what was asked."""


class Unreachable(UpstreamError):
    """Down, slow, answering 5xx, or throttling us beyond what we wait for."""


class NotFound(UpstreamError):
    """The upstream answered 404."""


class Refused(UpstreamError):
    """The upstream refused our credentials (401/403)."""


@dataclass
class _Challenge:
    scheme: str  # "basic" or "bearer"
    realm: str = ""
    service: str = ""


def parse_challenge(header: str) -> _Challenge | None:
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}
    return _Challenge(scheme, params.get("realm", ""), params.get("service", ""))


class Response:
    """An upstream answer whose body the caller reads (and must :meth:`release`)."""

    def __init__(self, resp: aiohttp.ClientResponse, label: str) -> None:
        self._resp = resp
        self._label = label
        self.status = resp.status
        self.headers = resp.headers

    async def read(self) -> bytes:
        """The whole body. One that times out, is cut or ends short is :class:`Unreachable`,
        like a failure before the headers: the caller serves its cache or the spec's 503."""
        try:
            data = await self._resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            url = self._resp.url.with_query(None)
            raise Unreachable(f"{self._resp.method} {url}: body: {type(exc).__name__}") from exc
        metrics.mirror_upstream_bytes(self._label, len(data))
        return data

    async def chunks(self, size: int = 1 << 20) -> Any:
        async for chunk in self._resp.content.iter_chunked(size):
            metrics.mirror_upstream_bytes(self._label, len(chunk))
            yield chunk

    def release(self) -> None:
        self._resp.release()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Upstream:
    def __init__(self, config: MirrorConfig) -> None:
        self.config = config
        self.label = config.label
        self._session: aiohttp.ClientSession | None = None
        self._challenge: _Challenge | None = None
        self._tokens: dict[str, tuple[str, float]] = {}
        self._token_fetches: dict[str, asyncio.Future[str]] = {}
        self._ping: asyncio.Future[None] | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.config.insecure:
            return False
        if self.config.cafile:
            return ssl.create_default_context(cafile=self.config.cafile)
        return True

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.config.maxconnections, ssl=self._ssl(), enable_cleanup_closed=True
            )
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.config.timeout, sock_read=self.config.timeout
            )
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=timeout, auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- auth ------------------------------------------------------------------------------

    def _basic(self) -> str | None:
        if not self.config.username:
            return None
        raw = f"{self.config.username}:{self.config.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _authorization(self, scope: str) -> str | None:
        c = self._challenge
        if c is None:
            return None
        if c.scheme == "basic":
            return self._basic()
        cached = self._tokens.get(scope)
        if cached is not None and cached[1] > time.monotonic():
            return "Bearer " + cached[0]
        pending = self._token_fetches.get(scope)
        if pending is None:  # one token request per scope, however many ask at once
            pending = asyncio.ensure_future(self._fetch_token(c, scope))
            self._token_fetches[scope] = pending
            pending.add_done_callback(lambda _f: self._token_fetches.pop(scope, None))
        return "Bearer " + await asyncio.shield(pending)

    async def _fetch_token(self, c: _Challenge, scope: str) -> str:
        params = {"scope": scope} if scope else {}
        if c.service:
            params["service"] = c.service
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        try:
            async with self.session.get(c.realm, params=params, headers=headers) as resp:
                metrics.mirror_upstream_request(self.label, "token", resp.status)
                if resp.status in (401, 403):
                    raise Refused(f"token server {c.realm} refused: {resp.status}")
                if resp.status != 200:
                    raise Unreachable(f"token server {c.realm} answered {resp.status}")
                body = await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise Unreachable(f"token server {c.realm}: {exc!r}") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise Unreachable(f"token server {c.realm} sent no token")
        expires_in = body.get("expires_in") or 60
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 60.0
        self._tokens[scope] = (token, time.monotonic() + lifetime * TOKEN_MARGIN)
        return token

    async def _learn_challenge(self) -> None:
        """``GET /v2/`` once per process, as docker does: the challenge it answers lets every
        later request carry its credentials from the start (one request per blob, not two)."""
        try:
            async with self.session.get(self.config.remoteurl + "/v2/") as resp:
                metrics.mirror_upstream_request(self.label, "GET", resp.status)
                if resp.status == 401:
                    challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                    if challenge is not None and (challenge.scheme == "bearer" or self._basic()):
                        self._challenge = challenge
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # not again: a request's own 401 teaches the challenge as well

    # -- requests --------------------------------------------------------------------------

    async def request(
        self, method: str, path: str, repository: str, headers: dict[str, str] | None = None
    ) -> Response:
        """``method`` on ``remoteurl + path``; a 2xx :class:`Response` or an exception."""
        url = self.config.remoteurl + path
        scope = f"repository:{repository}:pull" if repository else ""
        if self._ping is None:
            self._ping = asyncio.ensure_future(self._learn_challenge())
        await asyncio.shield(self._ping)
        delay = BACKOFF
        answered_challenge = False
        last = ""
        for attempt in range(ATTEMPTS):
            send = dict(headers or {})
            try:
                auth = await self._authorization(scope)
                if auth:
                    send["Authorization"] = auth
                resp = await self.session.request(method, url, headers=send, allow_redirects=True)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                metrics.mirror_upstream_request(self.label, method, 0)
                last = f"{type(exc).__name__}: {exc}"
            else:
                metrics.mirror_upstream_request(self.label, method, resp.status)
                if resp.status < 300:
                    return Response(resp, self.label)
                resp.release()
                if resp.status == 401 and not answered_challenge:
                    challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
                    if challenge is not None and (challenge.scheme == "bearer" or self._basic()):
                        self._challenge = challenge
                        self._tokens.pop(scope, None)
                        answered_challenge = True
                        continue  # not a failure: ask again with credentials, at once
                if resp.status in (401, 403):
                    raise Refused(f"{method} {url}: {resp.status}")
                if resp.status == 404:
                    raise NotFound(f"{method} {url}: 404")
                last = f"{method} {url}: {resp.status}"
                if resp.status == 429:
                    wait = _retry_after(resp.headers.get("Retry-After"), delay)
                    if wait > MAX_RETRY_AFTER or attempt == ATTEMPTS - 1:
                        raise Unreachable(f"{last} (Retry-After {wait:.0f}s)")
                    log.warning("upstream %s throttles us: waiting %.1fs", self.label, wait)
                    await asyncio.sleep(wait)
                    continue
                if resp.status not in _RETRY_STATUSES:
                    raise Unreachable(last)
            if attempt < ATTEMPTS - 1:
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay *= 2
        raise Unreachable(last)

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, str, int | None]:
        """``(digest, media type, size)`` of a manifest (a HEAD does not count against Docker
        Hub's pull limit); the digest may be "" and the size None when the upstream does not
        send them."""
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self.request(
            "HEAD", path, repository, {"Accept": MANIFEST_ACCEPT}
        ) as resp:
            return (
                resp.headers.get("Docker-Content-Digest", ""),
                resp.headers.get("Content-Type", ""),
                _length(resp.headers),
            )

    async def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        path = f"/v2/{repository}/manifests/{reference}"
        async with await self.request("GET", path, repository, {"Accept": MANIFEST_ACCEPT}) as r:
            return await r.read(), r.headers.get("Content-Type", "")

    async def head_blob(self, repository: str, digest: str) -> int | None:
        async with await self.request("HEAD", f"/v2/{repository}/blobs/{digest}", repository) as r:
            return _length(r.headers)

    async def get_blob(self, repository: str, digest: str) -> Response:
        return await self.request("GET", f"/v2/{repository}/blobs/{digest}", repository)

    async def tags(self, repository: str, query: dict[str, str]) -> Any:
        path = f"/v2/{repository}/tags/list"
        if query:
            path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        async with await self.request("GET", path, repository) as resp:
            try:
                return json.loads(await resp.read())
            except ValueError as exc:
                raise Unreachable(f"tags of {repository}: not JSON") from exc


def _length(headers: Any) -> int | None:
    raw = headers.get("Content-Length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _retry_after(value: str | None, default: float) -> float:
    if not value:
        return default
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return default
    return max(when - time.time(), 0.0)
