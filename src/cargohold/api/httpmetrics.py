"""Prometheus metrics of HTTP requests, labelled by route name.

The label is the name the route table (:mod:`cargohold.api.routes`) gave the request's match, so
this middleware belongs to the API; the metric objects themselves are in :mod:`cargohold.metrics`,
which the registry and storage layers record into without importing anything of the API.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargohold import metrics
from cargohold.api import routes

_UPLOAD_HANDLERS = frozenset({"blob_upload", "blob_upload_chunk"})


def handler_name(request: web.Request) -> str:
    """The route's name from the table (never the repository name: low cardinality);
    ``other`` for requests no route of an area matched (``/``, the token endpoint, ...)."""
    found = request.get(routes.ROUTE_KEY)
    return "other" if found is None else found.route.name


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    m = metrics.instruments()
    if m is None:
        return await handler(request)
    name = handler_name(request)
    method = request.method
    upload = name in _UPLOAD_HANDLERS and method in ("POST", "PATCH", "PUT")
    m.in_flight.labels(name).inc()
    if upload:
        m.uploads.inc()
    start = time.perf_counter()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        m.latency.labels(name, method).observe(time.perf_counter() - start)
        m.requests.labels(name, method, str(status)).inc()
        m.in_flight.labels(name).dec()
        if upload:
            m.uploads.dec()
        received = request.content.total_bytes if request.body_exists else 0
        if received:
            m.bytes_in.labels(name).inc(received)
        sent = _body_bytes(request, response)
        if sent:
            m.bytes_out.labels(name).inc(sent)


def _body_bytes(request: web.Request, response: web.StreamResponse | None) -> int:
    if response is None or request.method == "HEAD" or isinstance(response, web.FileResponse):
        return 0  # a FileResponse is sent after the middleware returns: see on_prepare
    length = response.body_length
    if length:
        return length
    return response.content_length or 0


def install(app: web.Application) -> None:
    """Count the requests of ``app``: right after the route middleware, whose match names them,
    and before the error translator, so the statuses counted are those sent."""
    if not metrics.enabled():
        return
    app.middlewares.insert(app.middlewares.index(routes.middleware) + 1, middleware)
    app.on_response_prepare.append(on_prepare)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Bytes of file bodies (sendfile), known only when aiohttp prepares them."""
    m = metrics.instruments()
    if m is None or request.method == "HEAD" or not isinstance(response, web.FileResponse):
        return
    length = response.content_length
    if length and response.status in (200, 206):
        m.bytes_out.labels(handler_name(request)).inc(length)
