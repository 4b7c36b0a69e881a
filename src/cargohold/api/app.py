"""The aiohttp application: the handlers of the route table, one error translator.

The routes themselves (paths, methods, the access each needs) are in :mod:`cargohold.api.routes`;
this module binds each route name to its handlers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from cargohold import metrics
from cargohold.api import blobs, health, httpmetrics, manifests, mirror, refusals, routes
from cargohold.api.common import API_VERSION_HEADER, REGISTRY_KEY
from cargohold.api.limits import host_middleware
from cargohold.api.socketbody import close_if_spent
from cargohold.auth.middleware import install_auth
from cargohold.digest import check_name
from cargohold.errors import ErrorCode, RegistryError
from cargohold.mirror.mirrored import MirroredRegistry
from cargohold.storage.driver import StorageError
from cargohold.ui import views as ui

log = logging.getLogger("cargohold.api")

Handler = Callable[..., Awaitable[web.StreamResponse]]


async def _base(request: web.Request) -> web.StreamResponse:
    return web.json_response({})


# Route name (of every area) -> method -> handler; the methods are exactly the route's
# (tests/api/test_routes.py checks).
HANDLERS: Mapping[str, Mapping[str, Handler]] = {
    "base": {"GET": _base, "HEAD": _base},
    "catalog": {"GET": manifests.catalog},
    "manifest": {
        "GET": manifests.get_manifest,
        "HEAD": manifests.get_manifest,
        "PUT": manifests.put_manifest,
        "DELETE": manifests.delete_manifest,
    },
    "tags": {"GET": manifests.list_tags},
    "blob_upload": {"POST": blobs.start_upload},
    "blob_upload_chunk": {
        "GET": blobs.upload_status,
        "PATCH": blobs.patch_upload,
        "PUT": blobs.finish_upload,
        "DELETE": blobs.cancel_upload,
    },
    "blob": {"GET": blobs.get_blob, "HEAD": blobs.head_blob, "DELETE": blobs.delete_blob},
    "referrers": {"GET": manifests.referrers},
    # the web UI (routes.UI; its pages answer HTML, its /ui/api/ JSON)
    "ui_repositories": {"GET": ui.repositories_page},
    "ui_login": {"GET": ui.login_page, "POST": ui.login_page},
    "ui_logout": {"POST": ui.logout},
    "ui_storage": {"GET": ui.storage_page},
    "ui_api_repositories": {"GET": ui.api_repositories},
    "ui_api_tags": {"GET": ui.api_tags},
    "ui_api_manifest": {"GET": ui.api_manifest},
    "ui_api_storage": {"GET": ui.api_storage},
    "ui_api_session": {"GET": ui.api_session},
    "ui_static": {"GET": ui.static_file},
    "ui_repository": {"GET": ui.repository_route, "POST": ui.repository_route},
    "ui_other": {"GET": ui.not_found},
}


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
    """The catch-all of every area (``PREFIX/v2/``): the handler of the route matched."""
    found = request[routes.ROUTE_KEY]
    v2_tail = request.match_info.get(routes.V2.key)
    if v2_tail is not None:
        refusals.check_raw_path(request.raw_path)
    methods = HANDLERS.get(found.route.name)
    if methods is None:
        if v2_tail is not None:
            raise refusals.unmatched(v2_tail, request.method)
        raise RegistryError(
            ErrorCode.NAME_UNKNOWN, "no such endpoint", {"path": request.path[:300]}, status=404
        )
    handler = methods.get(request.method)
    if handler is None:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"{request.method} is not allowed here",
            headers={"Allow": ", ".join(methods)},
        )
    params = found.params
    name = params.get("name")
    if name is not None:
        check_name(name)
    return await handler(request, **params)


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
        metrics.storage_error(httpmetrics.handler_name(request))
        if exc.transient:  # the store is failing now; worth retrying later: 503, not 500
            failure = RegistryError(ErrorCode.UNAVAILABLE, "storage unavailable, retry later")
        else:
            failure = RegistryError(ErrorCode.UNKNOWN, "storage error")
        response = _error_response(request, failure)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        response = _error_response(request, RegistryError(ErrorCode.UNKNOWN))
    if not response.prepared:
        response.headers.update(API_VERSION_HEADER)
        close_if_spent(request, response)  # before aiohttp writes the Connection header
    return response


def create_app(
    registry: MirroredRegistry, extra_headers: dict[str, list[str]] | None = None
) -> web.Application:
    # routes.middleware first: everything after it reads its match (metrics go right after it)
    app = web.Application(
        middlewares=[routes.middleware, api_middleware, host_middleware],
        client_max_size=4 * 1024 * 1024 + 1,
    )
    app[REGISTRY_KEY] = registry
    prefix = registry.config.http.prefix
    for area in routes.AREAS:  # one catch-all each; the route middleware matches the rest
        if area is routes.UI and not registry.config.ui.enabled:
            continue
        app.router.add_route("*", f"{prefix}{area.root}{{{area.key}:.*}}", dispatch)
    app.router.add_route("*", prefix + "/v2", _redirect_v2)
    app.router.add_get("/", health.root)
    app.router.add_get("/debug/health", health.debug_health)
    install_auth(app, registry.config)  # after api_middleware: its errors become JSON
    mirror.install(app)  # after auth: refuses pushes to mirrored repositories
    from cargohold.api.uploadstate import process_secret
    from cargohold.ui import install_ui  # the web UI's state (ui.enabled), sharing auth's

    install_ui(app, registry, registry.config, registry.config.http.secret or process_secret())
    if extra_headers:

        async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
            for key, values in extra_headers.items():
                for value in values:
                    response.headers.add(key, value)

        app.on_response_prepare.append(_add_headers)
    return app


async def _redirect_v2(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently(request.path + "/")
