"""The spec's error for a ``/v2/`` path that names something malformed.

A path no route matches is not always an unknown endpoint: ``x/manifests/a/b`` is a manifest
request with a malformed tag, ``x/blobs/sha256:zz/extra`` a blob request with a malformed
digest. :func:`unmatched` says which (``NAME_INVALID``, ``TAG_INVALID``, ``DIGEST_INVALID``)
instead of a bare ``NAME_UNKNOWN``; only a path of no known shape is an unknown endpoint.

:func:`check_raw_path` refuses an encoded slash (``%2F``) anywhere in the path: aiohttp decodes
it before routing, so ``a%2Fb`` would otherwise become the nested repository ``a/b``.
"""

from __future__ import annotations

import re

from cargohold.digest import NAME_RE
from cargohold.errors import ErrorCode, RegistryError

_SHAPES = re.compile(
    r"^(?P<name>.*?)/(?P<kind>manifests|blobs|referrers|tags)/(?P<rest>.*)\Z", re.DOTALL
)


def check_raw_path(raw_path: str) -> None:
    path = raw_path.split("?", 1)[0]
    if "%2f" in path.lower():
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            "an encoded slash (%2F) is not allowed in a path",
            {"path": path[:300]},
        )


def unmatched(tail: str, method: str) -> RegistryError:
    """The error for a ``/v2/`` tail that no route matched."""
    m = _SHAPES.match(tail)
    if m is None:
        return RegistryError(
            ErrorCode.NAME_UNKNOWN, "no such endpoint", {"path": tail[:300]}, status=404
        )
    name, kind, rest = m.group("name"), m.group("kind"), m.group("rest") or ""
    if not name or NAME_RE.match(name) is None or len(name) > 255:
        detail = {"name": name[:300]}
        return RegistryError(ErrorCode.NAME_INVALID, "invalid repository name", detail)
    if kind == "manifests":
        if method in ("GET", "HEAD"):  # as registry:2: a reference that names nothing
            return RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                "neither a valid tag nor a digest",
                {"reference": rest[:200]},
                status=404,
            )
        if ":" in rest:
            return RegistryError(ErrorCode.DIGEST_INVALID, "invalid digest", {"digest": rest[:200]})
        return RegistryError(ErrorCode.TAG_INVALID, "invalid tag", {"tag": rest[:200]})
    if kind == "tags":
        return RegistryError(
            ErrorCode.NAME_UNKNOWN, "no such endpoint", {"path": tail[:300]}, status=404
        )
    if kind == "blobs" and rest.startswith("uploads/"):
        return RegistryError(
            ErrorCode.BLOB_UPLOAD_UNKNOWN, "invalid upload id", {"upload": rest[8:][:200]}
        )
    return RegistryError(ErrorCode.DIGEST_INVALID, "invalid digest", {"digest": rest[:200]})

