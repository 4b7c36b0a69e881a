"""Every route of the registry's API (``PREFIX/v2/...``), once: name, path, methods, access.

A request is matched against this table once, by :func:`middleware` (the application's first
middleware), and the :class:`RouteMatch` is kept on the request under :data:`ROUTE_KEY`.
Dispatch (``api/app.py``) picks the handler by route name, authorization
(``auth/middleware.py``) reads the access the method needs, and metrics (``metrics.py``) use the
name as their ``handler`` label; none of them parses the path again.

This module is a leaf: it imports nothing of cargohold's, so all three can import it without
importing each other.

Repository names contain slashes, so instead of aiohttp's per-route patterns the whole tail
after ``PREFIX/v2/`` is matched here (aiohttp's one catch-all ``PREFIX/v2/{v2:.*}`` leads to
dispatch). Where to add routes:

- another ``/v2/`` route: a :class:`Route` in :data:`V2`, and its handlers in ``api/app.py``
  under the same name (a test checks the two agree). A pull-through mirror serves the same
  routes; which storage answers is the domain's choice, not the table's.
- another area, e.g. a web UI under ``/ui/`` (pages, ``/ui/api/...`` JSON endpoints, a login
  form): an :class:`Area` of its own in :data:`AREAS` (``create_app`` gives each area its
  catch-all ``PREFIX + root + {key:.*}``), its handlers in ``api/app.py`` likewise, and routes
  whose access is :data:`OPEN` where the registry's auth must not answer (the login form).
  Route names are unique across areas: they are also the metrics labels.

Outside the table are plain aiohttp routes that no auth guards: ``/`` and ``/debug/health``,
the ``/v2`` redirect, and the token endpoint (its path comes from the config). They get no
match: auth lets them through, metrics label them ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Access:
    """What a request needs from its caller, in registry:2's terms.

    ``kind`` is ``"open"`` (nothing), ``"login"`` (valid credentials, as ``/v2/`` needs),
    ``"catalog"`` (``registry:catalog:*``) or ``"repository"`` (``actions`` on the repository
    the path names).
    """

    kind: str
    actions: tuple[str, ...] = ()


OPEN: Final = Access("open")
LOGIN: Final = Access("login")
CATALOG: Final = Access("catalog")
PULL: Final = Access("repository", ("pull",))
PUSH: Final = Access("repository", ("pull", "push"))
DELETE: Final = Access("repository", ("delete",))
CANCEL: Final = Access("repository", ("push",))  # DELETE of an upload: registry:2 asks push
_EVERYTHING: Final = Access("repository", ("pull", "push", "delete"))
_BY_METHOD: Final[Mapping[str, Access]] = {
    "GET": PULL,
    "HEAD": PULL,
    "POST": PUSH,
    "PUT": PUSH,
    "PATCH": PUSH,
    "DELETE": DELETE,
}

_NAME = r"(?P<name>.+?)"


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint. ``path`` is the tail after the area's root: a literal, or (with ``regex``)
    a regular expression whose named groups become the handler's keyword arguments.

    ``methods`` maps each method the route serves to the access it needs. A method it does not
    serve is refused (405) *after* authorization, which asks what registry:2 asks for such a
    request: the route's own access for single-purpose routes (``other``), else what the
    method would need on a repository route.
    """

    name: str
    path: str
    methods: Mapping[str, Access]
    regex: bool = True
    other: Access | None = None
    pattern: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        compiled = re.compile(f"^{self.path.replace('{name}', _NAME)}$") if self.regex else None
        object.__setattr__(self, "pattern", compiled)

    def access(self, method: str) -> Access:
        access = self.methods.get(method)
        if access is not None:
            return access
        if self.other is not None:
            return self.other
        return _BY_METHOD.get(method, _EVERYTHING)


