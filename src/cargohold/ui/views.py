"""The web UI's pages and its JSON endpoints (``/ui/api/...``), from the same data functions.

Each page reads the store once through :class:`cargohold.registry.browse.Browser`; the JSON
endpoints answer the same dictionaries the templates are rendered from, so what a script reads
and what a person sees cannot drift. Access follows the API's rules exactly: without ``auth``
everything is open (as ``/v2/`` is); with it, a visitor sees only the repositories the
``access`` policy lets them pull (anonymous visitors what anonymous rules grant), and may delete
only where the policy grants ``delete`` and ``storage.delete.enabled`` is on. A repository the
visitor may not pull answers exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from cargohold.api import notify
from cargohold.api.common import registry_of
from cargohold.auth.accesslog import USER_KEY
from cargohold.auth.middleware import Authenticator, Target
from cargohold.auth.policy import ALL_ACTIONS
from cargohold.digest import Digest, check_name, check_tag
from cargohold.errors import ErrorCode, RegistryError
from cargohold.mirror import upkeep as mirror_upkeep
from cargohold.registry import gcruns
from cargohold.registry.browse import Browser, RepoSummary, TagRow, platform_name, summarize
from cargohold.registry.manifests import Manifest, referrer_artifact_type
from cargohold.registry.usage import UsageReport, disk_usage, human
from cargohold.ui.render import SECURITY_HEADERS, StaticFiles, render
from cargohold.ui.session import COOKIE, Session, SessionSigner, fingerprint

if TYPE_CHECKING:
    from cargohold.mirror.service import Mirrors

log = logging.getLogger("cargohold.ui")

REPOS_PER_PAGE = 50
TAGS_PER_PAGE = 100
MAX_PER_PAGE = 500
DU_TTL = 60.0  # the storage page's du figures are reused this long (a full store walk)
MAX_CONFIG_SIZE = 1024 * 1024
SESSION_KEY: Final = "cargohold.ui.session"

ARTIFACT_KINDS = (  # (media type prefix, what people call it)
    ("application/vnd.dev.cosign.artifact.sig", "Signatures (cosign)"),
    ("application/vnd.dev.cosign.simplesigning", "Signatures (cosign)"),
    ("application/vnd.cncf.notary.signature", "Signatures (Notary)"),
    ("application/vnd.dev.sigstore.bundle", "Signatures (Sigstore bundle)"),
    ("application/spdx", "SBOMs (SPDX)"),
    ("text/spdx", "SBOMs (SPDX)"),
    ("application/vnd.cyclonedx", "SBOMs (CycloneDX)"),
    ("application/vnd.in-toto", "Attestations (in-toto)"),
    ("application/vnd.dev.cosign.attestation", "Attestations (cosign)"),
)
INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def artifact_kind(media_type: str | None) -> str:
    if not media_type:
        return "Other artifacts"
    for prefix, label in ARTIFACT_KINDS:
        if media_type.startswith(prefix):
            return label
    return media_type


@dataclass
class UiState:
    """One per worker: the browser (caches), session signer, static files, du cache."""

    browser: Browser
    signer: SessionSigner
    static: StaticFiles
    base: str  # the UI's path, e.g. "/ui" (under http.prefix)
    auth: Authenticator | None
    du: tuple[float, UsageReport] | None = None
    du_lock: asyncio.Lock | None = None
    mirror_usage: list[mirror_upkeep.MirrorUsage] | None = None  # sizes, refreshed with du


UI_KEY: Final = web.AppKey("cargohold.ui", UiState)


@dataclass(frozen=True)
class Visitor:
    """Who is looking, and what the configuration lets them see and do."""

    session: Session
    state: UiState
    delete_enabled: bool

    @property
    def user(self) -> str | None:
        return self.session.user

    @property
    def auth_enabled(self) -> bool:
        return self.state.auth is not None

    @property
    def can_login(self) -> bool:
        return self.state.auth is not None and self.state.auth.passwords is not None

    def actions(self, repository: str) -> frozenset[str]:
        if self.state.auth is None:
            return ALL_ACTIONS
        return self.state.auth.policy.allowed(self.user, repository)

    def may_pull(self, repository: str) -> bool:
        return "pull" in self.actions(repository)

    def may_delete(self, repository: str) -> bool:
        return self.delete_enabled and "delete" in self.actions(repository)

    def visible(self, names: list[str]) -> list[str]:
        if self.state.auth is None:
            return names
        return self.state.auth.policy.may_list(self.user, names)

    @property
    def may_see_storage(self) -> bool:
        """Totals cover every repository: without a policy everyone who may do everything
        (anyone without auth, any logged-in user with it); with one, admins."""
        auth = self.state.auth
        if auth is None:
            return True
        if not auth.policy.configured:
            return self.user is not None
        return auth.policy.is_admin(self.user)


# --------------------------------------------------------------------------- sessions


def _state(request: web.Request) -> UiState:
    return request.app[UI_KEY]


def _secure(request: web.Request) -> bool:
    host = registry_of(request).config.http.host
    return request.secure or host.startswith("https://")


def _current_session(request: web.Request, state: UiState) -> Session | None:
    session = state.signer.decode(request.cookies.get(COOKIE))
    if session is None or session.user is None:
        return session
    auth = state.auth
    passwords = auth.passwords if auth is not None else None
    if passwords is None:
        return None  # a login made under another configuration
    passwords.htpasswd.refresh()
    if fingerprint(passwords.htpasswd.lookup(session.user)) != session.pw or not session.pw:
        return None  # user removed or password changed since the login
    return session


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    state = _state(request)
    response.set_cookie(
        COOKIE,
        value,
        path=state.base + "/",
        max_age=int(state.signer.lifetime),
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )


Page = Callable[..., Awaitable[web.StreamResponse]]  # (request, visitor, **path parameters)
Handler = Callable[..., Awaitable[web.StreamResponse]]  # (request, **path parameters)


def page(handler: Page) -> Handler:
    """Session in, cookie and security headers out; errors as an HTML page."""

    async def wrapped(request: web.Request, **params: str) -> web.StreamResponse:
        state = _state(request)
        session = _current_session(request, state)
        fresh = session is None
        if session is None:
            session = state.signer.new(None)
        request[SESSION_KEY] = session
        if session.user is not None:
            request[USER_KEY] = session.user[:100]
        visitor = Visitor(session, state, _delete_enabled(request))
        try:
            response = await handler(request, visitor, **params)
        except web.HTTPException as exc:
            if exc.status >= 400:
                response = _error_page(request, visitor, exc.status, exc.reason)
            else:
                exc.headers.update(SECURITY_HEADERS)
                if fresh and COOKIE not in exc.cookies:  # a login sets its own
                    set_session_cookie(request, exc, state.signer.encode(session))
                raise
        except RegistryError as err:
            message = err.body()["errors"][0].get("message", "error")
            response = _error_page(request, visitor, err.status, message)
        except Exception:
            log.exception("ui: unexpected error on %s %s", request.method, request.path)
            response = _error_page(request, visitor, 500, "The registry failed to show this page.")
        if fresh and COOKIE not in response.cookies:
            set_session_cookie(request, response, state.signer.encode(session))
        return response

    return wrapped


def _delete_enabled(request: web.Request) -> bool:
    storage = registry_of(request).config.storage
    return storage.delete_enabled and not storage.readonly


def _error_page(request: web.Request, visitor: Visitor, status: int, message: str) -> web.Response:
    return render(
        "error.html",
        status=status,
        **_common(request, visitor),
        status_code=status,
        message=message,
    )


def _common(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    state = visitor.state
    return {
        "base": state.base,
        "static": f"{state.base}/static",
        "version": state.static.version,
        "user": visitor.user,
        "auth_enabled": visitor.auth_enabled,
        "can_login": visitor.can_login,
        "csrf": state.signer.csrf_token(visitor.session),
        "may_see_storage": visitor.may_see_storage,
        "path": request.path_qs,
        "nav": request.path.rsplit("/", 1)[-1]
        if request.path.endswith(("/storage", "/login"))
        else "repos",
        "host": public_host(request),
    }


def check_post(request: web.Request, visitor: Visitor, form: Any) -> None:
    """CSRF: same origin (when the browser says) and the session's token."""
    origin = request.headers.get("Origin")
    if origin and urlsplit(origin).netloc != request.host:  # "null" too: an opaque origin
        raise web.HTTPForbidden(reason="cross-site request refused")
    token = form.get("csrf")
    if not isinstance(token, str) or not visitor.state.signer.check_csrf(visitor.session, token):
        raise web.HTTPForbidden(reason="the form has expired: reload the page and try again")


