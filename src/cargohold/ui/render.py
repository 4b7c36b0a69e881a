"""Templates, static files and the headers every UI response carries.

Everything the pages need ships in the package (``templates/``, ``static/``) and is served from
``/ui/static/`` by this process; the Content-Security-Policy forbids any other origin, inline
scripts and inline styles, so a page cannot load or send anything elsewhere even if a template
had a bug. Jinja2 autoescapes every value (repository names, labels and annotations come from
whoever pushed the image).
"""

from __future__ import annotations

import hashlib
import math
import mimetypes
import time
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import jinja2

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}


def human_size(size: int | None) -> str:
    """Bytes in binary units, three significant figures: ``0 B``, ``812 B``, ``4.21 MiB``."""
    if size is None:
        return "—"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            if unit == "B":
                return f"{int(value)} B"
            digits = 2 if value < 10 else 1 if value < 100 else 0
            return f"{value:.{digits}f} {unit}"
        value /= 1024
    return f"{size} B"


def ago(when: float | None, now: float | None = None) -> str:
    """``3 days ago``; ``just now`` under a minute; ``never`` for no time."""
    if not when:
        return "never"
    delta = (time.time() if now is None else now) - when
    if delta < 0:
        return "in the future"
    if delta < 60:
        return "just now"
    for seconds, unit in (
        (365 * 86400, "year"),
        (30 * 86400, "month"),
        (7 * 86400, "week"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
    ):
        if delta >= seconds:
            n = math.floor(delta / seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def exact_time(when: float | None) -> str:
    if not when:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso_time(when: float | None) -> str:
    if not when:
        return ""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_digest(digest: str | None) -> str:
    if not digest:
        return ""
    alg, _, hexpart = digest.partition(":")
    return f"{alg}:{hexpart[:12]}" if hexpart else digest[:19]


def thousands(n: int) -> str:
    return f"{n:,}"


@cache
def environment() -> jinja2.Environment:
    """The templates' environment, made at the first page: Jinja2 (~2 MiB once imported) stays
    out of the workers of a registry whose UI nobody opens."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cargohold.ui", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        size=human_size,
        ago=ago,
        exact=exact_time,
        iso=iso_time,
        short=short_digest,
        thousands=thousands,
    )
    return env


def render(template: str, status: int = 200, **context: Any) -> web.Response:
    html = environment().get_template(template).render(**context)
    return web.Response(
        text=html,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


class StaticFiles:
    """The files under ``static/``, read once; served with an ETag (their content hash)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        root = resources.files("cargohold.ui").joinpath("static")
        for entry in root.iterdir():
            name = entry.name
            if not entry.is_file() or name.startswith("."):
                continue
            data = entry.read_bytes()
            suffix = name[name.rfind(".") :]
            ctype = STATIC_TYPES.get(suffix) or mimetypes.guess_type(name)[0]
            etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
            self.files[name] = (data, ctype or "application/octet-stream", etag)
        self.version = hashlib.sha256(
            b"".join(etag.encode() for _, _, etag in sorted(self.files.values()))
        ).hexdigest()[:10]

    async def handle(self, request: web.Request, file: str) -> web.StreamResponse:
        entry = self.files.get(file)
        if entry is None:
            return web.Response(status=404, text="not found", headers=SECURITY_HEADERS)
        data, ctype, etag = entry
        headers = {**SECURITY_HEADERS, "ETag": etag, "Cache-Control": "public, max-age=3600"}
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type=ctype, headers=headers)
