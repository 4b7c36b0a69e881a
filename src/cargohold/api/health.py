"""Health endpoints for load balancers: ``GET /debug/health`` and the plain ``GET /``.

Both answer 503 when the storage cannot be reached (a replica that cannot reach the store can
serve nothing useful, so the balancer should route around it) or while the replica drains before
it exits (SIGTERM, see :func:`cargohold.server.run_worker`), and 200 otherwise. A cache that
is down does not make a replica unhealthy: it is reported in the JSON, and requests still work.
Checks are reused for a second (:class:`cargohold.registry.scaleout.HealthCheck`), so frequent
probes cost the store at most one request per second per process.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from cargohold.api.common import registry_of

# Where a browser asking for ``/`` is sent (the web UI, when it is on).
HTML_HOME_KEY: Final = web.AppKey("cargohold.html_home", str)


async def debug_health(request: web.Request) -> web.StreamResponse:
    ok, details = await registry_of(request).health.check()
    return web.json_response(
        details, status=200 if ok else 503, headers={"Cache-Control": "no-store"}
    )


async def root(request: web.Request) -> web.StreamResponse:
    """A plain page a load balancer can probe; a browser (``Accept: text/html``) is sent to
    the web UI instead. Probes send no Accept or ``*/*``, so they keep getting this text."""
    home = request.app.get(HTML_HOME_KEY)
    if home is not None and "text/html" in request.headers.get("Accept", ""):
        raise web.HTTPFound(home)
    ok, details = await registry_of(request).health.check()
    if ok:
        return web.Response(text="cargohold registry\n")
    if details.get("status") == "draining":
        return web.Response(status=503, text="cargohold registry: shutting down\n")
    status = details.get("storage", {}).get("status", "unavailable")
    return web.Response(status=503, text=f"cargohold registry: storage {status}\n")
