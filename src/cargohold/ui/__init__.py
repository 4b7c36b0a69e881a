"""The web UI: server-rendered pages under ``/ui/`` on the registry's own port.

Pages are HTML from Jinja2 templates with one small script (copy buttons, search as you type)
and one stylesheet, all inside this package; there is no build step and nothing is fetched
from another host. ``ui.enabled: false`` leaves every route out. See :mod:`cargohold.ui.views`
for the pages and their access rules, :mod:`cargohold.ui.session` for logins, and
:mod:`cargohold.registry.browse` for how a page reads the store.

Routes (under ``http.prefix``; the table is ``routes.UI``, the handlers are listed in
``api/app.py``'s ``HANDLERS``, every route ``OPEN`` to the registry's auth)::

    GET  /ui/                               repositories (q, sort, order, page, n)
    GET  /ui/r/<name>                       a repository's tags (q, sort, order, page, n)
    GET  /ui/r/<name>/-/tag/<tag>           a tag: manifest, config, layers, platforms, referrers
    GET  /ui/r/<name>/-/manifest/<digest>   the same by digest
    GET  /ui/r/<name>/-/delete?tag=|digest= the confirmation; POST does it (CSRF token)
    GET  /ui/storage                        du figures and garbage-collection runs
    GET  /ui/login, POST /ui/login, POST /ui/logout
    GET  /ui/api/{repositories,tags,manifest,storage,session}   the same data as JSON
    GET  /ui/static/<file>
"""

from __future__ import annotations

from aiohttp import web

from cargohold.api.health import HTML_HOME_KEY
from cargohold.auth.middleware import AUTH_KEY
from cargohold.config import Config
from cargohold.registry.browse import Browser
from cargohold.registry.core import Registry
from cargohold.ui import views
from cargohold.ui.render import StaticFiles
from cargohold.ui.session import SessionSigner

__all__ = ["install_ui"]


def install_ui(app: web.Application, registry: Registry, config: Config, secret: str) -> None:
    """The UI's state (its routes are ``routes.UI``); call after
    :func:`cargohold.auth.middleware.install_auth`, whose authenticator (htpasswd file, policy,
    login throttle) the UI shares."""
    if not config.ui.enabled:
        return
    base = config.http.prefix + "/ui"
    state = views.UiState(
        browser=Browser(registry),
        signer=SessionSigner(secret, config.ui.sessionlifetime),
        static=StaticFiles(),
        base=base,
        auth=app.get(AUTH_KEY),
    )
    # Nothing is read at start: a page reads as far as it shows (registry.browse).
    app[views.UI_KEY] = state
    app[HTML_HOME_KEY] = base + "/"
    app.router.add_get(base, _to_root)  # the pages: routes.UI, dispatched by api/app.py


async def _to_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(request.path + "/")
