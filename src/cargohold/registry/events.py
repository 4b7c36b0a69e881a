"""registry:2's events: what happened to which repository, in its notification envelope.

Only the model lives here (no HTTP): the API layer builds :class:`Event` values and hands them
to every :class:`EventSink` of the application (webhook delivery in
:mod:`cargohold.notifications`, the pull recorder of retention). The JSON is registry:2's
``notifications.Event`` field for field, so existing receivers parse it unchanged::

    {"events": [{"id", "timestamp", "action",
                 "target": {"mediaType", "size", "digest", "length", "repository", "url", "tag"},
                 "request": {"id", "addr", "host", "method", "useragent"},
                 "actor": {"name"}, "source": {"addr", "instanceID"}}]}
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

ENVELOPE_MEDIA_TYPE: Final = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE: Final = "application/octet-stream"  # what registry:2 reports for blobs

PUSH: Final = "push"
PULL: Final = "pull"
MOUNT: Final = "mount"
DELETE: Final = "delete"
ACTIONS: Final = (PUSH, PULL, MOUNT, DELETE)


@dataclass(frozen=True, slots=True)
class Target:
    repository: str
    digest: str = ""
    media_type: str = ""
    size: int = 0
    url: str = ""
    tag: str = ""
    from_repository: str = ""  # mount events
    references: tuple[dict[str, Any], ...] = ()  # notifications.events.includereferences

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.media_type:
            out["mediaType"] = self.media_type
        if self.size:
            out["size"] = self.size
        if self.digest:
            out["digest"] = self.digest
        if self.size:
            out["length"] = self.size
        out["repository"] = self.repository
        if self.from_repository:
            out["fromRepository"] = self.from_repository
        if self.url:
            out["url"] = self.url
        if self.tag:
            out["tag"] = self.tag
        if self.references:
            out["references"] = list(self.references)
        return out


@dataclass(frozen=True, slots=True)
class RequestInfo:
    id: str
    addr: str
    host: str
    method: str
    useragent: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "addr": self.addr,
            "host": self.host,
            "method": self.method,
            "useragent": self.useragent,
        }


@dataclass(frozen=True, slots=True)
class Source:
    addr: str
    instance_id: str

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr, "instanceID": self.instance_id}


@dataclass(frozen=True, slots=True)
class Event:
    action: str
    target: Target
    request: RequestInfo
    source: Source
    actor: str = ""
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.created, UTC).isoformat(timespec="microseconds")
        return {
            "id": self.id,
            "timestamp": stamp.replace("+00:00", "Z"),
            "action": self.action,
            "target": self.target.to_json(),
            "request": self.request.to_json(),
            "actor": {"name": self.actor} if self.actor else {},
            "source": self.source.to_json(),
        }


def envelope(events: list[Event]) -> dict[str, Any]:
    return {"events": [e.to_json() for e in events]}


class EventSink(Protocol):
    def publish(self, event: Event) -> None:
        """Take the event; must not block or raise (called on the request path)."""


@dataclass(frozen=True)
class EventFilter:
    """registry:2's ``ignoredmediatypes`` and ``ignore: {mediatypes, actions}``."""

    media_types: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()

    def accepts(self, event: Event) -> bool:
        if event.action in self.actions:
            return False
        return not (event.target.media_type and event.target.media_type in self.media_types)
