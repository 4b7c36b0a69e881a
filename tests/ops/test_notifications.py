"""``notifications.endpoints``: registry:2's event envelopes to a webhook, never slowing pushes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from typing import Any

import pytest
import requests
from aiohttp import web
from support.images import push_image
from support.servers import free_port, unique_repo

from cargohold.auth import htpasswd
from cargohold.config import NotificationEndpoint
from cargohold.notifications import EndpointQueue
from cargohold.registry.events import (
    ENVELOPE_MEDIA_TYPE,
    Event,
    EventFilter,
    RequestInfo,
    Source,
    Target,
    envelope,
)

from .helpers import verify_image


class Receiver:
    """An aiohttp webhook on loopback, in its own thread: ``ok``, ``slow`` or stopped."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mode = "ok"
        self.released: asyncio.Event | None = None  # "slow" mode holds requests until stop()
        self.envelopes: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.runner: web.AppRunner | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.mode == "slow":
            # Held until stop(): slower than any endpoint timeout however loaded the machine
            # is, and stop() does not wait for a sleep to run out.
            if self.released is None:
                self.released = asyncio.Event()
            await self.released.wait()
        body = await request.json()
        with self.lock:
            self.envelopes.append((request.path, body, dict(request.headers)))
        return web.Response(status=200)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def _stop(self) -> None:
        if self.released is not None:
            self.released.set()
            self.released = None
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(60)

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        with self.lock:
            return [e for p, body, _ in self.envelopes if p == path for e in body["events"]]

    def wait_for(self, predicate: Any, limit: float = 120.0, path: str = "/hook") -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if predicate(self.events(path)):
                return True
            time.sleep(0.1)
        return bool(predicate(self.events(path)))


@pytest.fixture
def receiver():
    r = Receiver()
    r.start()
    yield r
    r.close()


def _has(events: list[dict], action: str, **target: Any) -> bool:
    return any(
        e["action"] == action and all(e["target"].get(k) == v for k, v in target.items())
        for e in events
    )


def test_push_pull_mount_delete_events_and_an_endpoint_that_fails(
    make_registry, images, skopeo, receiver
):
    base = f"http://127.0.0.1:{receiver.port}"
    config = {
        "notifications": {
            "endpoints": [
                {
                    "name": "hook",
                    "url": f"{base}/hook",
                    "headers": {"Authorization": ["Bearer s3cret"]},
                    "timeout": "2s",  # "ok" answers in time however loaded the machine
                    "threshold": 2,
                    "backoff": "200ms",
                },
                {
                    "name": "nopulls",
                    "url": f"{base}/nopulls",
                    "ignore": {"actions": ["pull"]},
                    "ignoredmediatypes": ["application/octet-stream"],
                },
            ]
        }
    }
    reg = make_registry(config=config)
    sk = skopeo.with_logs(reg)
    repo, copy = unique_repo("events"), unique_repo("events-copy")
    image = images.get(700)
    sk.copy(image.oci_ref(), f"docker://{reg.host}/{repo}:v1")
    verify_image(reg.url, repo, "v1", image)
    # A cross-repository mount as clients send it (skopeo mounts only when its blob-info
    # cache, shared by every test, remembers where the blob is: not something to rely on).
    layer = image.layer_digests[0]
    resp = requests.post(
        f"{reg.url}/v2/{copy}/blobs/uploads/?mount={layer}&from={repo}", timeout=30
    )
    assert resp.status_code == 201, resp.text

    assert receiver.wait_for(
        lambda ev: (
            _has(ev, "push", repository=repo, tag="v1", digest=image.digest)
            and _has(ev, "pull", repository=repo, tag="v1")
            and _has(ev, "pull", repository=repo, digest=image.layer_digests[0])
            and _has(ev, "push", repository=repo, digest=image.layer_digests[0])
            and _has(ev, "mount", repository=copy, fromRepository=repo)
        )
    ), receiver.events()
    push = next(
        e for e in receiver.events() if e["action"] == "push" and e["target"].get("tag") == "v1"
    )
    target = push["target"]
    assert target["mediaType"] == image.media_type
    assert target["size"] == target["length"] == len(image.top.data)
    assert target["url"] == f"{reg.url}/v2/{repo}/manifests/{image.digest}"
    assert set(push) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
    assert push["request"]["method"] == "PUT"
    assert push["request"]["host"] == reg.host
    assert push["request"]["useragent"]
    assert push["request"]["addr"].startswith("127.0.0.1:")
    assert set(push["source"]) == {"addr", "instanceID"}
    assert push["timestamp"].endswith("Z")
    headers = next(h for p, _b, h in receiver.envelopes if p == "/hook")
    assert headers["Content-Type"] == ENVELOPE_MEDIA_TYPE
    assert headers["Authorization"] == "Bearer s3cret"

    resp = requests.delete(f"{reg.url}/v2/{repo}/manifests/{image.digest}", timeout=30)
    assert resp.status_code == 202
    assert receiver.wait_for(lambda ev: _has(ev, "delete", repository=repo, digest=image.digest))

    # the second endpoint ignores pulls and blob events
    assert receiver.wait_for(lambda ev: _has(ev, "push", tag="v1"), path="/nopulls")
    ignored = receiver.events("/nopulls")
    assert not any(e["action"] == "pull" for e in ignored)
    assert not any(e["target"].get("mediaType") == "application/octet-stream" for e in ignored)

    # a slow endpoint, then none at all: every push still succeeds
    receiver.mode = "slow"
    for i in range(3):
        sk.copy(images.get(710 + i).oci_ref(), f"docker://{reg.host}/{repo}:slow{i}")
    receiver.stop()
    for i in range(3):
        sk.copy(images.get(720 + i).oci_ref(), f"docker://{reg.host}/{repo}:down{i}")
    for i in range(3):
        verify_image(reg.url, repo, f"down{i}", images.get(720 + i))
    # once it is back, the events queued meanwhile arrive (retried, not lost)
    receiver.mode = "ok"
    receiver.start()
    assert receiver.wait_for(lambda ev: all(_has(ev, "push", tag=f"down{i}") for i in range(3)))