# --------------------------------------------------------------------------- pull commands


def public_host(request: web.Request) -> dict[str, Any]:
    """Where clients reach the registry: ``http.host`` when set, else the request's host."""
    configured = registry_of(request).config.http.host
    if configured:
        parts = urlsplit(configured)
        host, scheme = parts.netloc or configured, parts.scheme or "https"
    else:
        host, scheme = request.host, request.scheme
    hostname = urlsplit(f"//{host}").hostname or ""
    loopback = hostname in ("localhost", "::1") or hostname.startswith("127.")
    return {"name": host, "plain": scheme == "http", "loopback": loopback}


def pull_commands(host: dict[str, Any], name: str, reference: str) -> list[dict[str, str]]:
    sep = "@" if ":" in reference else ":"
    ref = f"{host['name']}/{name}{sep}{reference}"
    insecure = host["plain"] and not host["loopback"]
    local = name.rsplit("/", 1)[-1]
    return [
        {"client": "docker", "command": f"docker pull {ref}"},
        {
            "client": "podman",
            "command": f"podman pull {'--tls-verify=false ' if insecure else ''}{ref}",
        },
        {
            "client": "skopeo",
            "command": f"skopeo copy --all {'--src-tls-verify=false ' if insecure else ''}"
            f"docker://{ref} oci:{local}:{reference if sep == ':' else 'latest'}",
        },
        {
            "client": "ctr",
            "command": f"ctr images pull {'--plain-http ' if host['plain'] else ''}{ref}",
        },
    ]


