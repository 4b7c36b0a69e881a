"""Webhook delivery of registry:2's events (``notifications.endpoints``).

Each endpoint has its own bounded queue and one delivery task per process. A request only
appends to the queues (:meth:`Notifier.publish`, no I/O), so a slow or dead endpoint never slows
the registry down. The task POSTs the queued events in envelopes of up to :data:`BATCH` events
(``Content-Type: application/vnd.docker.distribution.events.v1+json``), with the endpoint's
headers and timeout. A failed delivery is retried with the same events, as registry:2's
retrying sink does: after ``threshold`` failures in a row it waits ``backoff`` between tries.
Unlike registry:2, whose queue grows without limit while an endpoint is down, a full queue
drops its *oldest* events and logs how many it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque

import aiohttp

from cargohold import metrics
from cargohold.config import NotificationEndpoint, NotificationsConfig
from cargohold.registry.events import ENVELOPE_MEDIA_TYPE, Event, EventFilter, envelope

log = logging.getLogger("cargohold.notifications")

QUEUE_LIMIT = 10_000  # events per endpoint per process
BATCH = 100  # events per request
DROP_LOG_INTERVAL = 10.0  # seconds between "dropped N events" lines


class EndpointQueue:
    def __init__(
        self, endpoint: NotificationEndpoint, limit: int = QUEUE_LIMIT, batch: int = BATCH
    ) -> None:
        self.endpoint = endpoint
        self.limit = limit
        self.batch = batch
        self.filter = EventFilter(
            frozenset(endpoint.ignored_mediatypes), frozenset(endpoint.ignored_actions)
        )
        self.queue: deque[Event] = deque()
        self.dropped = 0  # in total
        self.sent = 0
        self.failures = 0  # in a row
        self._unlogged_drops = 0
        self._last_drop_log = 0.0
        self._wakeup = asyncio.Event()

    def publish(self, event: Event) -> None:
        if not self.filter.accepts(event):
            return
        if len(self.queue) >= self.limit:
            self.queue.popleft()
            self.dropped += 1
            self._unlogged_drops += 1
            metrics.notification_dropped(self.endpoint.name)
            self._log_drops()
        else:
            metrics.notification_pending(self.endpoint.name, 1)
        self.queue.append(event)
        self._wakeup.set()

    def _log_drops(self, force: bool = False) -> None:
        now = time.monotonic()
        if self._unlogged_drops and (force or now - self._last_drop_log >= DROP_LOG_INTERVAL):
            log.warning(
                "notifications endpoint %s: queue full (%d events), dropped the %d oldest",
                self.endpoint.name,
                self.limit,
                self._unlogged_drops,
            )
            self._unlogged_drops = 0
            self._last_drop_log = now

    async def run(self, session: aiohttp.ClientSession) -> None:
        name = self.endpoint.name
        while True:
            if not self.queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            events = [self.queue[i] for i in range(min(self.batch, len(self.queue)))]
            ok = await self._post(session, events)
            if ok:
                # The events sent are the oldest ones still queued, unless some were dropped
                # meanwhile: drop from the left only those still there.
                for e in events:
                    if self.queue and self.queue[0] is e:
                        self.queue.popleft()
                self.sent += len(events)
                self.failures = 0
                metrics.notification_sent(name, len(events))
                metrics.notification_pending(name, -len(events))
                self._log_drops(force=True)
                continue
            self.failures += 1
            metrics.notification_failed(name)
            self._log_drops()
            if self.failures >= self.endpoint.threshold:
                if self.failures == self.endpoint.threshold:
                    log.warning(
                        "notifications endpoint %s failed %d times in a row; retrying every %gs",
                        name,
                        self.failures,
                        self.endpoint.backoff,
                    )
                await asyncio.sleep(self.endpoint.backoff)
            else:
                await asyncio.sleep(min(self.endpoint.backoff, 0.05 * 2**self.failures))

    async def _post(self, session: aiohttp.ClientSession, events: list[Event]) -> bool:
        headers = {"Content-Type": ENVELOPE_MEDIA_TYPE}
        for key, values in self.endpoint.headers.items():
            if values:
                headers[key] = ", ".join(values)
        body = json.dumps(envelope(events)).encode()
        try:
            async with session.post(
                self.endpoint.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.endpoint.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                if response.status < 400:  # registry:2 takes 2xx and 3xx as delivered
                    return True
                log.debug(
                    "notifications endpoint %s answered %d", self.endpoint.name, response.status
                )
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("notifications endpoint %s: %s", self.endpoint.name, e)
        return False


class Notifier:
    """The event sink that feeds every configured endpoint."""

    def __init__(self, config: NotificationsConfig, queue_limit: int = QUEUE_LIMIT) -> None:
        self.include_references = config.include_references
        self.queues = [EndpointQueue(e, queue_limit) for e in config.endpoints]
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def publish(self, event: Event) -> None:
        for q in self.queues:
            q.publish(event)

    async def start(self) -> None:
        if not self.queues or self._session is not None:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(q.run(self._session)) for q in self.queues]

    async def close(self, drain: float = 1.0) -> None:
        deadline = time.monotonic() + drain
        while any(q.queue for q in self.queues) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
