"""The route table (api/routes.py): every route's name, path, methods and access; what matches
what; and that dispatch, metrics and auth read the one match the first middleware made."""

from __future__ import annotations

import ast
import asyncio
import importlib
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cargohold.api import httpmetrics, routes
from cargohold.api.app import HANDLERS
from cargohold.api.routes import CANCEL, CATALOG, DELETE, LOGIN, PULL, PUSH

DIGEST = "sha256:" + "a" * 64

# name -> (a path of it, its parameters, method -> access): the whole table, written out.
TABLE = {
    "base": ("", {}, {"GET": LOGIN, "HEAD": LOGIN}),
    "catalog": ("_catalog", {}, {"GET": CATALOG}),
    "manifest": (
        "a/b/manifests/latest",
        {"name": "a/b", "reference": "latest"},
        {"GET": PULL, "HEAD": PULL, "PUT": PUSH, "DELETE": DELETE},
    ),
    "tags": ("a/tags/list", {"name": "a"}, {"GET": PULL}),
    "blob_upload": ("a/blobs/uploads/", {"name": "a"}, {"POST": PUSH}),
    "blob_upload_chunk": (
        "a/blobs/uploads/some-id",
        {"name": "a", "upload_id": "some-id"},
        {"GET": PULL, "PATCH": PUSH, "PUT": PUSH, "DELETE": CANCEL},
    ),
    "blob": (
        f"a/blobs/{DIGEST}",
        {"name": "a", "digest_s": DIGEST},
        {
            "GET": PULL,
            "HEAD": PULL,
            "DELETE": DELETE,
        },
    ),
    "referrers": (f"a/referrers/{DIGEST}", {"name": "a", "digest_s": DIGEST}, {"GET": PULL}),
}


def test_the_table_is_the_one_written_out() -> None:
    assert [r.name for r in routes.V2.routes] == list(TABLE)
    for route in routes.V2.routes:
        path, params, methods = TABLE[route.name]
        found = routes.match(path)
        assert found.route is route
        assert found.params == params
        assert dict(route.methods) == methods
        for method, access in methods.items():
            assert route.access(method) == access


def test_every_route_has_exactly_its_handlers() -> None:
    every = [route for area in routes.AREAS for route in area.routes]
    assert len({route.name for route in every}) == len(every)  # names are metrics labels too
    assert set(HANDLERS) == {route.name for route in every}
    for route in every:
        assert list(HANDLERS[route.name]) == list(route.methods), route.name


def test_access_in_registry2_terms() -> None:
    assert PULL.actions == ("pull",)
    assert PUSH.actions == ("pull", "push")
    assert DELETE.actions == ("delete",)
    assert CANCEL.actions == ("push",)  # DELETE of an upload needs push, not delete
    assert (LOGIN.kind, LOGIN.actions) == ("login", ())
    assert (CATALOG.kind, CATALOG.actions) == ("catalog", ())


@pytest.mark.parametrize(
    ("route", "method", "access"),
    [
        ("manifest", "POST", PUSH),
        ("manifest", "PATCH", PUSH),
        ("blob", "PUT", PUSH),
        ("tags", "DELETE", DELETE),
        ("blob_upload", "DELETE", DELETE),
        ("manifest", "OPTIONS", routes.Access("repository", ("pull", "push", "delete"))),
        ("base", "POST", LOGIN),
        ("catalog", "DELETE", CATALOG),
    ],
)
def test_a_method_a_route_does_not_serve_asks_what_registry2_asks(
    route: str, method: str, access: routes.Access
) -> None:
    (found,) = [r for r in routes.V2.routes if r.name == route]
    assert method not in found.methods
    assert found.access(method) == access


@pytest.mark.parametrize(
    "tail",
    ["nonsense", "a/manifests", "a/manifests/", "a/blobs", "a/tags/list/x", "_catalog/x", "/"],
)
def test_a_path_no_route_matches(tail: str) -> None:
    found = routes.match(tail)
    assert found.route is routes.UNKNOWN
    assert found.route.name == "other"
    assert found.params == {}
    assert found.route.access("GET") == LOGIN


def test_a_blob_named_uploads_is_the_upload_route() -> None:
    assert routes.match("a/blobs/uploads").route.name == "blob_upload"
    assert routes.match("a/blobs/uploads/").route.name == "blob_upload"
    # while a repository may well be called "uploads" or "blobs"
    found = routes.match(f"blobs/uploads/blobs/{DIGEST}")
    assert (found.route.name, found.params["name"]) == ("blob", "blobs/uploads")


