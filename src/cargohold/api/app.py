"""The aiohttp application: one route table, one error translator, the access log.

Repository names contain slashes, so instead of aiohttp's per-route patterns the whole
``/v2/...`` tail is matched against the table below in order (uploads before blobs, since
``blobs/uploads`` would otherwise look like a blob named "uploads").
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargohold import metrics
from cargohold.api import blobs, health, manifests
from cargohold.api.bodies import close_if_spent
from cargohold.api.common import API_VERSION_HEADER, REGISTRY_KEY
from cargohold.auth.middleware import install_auth
from cargohold.digest import check_name
from cargohold.errors import ErrorCode, RegistryError
from cargohold.registry.registry import Registry
from cargohold.storage.driver import StorageError

log = logging.getLogger("cargohold.api")

Handler = Callable[..., Awaitable[web.StreamResponse]]

_NAME = r"(?P<name>.+?)"
ROUTES: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
    # Manifests first, the most requested. No two patterns match the same path, except a
    # blob named "uploads", which the upload route must win.
    (
        re.compile(rf"^{_NAME}/manifests/(?P<reference>[^/]+)$"),
        {
            "GET": manifests.get_manifest,
            "HEAD": manifests.get_manifest,
            "PUT": manifests.put_manifest,
            "DELETE": manifests.delete_manifest,
        },
    ),
    (re.compile(rf"^{_NAME}/tags/list$"), {"GET": manifests.list_tags}),
    (re.compile(rf"^{_NAME}/blobs/uploads/?$"), {"POST": blobs.start_upload}),
    (
        re.compile(rf"^{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)$"),
        {
            "GET": blobs.upload_status,
            "PATCH": blobs.patch_upload,
            "PUT": blobs.finish_upload,
            "DELETE": blobs.cancel_upload,
        },
    ),
    (
        re.compile(rf"^{_NAME}/blobs/(?P<digest_s>[^/]+)$"),
        {"GET": blobs.get_blob, "HEAD": blobs.head_blob, "DELETE": blobs.delete_blob},
    ),
    (re.compile(rf"^{_NAME}/referrers/(?P<digest_s>[^/]+)$"), {"GET": manifests.referrers}),
]


def _error_response(request: web.Request, err: RegistryError) -> web.Response:
    headers = {**API_VERSION_HEADER, **err.headers}
    if request.method == "HEAD":
        return web.Response(status=err.status, headers=headers)
    return web.Response(
        status=err.status,
        body=json.dumps(err.body()).encode(),
        content_type="application/json",
        headers=headers,
    )


async def dispatch(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    if tail == "":
        if request.method not in ("GET", "HEAD"):
            raise RegistryError(ErrorCode.UNSUPPORTED, f"{request.method} is not allowed here")
        return web.json_response({})
    if tail == "_catalog":
        if request.method != "GET":
            raise RegistryError(ErrorCode.UNSUPPORTED, f"{request.method} is not allowed here")
        return await manifests.catalog(request)
    for pattern, methods in ROUTES:
        m = pattern.match(tail)
        if m is None:
            continue
        handler = methods.get(request.method)
        if handler is None:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"{request.method} is not allowed here",
                headers={"Allow": ", ".join(methods)},
            )
        params = m.groupdict()
        check_name(params["name"])
        return await handler(request, **params)
    raise RegistryError(
        ErrorCode.NAME_UNKNOWN, "no such endpoint", {"path": request.path[:300]}, status=404
    )


def _from_http_exception(exc: web.HTTPException) -> RegistryError:
    """aiohttp's own errors (unknown path, body too large) in the spec's JSON form."""
    if exc.status == 404:
        return RegistryError(ErrorCode.NAME_UNKNOWN, "no such endpoint", status=404)
    if exc.status == 405:
        return RegistryError(ErrorCode.UNSUPPORTED, exc.reason)
    if exc.status == 413:
        return RegistryError(ErrorCode.SIZE_INVALID, exc.reason, status=413)
    return RegistryError(ErrorCode.UNKNOWN, exc.reason, status=exc.status)


@web.middleware
async def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every response of the API leaves through here: errors in the spec's JSON form, and the
    headers every response carries. (Done here rather than in an ``on_response_prepare`` hook,
    which cost ~5 % of the manifest GET rate; the one handler that prepares its own response,
    ``blobs._stream_blob``, adds them itself.)"""
    try:
        response = await handler(request)
    except RegistryError as err:
        response = _error_response(request, err)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(API_VERSION_HEADER)
            raise
        response = _error_response(request, _from_http_exception(exc))
    except StorageError as exc:
        log.error("storage error on %s %s: %s", request.method, request.path, exc)
        metrics.storage_error(metrics.handler_name(request))
        response = _error_response(request, RegistryError(ErrorCode.UNKNOWN, "storage error"))
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = _error_response(request, RegistryError(ErrorCode.UNKNOWN))
    if not response.prepared:
        response.headers.update(API_VERSION_HEADER)
        close_if_spent(request, response)  # before aiohttp writes the Connection header
    return response


def create_app(
    registry: Registry, extra_headers: dict[str, list[str]] | None = None
) -> web.Application:
    app = web.Application(middlewares=[api_middleware], client_max_size=4 * 1024 * 1024 + 1)
    app[REGISTRY_KEY] = registry
    prefix = registry.config.http.prefix
    app.router.add_route("*", prefix + "/v2/{tail:.*}", dispatch)
    app.router.add_route("*", prefix + "/v2", _redirect_v2)
    app.router.add_get("/", health.root)
    app.router.add_get("/debug/health", health.debug_health)
    install_auth(app, registry.config)  # after api_middleware: its errors become JSON
    if extra_headers:

        async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
            for key, values in extra_headers.items():
                for value in values:
                    response.headers.add(key, value)

        app.on_response_prepare.append(_add_headers)
    return app


async def _redirect_v2(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(request.path + "/")