@dataclass(frozen=True, slots=True)
class Area:
    """A part of the URL space with routes of its own, served under ``PREFIX + root``; its
    aiohttp catch-all puts the tail in the match variable ``key``."""

    key: str
    root: str
    routes: tuple[Route, ...]
    literals: Mapping[str, Route] = field(init=False, repr=False, compare=False)
    patterns: tuple[Route, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [route.name for route in self.routes]
        if len(set(names)) != len(names):
            raise ValueError(f"route names repeat in area {self.key}: {names}")
        literals = {route.path: route for route in self.routes if not route.regex}
        object.__setattr__(self, "literals", literals)
        object.__setattr__(self, "patterns", tuple(r for r in self.routes if r.regex))


# Order matters among the patterns: the most requested first (manifests), and the upload
# routes before the blob route, since a blob "named" uploads (``x/blobs/uploads``) must be the
# upload route. No two patterns otherwise match the same path.
V2: Final = Area(
    "v2",
    "/v2/",
    (
        Route("base", "", {"GET": LOGIN, "HEAD": LOGIN}, regex=False, other=LOGIN),
        Route("catalog", "_catalog", {"GET": CATALOG}, regex=False, other=CATALOG),
        Route(
            "manifest",
            "{name}/manifests/(?P<reference>[^/]+)",
            {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "DELETE": DELETE},
        ),
        Route("tags", "{name}/tags/list", {"GET": PULL}),
        Route("blob_upload", "{name}/blobs/uploads/?", {"POST": PUSH}),
        Route(
            "blob_upload_chunk",
            "{name}/blobs/uploads/(?P<upload_id>[^/]+)",
            {"GET": PULL, "PATCH": PUSH, "PUT": PUSH, "DELETE": CANCEL},
        ),
        Route(
            "blob",
            "{name}/blobs/(?P<digest_s>[^/]+)",
            {"GET": PULL, "HEAD": PULL, "DELETE": DELETE},
        ),
        Route("referrers", "{name}/referrers/(?P<digest_s>[^/]+)", {"GET": PULL}),
    ),
)

# The web UI (cargohold.ui): its pages check the UI's own session cookie, never the API's
# Authorization header, so every route is OPEN to the registry's auth; ``ui_other`` answers the
# rest with the UI's own 404 page (the area's unknown paths must not ask for a Basic login).
_UI_GET: Final = {"GET": OPEN}
_UI_FORM: Final = {"GET": OPEN, "POST": OPEN}
UI: Final = Area(
    "ui",
    "/ui/",
    (
        Route("ui_repositories", "", _UI_GET, regex=False, other=OPEN),
        Route("ui_login", "login", _UI_FORM, regex=False, other=OPEN),
        Route("ui_logout", "logout", {"POST": OPEN}, regex=False, other=OPEN),
        Route("ui_storage", "storage", _UI_GET, regex=False, other=OPEN),
        Route("ui_api_repositories", "api/repositories", _UI_GET, regex=False, other=OPEN),
        Route("ui_api_tags", "api/tags", _UI_GET, regex=False, other=OPEN),
        Route("ui_api_manifest", "api/manifest", _UI_GET, regex=False, other=OPEN),
        Route("ui_api_storage", "api/storage", _UI_GET, regex=False, other=OPEN),
        Route("ui_api_session", "api/session", _UI_GET, regex=False, other=OPEN),
        Route("ui_static", "static/(?P<file>[^/]+)", _UI_GET, other=OPEN),
        Route("ui_repository", "r/(?P<path>.+)", _UI_FORM, other=OPEN),
        Route("ui_other", ".*", {"GET": OPEN}, other=OPEN),
    ),
)

AREAS: Final[tuple[Area, ...]] = (V2, UI)

# A path inside an area that no route matches: 404 from dispatch, after auth asked for a login.
UNKNOWN: Final = Route("other", "", {}, regex=False, other=LOGIN)


@dataclass(slots=True)
class RouteMatch:
    """A request's route and the parameters its path gave (``name``: the repository).

    Read-only by convention: one is made per request, and a frozen dataclass costs five times
    as much to make (~0.6 against ~0.1 us)."""

    route: Route
    params: dict[str, str]

    @property
    def repository(self) -> str | None:
        return self.params.get("name")


def match(tail: str, area: Area = V2) -> RouteMatch:
    """The route of ``tail`` (the path after ``PREFIX + area.root``); :data:`UNKNOWN` if none."""
    route = area.literals.get(tail)
    if route is not None:
        return RouteMatch(route, {})
    for route in area.patterns:
        assert route.pattern is not None
        m = route.pattern.match(tail)
        if m is not None:
            return RouteMatch(route, m.groupdict())
    return RouteMatch(UNKNOWN, {})


ROUTE_KEY: Final = web.RequestKey("cargohold.route", RouteMatch)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The first middleware: the one match of the request, kept under :data:`ROUTE_KEY`.
    Requests outside every area (``/``, ``/debug/health``, the token endpoint, the ``/v2``
    redirect) get no match: auth lets them through and metrics label them ``other``."""
    info = request.match_info
    for area in AREAS:
        tail = info.get(area.key)
        if tail is not None:
            request[ROUTE_KEY] = match(tail, area)
            break
    return await handler(request)
