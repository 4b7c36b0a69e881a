"""Publishing registry:2's events from the handlers (push, pull, mount, delete).

Handlers call :func:`publish` after an operation succeeded; it builds the event only when the
application has sinks (webhook endpoints, the retention pull recorder), and the sinks only queue
it, so a request never waits for a notification. Like registry:2, pulls are GETs (a HEAD is not
a pull), and a manifest pushed or pulled by tag carries the tag.
"""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from cargohold.auth.accesslog import USER_KEY  # the caller's name, set by auth
from cargohold.digest import Digest
from cargohold.registry.events import (
    BLOB_MEDIA_TYPE,
    Event,
    EventSink,
    RequestInfo,
    Source,
    Target,
)
from cargohold.registry.manifests import Manifest

REQUEST_ID_KEY: Final = "cargohold.request_id"


@dataclass
class EventHub:
    sinks: list[EventSink] = field(default_factory=list)
    source: Source = field(default_factory=lambda: Source(socket.gethostname(), str(uuid.uuid4())))
    include_references: bool = False


EVENTS_KEY: Final = web.AppKey("cargohold.events", EventHub)


def hub_of(request: web.Request) -> EventHub | None:
    hub = request.app.get(EVENTS_KEY)
    return hub if hub is not None and hub.sinks else None


def _request_info(request: web.Request) -> RequestInfo:
    request_id = request.get(REQUEST_ID_KEY)
    if request_id is None:
        request_id = request[REQUEST_ID_KEY] = str(uuid.uuid4())
    peer = request.transport.get_extra_info("peername") if request.transport else None
    addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""
    return RequestInfo(
        id=str(request_id),
        addr=addr,
        host=request.host,
        method=request.method,
        useragent=request.headers.get("User-Agent", ""),
    )


def _url(request: web.Request, path: str) -> str:
    from cargohold.api.common import location

    loc = location(request, path)
    if loc.startswith(("http://", "https://")):
        return loc
    return f"{request.scheme}://{request.host}{loc}"


def publish(request: web.Request, action: str, target: Target) -> None:
    hub = hub_of(request)
    if hub is None:
        return
    event = Event(
        action=action,
        target=target,
        request=_request_info(request),
        source=hub.source,
        actor=str(request.get(USER_KEY) or ""),
    )
    for sink in hub.sinks:
        sink.publish(event)


def manifest_event(
    request: web.Request, action: str, name: str, m: Manifest, tag: str = ""
) -> None:
    hub = hub_of(request)
    if hub is None:
        return
    references: tuple[dict[str, object], ...] = ()
    if hub.include_references:
        references = tuple(
            {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size}
            for d in (*m.blobs, *m.children)
        )
    target = Target(
        repository=name,
        digest=str(m.digest),
        media_type=m.media_type,
        size=len(m.data),
        url=_url(request, f"/v2/{name}/manifests/{m.digest}"),
        tag=tag,
        references=references,
    )
    publish(request, action, target)


def blob_event(
    request: web.Request,
    action: str,
    name: str,
    digest: Digest,
    size: int,
    from_repository: str = "",
) -> None:
    if hub_of(request) is None:
        return
    target = Target(
        repository=name,
        digest=str(digest),
        media_type=BLOB_MEDIA_TYPE,
        size=size,
        url=_url(request, f"/v2/{name}/blobs/{digest}"),
        from_repository=from_repository,
    )
    publish(request, action, target)


def delete_event(request: web.Request, name: str, digest: str = "", tag: str = "") -> None:
    if hub_of(request) is None:
        return
    publish(request, "delete", Target(repository=name, digest=digest, tag=tag))
