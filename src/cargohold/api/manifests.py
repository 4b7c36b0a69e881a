"""Manifest, tag-list, catalog and referrers endpoints."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from cargohold import mediatypes as mt
from cargohold import memory
from cargohold.api import auditing, catalogcursor, notify, uploadstate
from cargohold.api.common import CATALOG_FILTER_KEY, empty, location, parse_n, registry_of
from cargohold.digest import Digest, is_digest_reference
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.catalog import order_key
from cargohold.registry.core import FILTERED_SCAN
from cargohold.registry.manifests import MAX_MANIFEST_SIZE, Manifest, referrer_artifact_type

CATALOG_DEFAULT_N = 100
CATALOG_MAX_N = 1000


def _accepted(request: web.Request) -> frozenset[str] | None:
    """The manifest media types the client named, or None when it named none (serve anything)."""
    headers = request.headers.getall("Accept", ())
    if not headers:
        return None
    return _parse_accept(headers[0] if len(headers) == 1 else ",".join(headers))


@functools.lru_cache(maxsize=256)
def _parse_accept(header: str) -> frozenset[str] | None:
    """Clients send the same few Accept headers over and over: parse each once."""
    accepted: set[str] = set()
    for part in header.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in ("*/*", "application/*"):
            return None
        if media in mt.SUPPORTED or media in mt.SCHEMA1:
            accepted.add(media)
    return frozenset(accepted) or None


@functools.lru_cache(maxsize=memory.scaled(4096))
def _manifest_headers(digest: Digest, media_type: str, size: int) -> tuple[tuple[str, str], ...]:
    """The response headers of a manifest (immutable by digest), built once."""
    return (
        ("Content-Type", media_type),
        ("Docker-Content-Digest", str(digest)),
        ("ETag", f'"{digest}"'),
        ("Content-Length", str(size)),
    )


memory.register_lru("manifest_headers", _manifest_headers)


async def _present(request: web.Request, name: str, digest: Digest) -> bool:
    reg = registry_of(request)
    if reg.mirrors.route(name) is not None:  # a mirror fetches the child on demand
        try:
            await reg.mirrors.manifest(name, str(digest))
        except RegistryError:
            return False
    return await reg.manifests.exists(name, digest)


async def _negotiate(request: web.Request, name: str, m: Manifest) -> Manifest:
    accepted = _accepted(request)
    if accepted is None or m.media_type in accepted:
        return m
    if m.media_type in mt.INDEXES and accepted & mt.IMAGE_MANIFESTS:
        # Like registry:2, a client that cannot read indexes gets the linux/amd64 image.
        reg = registry_of(request)
        for child in m.children:
            p = child.platform or {}
            if (
                p.get("os") == "linux"
                and p.get("architecture") == "amd64"
                and child.media_type in accepted
                and await _present(request, name, child.digest)
            ):
                return await reg.manifests.load(child.digest)
    raise RegistryError(
        ErrorCode.MANIFEST_UNKNOWN,
        f"manifest is {m.media_type}, which the Accept header does not allow",
        {"mediaType": m.media_type, "accept": sorted(accepted)},
    )


async def _mirrored(request: web.Request, name: str, reference: str) -> Manifest | web.Response:
    """A mirrored manifest; for a HEAD of one that is not stored, the upstream's HEAD answered
    as it is (see :mod:`cargohold.mirror.service` for why nothing is fetched)."""
    reg = registry_of(request)
    if request.method != "HEAD":
        return await reg.mirrors.manifest(name, reference)
    found = await reg.mirrors.describe(name, reference)
    if isinstance(found, Manifest):
        return found
    accepted = _accepted(request)
    if accepted is None or found.media_type in accepted:
        headers = _manifest_headers(found.digest, found.media_type, found.size)
        return web.Response(status=200, headers=dict(headers))
    return await reg.mirrors.manifest(name, reference)  # to be negotiated: fetched


async def get_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    reg = registry_of(request)
    if reg.mirrors.route(name) is not None:
        found = await _mirrored(request, name, reference)
        if isinstance(found, web.Response):
            return found
    else:
        found = await reg.manifests.get(name, reference)
    m = await _negotiate(request, name, found)
    headers = dict(_manifest_headers(m.digest, m.media_type, len(m.data)))
    etag = headers["ETag"]
    if request.method == "GET":  # registry:2: a HEAD is not a pull
        tag = "" if is_digest_reference(reference) else reference
        notify.manifest_event(request, "pull", name, m, tag)
    if etag in request.headers.getall("If-None-Match", []):
        return web.Response(
            status=304, headers={k: v for k, v in headers.items() if k != "Content-Length"}
        )
    if request.method == "HEAD":
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=m.data, headers=headers)


async def _read_manifest_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_MANIFEST_SIZE:
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"manifest is larger than {MAX_MANIFEST_SIZE} bytes",
            status=413,
        )
    data = bytearray()
    while chunk := await request.content.readany():
        data += chunk
        if len(data) > MAX_MANIFEST_SIZE:
            raise RegistryError(
                ErrorCode.MANIFEST_INVALID,
                f"manifest is larger than {MAX_MANIFEST_SIZE} bytes",
                status=413,
            )
    return bytes(data)


async def put_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    reg = registry_of(request)
    async with auditing.refusals(request, "push", name, reference):
        reg.require_writable()
        data = await _read_manifest_body(request)
        by_digest = is_digest_reference(reference)
        # OCI 1.1: a push by digest may name tags as ?tag= parameters
        tags = request.query.getall("tag", []) if by_digest else []
        content_type = request.headers.get("Content-Type")
        pushed = await reg.manifests.push(name, reference, data, content_type, tags=tags)
    m = pushed.manifest
    previous = str(pushed.previous) if pushed.previous else None
    action = "tag-move" if previous else "push"
    auditing.record(request, action, name, reference, digest=str(m.digest), previous=previous)
    headers = {
        "Location": location(request, f"/v2/{name}/manifests/{m.digest}"),
        "Docker-Content-Digest": str(m.digest),
    }
    if m.subject is not None:
        headers["OCI-Subject"] = str(m.subject.digest)
    if tags:
        headers["OCI-Tag"] = ", ".join(dict.fromkeys(tags))
    for tag in dict.fromkeys(tags) if tags else ["" if by_digest else reference]:
        notify.manifest_event(request, "push", name, m, tag)
    return empty(201, headers)


async def delete_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    reg = registry_of(request)
    async with auditing.refusals(request, "delete", name, reference):
        reg.require_writable()
        reg.require_delete()
        if is_digest_reference(reference):
            digest = Digest.try_parse(reference)
            if digest is None:
                raise RegistryError(ErrorCode.DIGEST_INVALID, detail={"digest": reference[:200]})
            await reg.manifests.delete(name, digest)
            notify.delete_event(request, name, digest=str(digest))
            auditing.record(request, "delete", name, reference, digest=str(digest))
        else:
            current = await reg.manifests.untag(name, reference)
            notify.delete_event(request, name, tag=reference)
            auditing.record(request, "delete", name, reference, digest=str(current or ""))
    return empty(202, {})


def _page_size(request: web.Request, default_n: int | None, max_n: int | None) -> int | None:
    """``n`` from the query, else ``default_n``; at most ``max_n``; None: no limit."""
    n = parse_n(request)
    if n is None:
        n = default_n
    if n is not None and max_n is not None and n > max_n:
        n = max_n
    return n


def _after_last(request: web.Request, items: list[str], key: Any = None) -> list[str]:
    last = request.query.get("last")
    if not last:
        return items
    if key is None:
        return [i for i in items if i > last]
    last_key = key(last)
    return [i for i in items if key(i) > last_key]


def _listing(
    request: web.Request, field: str, items: list[str], n: int | None, **extra: str
) -> web.Response:
    """The first ``n`` of ``items`` (those after ``last``) as ``{field: [...]}``, with a
    ``Link`` to the next page when there are more."""
    response = web.json_response({**extra, field: items if n is None else items[:n]})
    if n is not None and 0 < n < len(items):
        response.headers["Link"] = next_link(request.path, n, items[n - 1])
    return response


def next_link(path: str, n: int, last: str) -> str:
    """registry:2's ``Link`` to the next page, byte for byte: Go's ``url.Values.Encode`` puts
    ``last`` before ``n`` and query-escapes it (``a/b`` is ``a%2Fb``), as ``urlencode`` does."""
    return f'<{path}?{urlencode([("last", last), ("n", n)])}>; rel="next"'


async def list_tags(request: web.Request, name: str) -> web.StreamResponse:
    reg = registry_of(request)
    if reg.mirrors.route(name) is not None:
        query = {k: request.query[k] for k in ("n", "last") if k in request.query}
        upstream = await reg.mirrors.tags(name, query)
        if upstream is not None:  # the upstream pages it (None: unreachable, list the cache)
            return web.json_response(upstream)
    tags = _after_last(request, await reg.manifests.tags(name))
    return _listing(request, "tags", tags, _page_size(request, None, None), name=name)


async def catalog(request: web.Request) -> web.StreamResponse:
    reg = registry_of(request)
    n = _page_size(request, CATALOG_DEFAULT_N, CATALOG_MAX_N)
    assert n is not None
    allowed = request.get(CATALOG_FILTER_KEY)
    last = request.query.get("last") or None
    if allowed is not None:
        filtered = await _filtered_catalog(request, last, n, allowed)
        if filtered is not None:
            return filtered
    # One more than the page, read only as far as that, tells whether a next page exists.
    page = await reg.repositories_page(last, n + 1, allowed)
    if page is not None:
        return _listing(request, "repositories", page, n)
    visible = await reg.repositories()
    if allowed is not None:  # auth with an access policy: only what the caller may pull
        visible = allowed(visible)
    return _listing(request, "repositories", _after_last(request, visible, order_key), n)


async def _filtered_catalog(
    request: web.Request, last: str | None, n: int, allowed: Callable[[list[str]], list[str]]
) -> web.Response | None:
    """A page of what the caller may see that reads at most about FILTERED_SCAN names: a short
    page whose ``Link`` resumes where the reading stopped (:mod:`cargohold.api.catalogcursor`).
    None without a paging reader (in-memory)."""
    secret = uploadstate.secret_of(request)
    token = request.query.get(catalogcursor.PARAM)
    resume = catalogcursor.unseal(secret, token) if token else None
    start = last
    if resume is not None and (last is None or order_key(resume) > order_key(last)):
        start = resume
    page = await registry_of(request).filtered_page(
        start, n + 1, allowed, FILTERED_SCAN, stop_empty=resume is not None
    )
    if page is None:
        return None
    if page.stopped_at is None or len(page.names) > n:
        return _listing(request, "repositories", page.names, n)
    response = web.json_response({"repositories": page.names})
    query: list[tuple[str, str | int]] = []
    shown = page.names[-1] if page.names else last
    if shown:
        query.append(("last", shown))
    query += [("n", n), (catalogcursor.PARAM, catalogcursor.seal(secret, page.stopped_at))]
    response.headers["Link"] = f'<{request.path}?{urlencode(query)}>; rel="next"'
    return response


async def referrers(request: web.Request, name: str, digest_s: str) -> web.StreamResponse:
    reg = registry_of(request)
    subject = Digest.parse(digest_s)
    wanted = request.query.get("artifactType")
    descriptors = []
    for m in await reg.manifests.referrers(name, subject):
        artifact_type = referrer_artifact_type(m)
        if wanted and artifact_type != wanted:
            continue
        d: dict[str, Any] = {
            "mediaType": m.media_type,
            "digest": str(m.digest),
            "size": len(m.data),
        }
        if artifact_type:
            d["artifactType"] = artifact_type
        if m.annotations:
            d["annotations"] = m.annotations
        descriptors.append(d)
    body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
    headers = {"Content-Type": mt.OCI_INDEX}
    if wanted:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(status=200, body=json.dumps(body).encode(), headers=headers)