@pytest.mark.parametrize(
    ("tail", "route", "name"),
    [
        ("a/b/c/d/e/f/manifests/v1", "manifest", "a/b/c/d/e/f"),
        ("a/manifests/b/manifests/v1", "manifest", "a/manifests/b"),
        ("x/tags/list/tags/list", "tags", "x/tags/list"),
        (f"a/blobs/b/blobs/{DIGEST}", "blob", "a/blobs/b"),
        ("one/two/three/blobs/uploads/id", "blob_upload_chunk", "one/two/three"),
        (f"r/e/f/referrers/{DIGEST}", "referrers", "r/e/f"),
    ],
)
def test_names_with_many_slashes(tail: str, route: str, name: str) -> None:
    found = routes.match(tail)
    assert found.route.name == route
    assert found.repository == name


def test_route_names_are_unique_per_area() -> None:
    route = routes.Route("x", "x", {"GET": PULL}, regex=False)
    with pytest.raises(ValueError, match="repeat"):
        routes.Area("test", "/test/", (route, route))


def test_routes_is_a_leaf_and_api_and_auth_no_longer_import_each_other() -> None:
    """routes.py imports nothing of cargohold's; auth.middleware imports no api module that
    imports it back (the old api/app.py <-> auth/middleware.py circle)."""
    code = (
        "import sys, cargohold.api.routes\n"
        "print(sorted(m for m in sys.modules if m.startswith('cargohold')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["cargohold", "cargohold.api", "cargohold.api.routes"]
    code = "import sys, cargohold.auth.middleware\nprint('cargohold.api.app' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    importlib.import_module("cargohold.api.app")  # and both still load together


async def _labels(paths: list[tuple[str, str]]) -> list[tuple[int, str]]:
    """Serve an app with the route middleware on loopback; each handler answers with the
    metrics label of its request."""

    async def label(request: web.Request) -> web.StreamResponse:
        return web.Response(text=httpmetrics.handler_name(request))

    app = web.Application(middlewares=[routes.middleware])
    app.router.add_route("*", "/v2/{v2:.*}", label)
    app.router.add_route("*", "/v2", label)
    app.router.add_route("*", "/{anything:.*}", label)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    results = []
    try:
        async with aiohttp.ClientSession() as session:
            for method, path in paths:
                async with session.request(method, f"http://127.0.0.1:{port}{path}") as resp:
                    results.append((resp.status, await resp.text()))
    finally:
        await runner.cleanup()
    return results


def test_metrics_label_is_the_route_name() -> None:
    cases = [
        ("GET", "/v2/", "base"),
        ("GET", "/v2/_catalog", "catalog"),
        ("GET", "/v2/team/app/manifests/v1", "manifest"),
        ("PUT", "/v2/team/app/manifests/v1", "manifest"),
        ("GET", "/v2/a/b/c/tags/list", "tags"),
        ("POST", "/v2/a/blobs/uploads/", "blob_upload"),
        ("PATCH", "/v2/a/blobs/uploads/0123", "blob_upload_chunk"),
        ("GET", f"/v2/a/blobs/{DIGEST}", "blob"),
        ("GET", f"/v2/a/referrers/{DIGEST}", "referrers"),
        ("GET", "/v2/nonsense", "other"),
        ("GET", "/v2", "other"),
        ("GET", "/", "other"),
        ("GET", "/auth/token", "other"),
    ]
    results = asyncio.run(_labels([(m, p) for m, p, _ in cases]))
    assert results == [(200, label) for _, _, label in cases]


def test_api_reaches_storage_only_through_the_registry() -> None:
    """No handler calls the storage driver (redirects and bodies go through the blob store);
    the one name api/ imports from storage is the error it translates."""
    api = Path(routes.__file__).parent
    for source in sorted(api.glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr != "driver", f"{source.name}:{node.lineno} uses .driver"
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "cargohold.storage"
            ):
                names = [alias.name for alias in node.names]
                assert names == ["StorageError"], f"{source.name}:{node.lineno} imports {names}"


def test_an_open_route_asks_auth_for_nothing() -> None:
    """What a UI login form will be: auth lets it through (target "open")."""
    from cargohold.auth.middleware import Target, target_of

    form = routes.Route("ui_login", "login", {"GET": routes.OPEN, "POST": routes.OPEN}, regex=False)
    area = routes.Area("ui", "/ui/", (form,))
    assert target_of("POST", routes.match("login", area)) == Target("open")
    assert routes.match("elsewhere", area).route is routes.UNKNOWN
    assert target_of("GET", routes.match("elsewhere", area)) == Target("other")