def _event(i: int, action: str = "push", media_type: str = "x") -> Event:
    return Event(
        action=action,
        target=Target(repository="r", digest=f"sha256:{i:064x}", media_type=media_type, size=i),
        request=RequestInfo("id", "127.0.0.1:1", "h", "PUT", "ua"),
        source=Source("host:5000", "instance"),
    )


def test_full_queue_drops_the_oldest_and_says_how_many(caplog):
    caplog.set_level(logging.WARNING, logger="cargohold.notifications")

    async def scenario() -> EndpointQueue:
        queue = EndpointQueue(NotificationEndpoint("e", "http://127.0.0.1:1/"), limit=3)
        for i in range(10):
            queue.publish(_event(i))
        return queue

    queue = asyncio.run(scenario())
    assert [e.target.size for e in queue.queue] == [7, 8, 9]
    assert queue.dropped == 7
    assert "dropped the 1 oldest" in caplog.text or "dropped the 7 oldest" in caplog.text


def test_envelope_is_registry2s_shape():
    doc = envelope([_event(5, media_type="application/vnd.oci.image.manifest.v1+json")])
    (event,) = doc["events"]
    assert event["target"] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 5,
        "digest": f"sha256:{5:064x}",
        "length": 5,
        "repository": "r",
    }
    assert event["actor"] == {}
    assert event["source"] == {"addr": "host:5000", "instanceID": "instance"}
    f = EventFilter(frozenset({"x"}), frozenset({"pull"}))
    assert not f.accepts(_event(1, media_type="x"))
    assert not f.accepts(_event(1, action="pull", media_type="y"))
    assert f.accepts(_event(1, media_type="y"))


def test_blob_push_events_do_not_need_a_client(make_registry, images, receiver):
    config = {
        "notifications": {
            "endpoints": [{"name": "h", "url": f"http://127.0.0.1:{receiver.port}/hook"}]
        }
    }
    reg = make_registry(config=config)
    repo = unique_repo("ev")
    image = images.get(730)
    push_image(reg.url, repo, image, tag="t")
    assert receiver.wait_for(
        lambda ev: (
            {e["target"].get("digest") for e in ev if e["action"] == "push"}
            >= {b.digest for b in image.all_blobs()}
        )
    )


def test_events_name_the_logged_in_user_as_actor(make_registry, receiver, tmp_path) -> None:
    """registry:2 fills ``actor.name`` with the authenticated user; a push by alice says so."""
    htpasswd_file = tmp_path / "htpasswd"
    htpasswd.set_user(str(htpasswd_file), "alice", "alice-pw", cost=4)
    config = {
        "auth": {"htpasswd": {"realm": "events", "path": str(htpasswd_file)}},
        "notifications": {
            "endpoints": [{"name": "hook", "url": f"http://127.0.0.1:{receiver.port}/hook"}]
        },
    }
    reg = make_registry(config=config)
    http = requests.Session()
    http.auth = ("alice", "alice-pw")
    data = b"an event with an actor"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    resp = http.post(f"{reg.url}/v2/actors/app/blobs/uploads/?digest={digest}", data=data)
    assert resp.status_code == 201, resp.text
    assert receiver.wait_for(lambda ev: _has(ev, "push", repository="actors/app", digest=digest))
    push = next(e for e in receiver.events() if e["target"].get("digest") == digest)
    assert push["actor"] == {"name": "alice"}