def push_commands(host: dict[str, Any]) -> list[dict[str, str]]:
    ref = f"{host['name']}/myapp:1.0"
    insecure = host["plain"] and not host["loopback"]
    flag = "--tls-verify=false " if insecure else ""
    return [
        {"client": "docker", "command": f"docker tag myapp:1.0 {ref} && docker push {ref}"},
        {"client": "podman", "command": f"podman push {flag}myapp:1.0 {ref}"},
        {
            "client": "skopeo",
            "command": f"skopeo copy {'--dest-tls-verify=false ' if insecure else ''}"
            f"oci:./myapp:1.0 docker://{ref}",
        },
    ]


# --------------------------------------------------------------------------- paging helpers


def _int_param(request: web.Request, key: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.query.get(key, default))
    except ValueError:
        value = default
    return max(low, min(high, value))


def _choice(request: web.Request, key: str, allowed: tuple[str, ...], default: str) -> str:
    value = request.query.get(key, default)
    return value if value in allowed else default


def paging(total: int | None, page: int, per_page: int, shown: int = 0) -> dict[str, Any]:
    """Page numbers; ``total`` None: more follow this page (of ``shown`` rows), how many is
    not known (a page by name reads the names only as far as it shows)."""
    if total is None:
        start = (page - 1) * per_page
        return {
            "page": page,
            "pages": None,
            "per_page": per_page,
            "total": None,
            "first": start + 1,
            "last": start + shown,
            "near": list(range(max(1, page - 2), page + 2)),
            "start": start,
        }
    pages = max(1, -(-total // per_page))
    page = min(page, pages)
    start = (page - 1) * per_page
    near = sorted({1, pages, *range(max(1, page - 2), min(pages, page + 2) + 1)})
    return {
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "total": total,
        "first": start + 1 if total else 0,
        "last": min(total, start + per_page),
        "near": near,
        "start": start,
    }


# --------------------------------------------------------------------------- data


async def repositories_data(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    browser = visitor.state.browser
    q = request.query.get("q", "").strip()[:200]
    sort = _choice(request, "sort", ("name", "pushed", "size", "tags"), "name")
    default_order = "asc" if sort == "name" else "desc"
    order = _choice(request, "order", ("asc", "desc"), default_order)
    per_page = _int_param(request, "n", REPOS_PER_PAGE, 1, MAX_PER_PAGE)
    page_no = _int_param(request, "page", 1, 1, 10**9)
    visible = visitor.visible if visitor.state.auth is not None else None
    if sort == "name" and order == "asc" and not q:
        # Only as many names as this page shows: one listing of the repository index.
        first, total = await browser.snapshot.first_names(page_no * per_page, visible)
        pg = paging(total, page_no, per_page, len(first) - (page_no - 1) * per_page)
        return await _repository_rows(browser, first, pg, per_page, total, q, sort, order)
    everything = visitor.visible(await browser.snapshot.repository_names())
    names = [n for n in everything if q.lower() in n.lower()] if q else everything
    if sort == "name":
        ordered = names[::-1] if order == "desc" else names
    else:
        summaries = await browser.snapshot.all_summaries(names)

        def key(name: str) -> tuple[float, str]:
            s = summaries.get(name)
            value = 0.0 if s is None else float(getattr(s, sort))
            return (value if order == "asc" else -value, name)

        ordered = sorted(names, key=key)
    pg = paging(len(ordered), page_no, per_page)
    return await _repository_rows(browser, ordered, pg, per_page, len(everything), q, sort, order)


async def _repository_rows(
    browser: Browser,
    ordered: list[str],
    pg: dict[str, Any],
    per_page: int,
    registry_total: int | None,
    q: str,
    sort: str,
    order: str,
) -> dict[str, Any]:
    """The page's rows, their summaries read fresh (``registry_total`` None: not known)."""
    shown = ordered[pg["start"] : pg["start"] + per_page]
    fresh = await browser.summaries(shown)
    rows = [fresh.get(n) or RepoSummary(n, 0, 0, 0.0) for n in shown]
    return {
        "repositories": [r.to_json() for r in rows],
        "q": q,
        "sort": sort,
        "order": order,
        "paging": {k: v for k, v in pg.items() if k != "start"},
        "registry_total": registry_total,
    }


def _tag_json(row: TagRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "digest": row.digest,
        "pushed": row.pushed,
        "pulled": row.pulled,
        "size": row.size,
        "mediaType": row.media_type,
        "platforms": list(row.platforms),
        "index": row.media_type in INDEX_TYPES,
    }


async def _visible_repository(visitor: Visitor, name: str) -> None:
    check_name(name)
    if not visitor.may_pull(name) or not await visitor.state.browser.repository_exists(name):
        raise RegistryError(
            ErrorCode.NAME_UNKNOWN,
            f"no repository named {name}, or you may not see it",
            status=404,
        )


async def tags_data(request: web.Request, visitor: Visitor, name: str) -> dict[str, Any]:
    await _visible_repository(visitor, name)
    q = request.query.get("q", "").strip()[:200]
    sort = _choice(request, "sort", ("name", "pushed", "size"), "pushed")
    order = _choice(request, "order", ("asc", "desc"), "asc" if sort == "name" else "desc")
    per_page = _int_param(request, "n", TAGS_PER_PAGE, 1, MAX_PER_PAGE)
    page_no = _int_param(request, "page", 1, 1, 10**9)
    rows = await visitor.state.browser.tag_rows(name)
    whole = summarize(name, rows)  # the repository's figures, whatever the filter
    if q:
        rows = [r for r in rows if q.lower() in r.name.lower()]
    if sort == "name":
        rows = rows[::-1] if order == "desc" else rows
    else:
        sign = 1 if order == "asc" else -1
        rows = sorted(rows, key=lambda r: (sign * float(getattr(r, sort)), r.name))
    pg = paging(len(rows), page_no, per_page)
    shown = rows[pg["start"] : pg["start"] + per_page]
    return {
        "repository": name,
        "tags": [_tag_json(r) for r in shown],
        "tag_total": whole.tags,
        "size": whole.size,
        "pushed": whole.pushed,
        "q": q,
        "sort": sort,
        "order": order,
        "paging": {k: v for k, v in pg.items() if k != "start"},
        "may_delete": visitor.may_delete(name),
        "pulls_recorded": _pulls_recorded(request),
    }


def _pulls_recorded(request: web.Request) -> bool:
    """Pull times are written only by retention's recorder: without it, say nothing rather
    than "never"."""
    retention = registry_of(request).config.retention
    return retention is not None and bool(retention.policies)


async def _config_of(browser: Browser, m: Manifest) -> dict[str, Any] | None:
    if not m.blobs or m.media_type in INDEX_TYPES:
        return None
    config = m.blobs[0]
    if config.size > MAX_CONFIG_SIZE or "json" not in config.media_type:
        return None
    try:
        doc = json.loads(await browser.registry.blobs.get(config.digest))
    except Exception:  # a missing or unparsable config is shown as absent, not as an error
        return None
    if not isinstance(doc, dict):
        return None
    inner = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    assert isinstance(inner, dict)

    def strings(value: Any) -> list[str]:
        return [str(v) for v in value] if isinstance(value, list) else []

    labels = inner.get("Labels") if isinstance(inner.get("Labels"), dict) else {}
    assert isinstance(labels, dict)
    ports = inner.get("ExposedPorts") if isinstance(inner.get("ExposedPorts"), dict) else {}
    assert isinstance(ports, dict)
    history = []
    for h in doc.get("history") or []:
        if isinstance(h, dict):
            history.append(
                {
                    "created": str(h.get("created") or ""),
                    "createdBy": str(h.get("created_by") or ""),
                    "comment": str(h.get("comment") or ""),
                    "emptyLayer": bool(h.get("empty_layer")),
                }
            )
    return {
        "created": str(doc.get("created") or ""),
        "platform": platform_name(
            {
                "os": doc.get("os"),
                "architecture": doc.get("architecture"),
                "variant": doc.get("variant"),
            }
        )
        if doc.get("os") or doc.get("architecture")
        else "",
        "entrypoint": strings(inner.get("Entrypoint")),
        "cmd": strings(inner.get("Cmd")),
        "env": strings(inner.get("Env")),
        "workingDir": str(inner.get("WorkingDir") or ""),
        "user": str(inner.get("User") or ""),
        "labels": {str(k): str(v) for k, v in sorted(labels.items())},
        "exposedPorts": sorted(str(p) for p in ports),
        "history": history,
    }


async def manifest_data(
    request: web.Request, visitor: Visitor, name: str, reference: str
) -> dict[str, Any]:
    await _visible_repository(visitor, name)
    reg = registry_of(request)
    browser = visitor.state.browser
    tag: str | None = None
    if ":" in reference:
        digest = Digest.try_parse(reference)
        if digest is None or not await reg.manifests.exists(name, digest):
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, f"{name} has no manifest {reference}", status=404
            )
    else:
        check_tag(reference)
        tag = reference
        digest = await reg.manifests.resolve(name, reference)
    m = await browser.load(digest)
    summary = await browser.manifest_summary(digest)
    rows = await browser.tag_rows(name)
    this = next((r for r in rows if r.name == tag), None)
    children = []
    for child in m.children:
        child_summary = await browser.manifest_summary(child.digest)
        present = await reg.manifests.exists(name, child.digest)
        children.append(
            {
                "digest": str(child.digest),
                "mediaType": child.media_type,
                "platform": platform_name(child.platform),
                "size": child_summary.size if child_summary else child.size,
                "present": present,
            }
        )
    layers = [
        {
            "digest": str(d.digest),
            "mediaType": d.media_type,
            "size": d.size,
        }
        for d in m.blobs[1:]
    ]
    referrers: dict[str, list[dict[str, Any]]] = {}
    for r in await reg.manifests.referrers(name, digest):
        kind = referrer_artifact_type(r)
        r_summary = await browser.manifest_summary(r.digest)
        referrers.setdefault(artifact_kind(kind), []).append(
            {
                "digest": str(r.digest),
                "artifactType": kind or "",
                "mediaType": r.media_type,
                "size": r_summary.size if r_summary else len(r.data),
                "created": r.annotations.get("org.opencontainers.image.created", ""),
            }
        )
    return {
        "repository": name,
        "reference": reference,
        "tag": tag,
        "digest": str(digest),
        "mediaType": m.media_type,
        "artifactType": m.artifact_type or "",
        "size": summary.size if summary else len(m.data),
        "manifestSize": len(m.data),
        "pushed": this.pushed if this else None,
        "pulled": this.pulled if this else None,
        "tags": [r.name for r in rows if r.digest == str(digest)],
        "index": bool(m.children) or m.media_type in INDEX_TYPES,
        "platforms": children,
        "config": await _config_of(browser, m),
        "configDescriptor": {
            "digest": str(m.blobs[0].digest),
            "mediaType": m.blobs[0].media_type,
            "size": m.blobs[0].size,
        }
        if m.blobs
        else None,
        "layers": layers,
        "subject": str(m.subject.digest) if m.subject else None,
        "annotations": dict(sorted(m.annotations.items())),
        "referrers": [{"kind": k, "manifests": v} for k, v in sorted(referrers.items())],
        "pull": pull_commands(public_host(request), name, tag or str(digest)),
        "may_delete": visitor.may_delete(name),
        "pulls_recorded": _pulls_recorded(request),
        "raw": _pretty(m.data),
    }


def _pretty(data: bytes) -> str:
    if len(data) > 256 * 1024:
        return ""
    try:
        return json.dumps(json.loads(data), indent=2)
    except ValueError:
        return data.decode("utf-8", "replace")


async def storage_data(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    if not visitor.may_see_storage:
        raise web.HTTPForbidden(reason="the storage page is for administrators")
    state = visitor.state
    reg = registry_of(request)
    if state.du_lock is None:
        state.du_lock = asyncio.Lock()
    async with state.du_lock:
        if state.du is None or time.monotonic() - state.du[0] > DU_TTL:
            mirror_usage = await mirror_upkeep.usage(reg.mirrors) if reg.mirrors.enabled else []
            state.du = (time.monotonic(), await disk_usage(reg.driver))
            state.mirror_usage = mirror_usage
        computed, report = state.du
        sizes = list(state.mirror_usage or [])
    runs = await gcruns.recent(reg.driver)
    top = sorted(report.repositories, key=lambda r: (-r.size, r.name))[:100]
    return {
        "usage": report.to_json() | {"repositories": [r.to_json() for r in top]},
        "repositoryCount": len(report.repositories),
        "computedAgo": time.monotonic() - computed,
        "gcRuns": [r.to_json() for r in runs],
        "deleteEnabled": reg.config.storage.delete_enabled,
        "mirrors": await _mirrors_data(reg.mirrors, sizes),
    }


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


async def _mirrors_data(
    mirrors: Mirrors, sizes: list[mirror_upkeep.MirrorUsage]
) -> list[dict[str, Any]]:
    """Each mirror's cached size (from the du walk, so up to a minute old) and its hits and
    misses, read fresh: this worker's counts are flushed first; other workers' are up to their
    flush interval behind, as in ``cargohold du``."""
    if not mirrors.enabled:
        return []
    try:
        await mirrors.stats.flush(mirrors.driver)
    except Exception:  # e.g. a read-only store: show what is written
        log.warning("cannot write this worker's mirror counts", exc_info=True)
    by_label = {u.label: u for u in sizes}
    out = []
    for mirror in mirrors.mirrors:
        config = mirror.config
        hits, misses = await mirror_upkeep.hit_counts(mirrors.driver, mirror.label)
        cached = by_label.get(mirror.label)
        u = mirror_upkeep.MirrorUsage(
            mirror.label,
            cached.repositories if cached else 0,
            cached.images if cached else 0,
            cached.size if cached else 0,
            config.maxsize,
            hits,
            misses,
        )
        out.append(
            u.to_json()
            | {
                "prefix": config.prefix,
                "upstream": _without_userinfo(config.remoteurl),
                "sizeHuman": human(u.size),
            }
        )
    return out


# --------------------------------------------------------------------------- pages


def _partial(request: web.Request) -> bool:
    return request.headers.get("X-Requested-With") == "cargohold-ui"


@page
async def repositories_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    data = await repositories_data(request, visitor)
    template = "repos_results.html" if _partial(request) else "repos.html"
    return render(
        template,
        **_common(request, visitor),
        **data,
        push=push_commands(public_host(request)),
        link=_link_builder(request),
    )


def _link_builder(request: web.Request) -> Callable[..., str]:
    """``link(page=2)``: this page's URL with some query parameters replaced."""

    def link(**changes: Any) -> str:
        query = {k: v for k, v in request.query.items() if k not in changes}
        query.update({k: str(v) for k, v in changes.items() if v is not None})
        query = {k: v for k, v in query.items() if v != ""}
        return request.path + ("?" + urlencode(query) if query else "")

    return link


def _split_path(path: str) -> tuple[str, list[str]]:
    name, sep, rest = path.partition("/-/")
    name = name.strip("/")
    return name, rest.split("/") if sep else []


@page
async def repository_route(request: web.Request, visitor: Visitor, path: str) -> web.StreamResponse:
    name, rest = _split_path(path)
    if not rest:
        data = await tags_data(request, visitor, name)
        template = "tags_results.html" if _partial(request) else "repo.html"
        return render(
            template,
            **_common(request, visitor),
            **data,
            link=_link_builder(request),
            notice=request.query.get("deleted", ""),
            pull=pull_commands(public_host(request), name, _default_tag(data)),
        )
    if len(rest) == 2 and rest[0] in ("tag", "manifest"):
        data = await manifest_data(request, visitor, name, rest[1])
        return render("manifest.html", **_common(request, visitor), **data)
    if rest == ["delete"]:
        return await _delete(request, visitor, name)
    raise web.HTTPNotFound(reason="no such page")


def _default_tag(data: dict[str, Any]) -> str:
    names = [t["name"] for t in data["tags"]]
    return "latest" if "latest" in names or not names else names[0]


async def _delete(request: web.Request, visitor: Visitor, name: str) -> web.StreamResponse:
    await _visible_repository(visitor, name)
    if not visitor.delete_enabled:
        raise web.HTTPForbidden(reason="deletes are disabled on this registry")
    if not visitor.may_delete(name):
        raise web.HTTPForbidden(reason=f"you may not delete in {name}")
    source = request.query if request.method == "GET" else await request.post()
    tag = source.get("tag")
    digest_s = source.get("digest")
    reg = registry_of(request)
    if isinstance(tag, str) and tag:
        check_tag(tag)
        target = await reg.manifests.resolve(name, tag)
        what, kind, ref = f"tag {tag}", "tag", tag
    elif isinstance(digest_s, str) and digest_s:
        parsed = Digest.try_parse(digest_s)
        if parsed is None or not await reg.manifests.exists(name, parsed):
            raise RegistryError(ErrorCode.MANIFEST_UNKNOWN, f"no manifest {digest_s}", status=404)
        target = parsed
        what, kind, ref = f"manifest {parsed}", "digest", str(parsed)
    else:
        raise web.HTTPBadRequest(reason="say which tag or digest to delete")
    if request.method == "GET":
        rows = await visitor.state.browser.tag_rows(name)
        also = [r.name for r in rows if r.digest == str(target) and r.name != ref]
        return render(
            "confirm.html",
            **_common(request, visitor),
            repository=name,
            what=what,
            kind=kind,
            ref=ref,
            digest=str(target),
            also_tags=also if kind == "digest" else [],
        )
    check_post(request, visitor, source)
    reg.require_writable()
    reg.require_delete()
    if kind == "tag":
        await reg.manifests.untag(name, ref)
        notify.delete_event(request, name, tag=ref)
    else:
        await reg.manifests.delete(name, target)
        notify.delete_event(request, name, digest=ref)
    log.info("ui: %s deleted %s from %s", visitor.user or "-", what, name)
    raise web.HTTPSeeOther(
        f"{visitor.state.base}/r/{name}?" + urlencode({"deleted": f"{kind}:{ref}"})
    )


async def static_file(request: web.Request, file: str) -> web.StreamResponse:
    return await _state(request).static.handle(request, file)


@page
async def not_found(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    raise web.HTTPNotFound(reason="There is no such page.")


@page
async def storage_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    data = await storage_data(request, visitor)
    return render("storage.html", **_common(request, visitor), **data)


@page
async def login_page(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    state = visitor.state
    after = _safe_next(request.query.get("next", ""), state.base)
    if request.method == "GET":
        return render(
            "login.html", **_common(request, visitor), error="", login_user="", after=after
        )
    form = await request.post()
    check_post(request, visitor, form)
    after = _safe_next(str(form.get("next", "")), state.base)
    user, password = str(form.get("username", "")), str(form.get("password", ""))
    auth = state.auth
    if auth is None or auth.passwords is None:
        raise web.HTTPNotFound(reason="this registry has no logins to check")
    error = ""
    if not user or not password:
        error = "Enter your user name and password."
    else:
        try:
            # throttled and audited like an API login (the target only shapes the challenge)
            await auth.login(request, user, password, Target("base"))
        except RegistryError as err:
            if err.code is ErrorCode.TOOMANYREQUESTS:
                error = "Too many failed attempts. " + str(err.body()["errors"][0]["message"])
            else:
                error = "Wrong user name or password."
    if error:
        return render(
            "login.html",
            status=401 if user else 400,
            **_common(request, visitor),
            error=error,
            login_user=user,
            after=after,
        )
    request[USER_KEY] = user[:100]
    session = state.signer.new(user, fingerprint(auth.passwords.htpasswd.lookup(user)))
    response = web.HTTPSeeOther(after, headers=SECURITY_HEADERS)
    set_session_cookie(request, response, state.signer.encode(session))
    raise response


def _safe_next(value: str, base: str) -> str:
    """Only a path inside the UI: never another host (an open redirect)."""
    if value.startswith(base + "/") and not value.startswith("//") and "\\" not in value:
        return value
    return base + "/"


@page
async def logout(request: web.Request, visitor: Visitor) -> web.StreamResponse:
    form = await request.post()
    check_post(request, visitor, form)
    state = visitor.state
    response = web.HTTPSeeOther(state.base + "/", headers=SECURITY_HEADERS)
    # a fresh anonymous session: the old cookie, and its CSRF token, are replaced
    set_session_cookie(request, response, state.signer.encode(state.signer.new(None)))
    raise response


# --------------------------------------------------------------------------- JSON


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, headers={**SECURITY_HEADERS, "Cache-Control": "no-store"}
    )


def api(fn: Callable[[web.Request, Visitor], Awaitable[dict[str, Any]]]) -> Handler:
    """A JSON endpoint: same session and access rules as the pages; errors in the spec's
    JSON form (raised through the API's error middleware)."""

    async def wrapped(request: web.Request, **params: str) -> web.StreamResponse:
        state = _state(request)
        session = _current_session(request, state) or state.signer.new(None)
        visitor = Visitor(session, state, _delete_enabled(request))
        try:
            return _json(await fn(request, visitor))
        except web.HTTPForbidden as exc:
            raise RegistryError(ErrorCode.DENIED, exc.reason) from None

    return wrapped


@api
async def api_repositories(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    return await repositories_data(request, visitor)


@api
async def api_tags(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    return await tags_data(request, visitor, request.query.get("repository", ""))


@api
async def api_manifest(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    data = await manifest_data(
        request, visitor, request.query.get("repository", ""), request.query.get("reference", "")
    )
    data.pop("raw", None)
    return data


@api
async def api_storage(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    return await storage_data(request, visitor)


@api
async def api_session(request: web.Request, visitor: Visitor) -> dict[str, Any]:
    return {
        "user": visitor.user,
        "authEnabled": visitor.auth_enabled,
        "canLogin": visitor.can_login,
        "deleteEnabled": visitor.delete_enabled,
    }
