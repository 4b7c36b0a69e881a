"""What a serving process runs beside the API: events, background work and the admin listener.

Every worker publishes its requests' events (webhooks, pull times for retention), follows the
deletions of garbage collections run elsewhere (to drop them from its caches) and takes part in
online GC's fence (:class:`~cargohold.registry.gc.Fence`). Worker 0 also runs the scheduled
work (upload purging, ``storage.maintenance.gc``) and, with ``http.debug.addr``, the debug/admin
listener:

- ``GET /metrics`` (``http.debug.prometheus.path``): Prometheus, summed over all workers;
- ``POST /admin/gc?dryrun=&deleteuntagged=&wait=``: collect now (retention first); with
  ``wait=true`` the answer is the report, else 202 and ``GET /admin/gc`` shows progress;
- ``GET /admin/gc``: the running collection's and the last one's reports;
- ``GET /admin/retention``: what the retention policies would delete now (a dry run);
- ``GET /admin/du``: ``cargohold du`` as JSON.

Like registry:2's debug server, the listener has no authentication: bind it to loopback or a
private network (``http.debug.addr: 127.0.0.1:5001``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiohttp import web

from cargohold import memory, metrics
from cargohold.api import httpmetrics
from cargohold.api.notify import EVENTS_KEY, EventHub
from cargohold.config import Config, parse_addr
from cargohold.notifications import Notifier
from cargohold.registry import gcchild, gcruns
from cargohold.registry.gc import (
    Fence,
    GarbageCollector,
    GCBusy,
    GCError,
    GCOptions,
    GCReport,
    InvalidationWatcher,
)
from cargohold.registry.retention import PullRecorder, RetentionEngine
from cargohold.registry.usage import disk_usage

log = logging.getLogger("cargohold.admin")

INVALIDATION_POLL = 5.0  # writers also catch up on demand (Fence.guard)
MEMORY_UPKEEP = 30.0  # seconds between publishing cache occupancy and malloc_trim


class OnlineGC:
    """Collections while serving: one at a time per process, retention first."""

    def __init__(self, registry: Any, config: Config) -> None:
        self.registry = registry
        self.config = config
        self.lock = asyncio.Lock()
        self.running: GCReport | None = None
        self.last: GCReport | None = None
        self._task: asyncio.Task[GCReport] | None = None

    def _forget(self, digests: set[Any]) -> None:
        self.registry.manifests.forget(digests)

    async def collect(
        self, dry_run: bool | None = None, delete_untagged: bool | None = None, mode: str = "manual"
    ) -> GCReport:
        settings = self.config.storage.gc
        dry_run = settings.dryrun if dry_run is None else dry_run
        delete_untagged = settings.deleteuntagged if delete_untagged is None else delete_untagged
        if self.lock.locked():
            raise GCBusy("a garbage collection is already running in this registry")
        async with self.lock:
            started = time.monotonic()
            retention_json: dict[str, Any] | None = None
            options = GCOptions(
                dry_run=dry_run,
                delete_untagged=delete_untagged,
                online=True,
                grace_period=settings.graceperiod,
                settle=settings.settle,
            )
            collector = GarbageCollector(self.registry.driver, forget=self._forget)
            report = GCReport("pending", dry_run, delete_untagged, True, started=time.time())
            self.running = report
            ok = False
            try:
                rules = self.registry.governance.rules  # as reloaded (cargohold.reload)
                retention = rules.retention
                if retention is not None and retention.policies:
                    engine = RetentionEngine(
                        self.registry.driver, retention, settings.graceperiod, rules
                    )
                    decisions, extra = await engine.evaluate()
                    if not dry_run:
                        await engine.delete_tags(decisions)
                    else:
                        options.ignored_tags = extra.ignored_tags
                    decisions.dry_run = dry_run
                    options.untagged_repos = extra.untagged_repos
                    retention_json = decisions.to_json()
                if gcchild.usable(self.config):  # its peak is given back when it exits
                    report = await gcchild.collect(self.config, options)
                    if not dry_run:
                        self._forget(gcchild.deleted_digests(report))
                else:
                    report = await collector.run(options)
                report.retention = retention_json
                if not dry_run and self.registry.quotas.active:
                    await self.registry.quotas.rebuild()  # what GC unlinked is freed
                ok = True
                log.info(
                    "garbage collection %s%s: %d blobs and %d manifests %s, %d bytes",
                    report.id,
                    " (dry run)" * dry_run,
                    len(report.blobs_deleted),
                    len(report.manifests_deleted),
                    "eligible" if dry_run else "deleted",
                    report.bytes_freed,
                )
            except GCBusy:
                raise  # another collection, or a repairing fsck, holds the lease: 409, not 500
            except GCError as e:
                report.error = str(e)
                log.error("garbage collection failed: %s", e)
            except Exception as e:
                report.error = f"{type(e).__name__}: {e}"
                log.exception("garbage collection failed")
            finally:
                self.running = None
                self.last = report
                memory.trim()  # retention's walk, the report; the inventory was the child's
                if not report.finished:
                    report.finished = time.time()
                await gcruns.record(self.registry.driver, report)  # the web UI's history
                metrics.gc_run(
                    mode,
                    ok,
                    time.monotonic() - started,
                    0 if dry_run else report.bytes_freed,
                    0 if dry_run else len(report.blobs_deleted),
                    0 if dry_run else len(report.manifests_deleted),
                )
            return report

    def start(self, dry_run: bool | None, delete_untagged: bool | None) -> None:
        if self.lock.locked():
            raise GCBusy("a garbage collection is already running in this registry")
        self._task = asyncio.create_task(self.collect(dry_run, delete_untagged))

    async def schedule(self) -> None:
        settings = self.config.storage.gc
        if not settings.enabled:
            return
        while True:
            await asyncio.sleep(settings.interval)
            if self.config.storage.readonly:
                continue  # read-only: maintenance is the operator's (offline GC)
            with contextlib.suppress(GCBusy):
                await self.collect(mode="scheduled")


class Operations:
    """Per serving process; ``index`` 0 is the one that runs the schedules and the listener."""

    def __init__(self, registry: Any, config: Config, index: int) -> None:
        self.registry = registry
        self.config = config
        self.index = index
        self.hub = EventHub(include_references=config.notifications.include_references)
        self.notifier = Notifier(config.notifications) if config.notifications.endpoints else None
        if self.notifier is not None:
            self.hub.sinks.append(self.notifier)
        retention = config.retention
        self.pulls = PullRecorder(registry.driver) if retention and retention.policies else None
        if self.pulls is not None:
            self.hub.sinks.append(self.pulls)
        registry.governance.on_change(self._rules_changed)
        self.watcher = InvalidationWatcher(registry.driver, registry.manifests.forget)
        self.fence = Fence(registry.driver, self.watcher)
        registry.blobs.fence = self.fence
        self.gc = OnlineGC(registry, config)
        self._tasks: list[asyncio.Task[None]] = []
        self._debug: web.AppRunner | None = None

    def install(self, app: web.Application) -> None:
        app[EVENTS_KEY] = self.hub
        httpmetrics.install(app)

    async def start(self) -> None:
        if self.notifier is not None:
            await self.notifier.start()
        await self.watcher.poll()  # learn the journal as it is
        self._spawn(self.watcher.run(INVALIDATION_POLL))
        self._spawn(self._memory_upkeep())
        if self.pulls is not None and self.config.retention is not None:
            self._spawn(self.pulls.run(self.config.retention.pull_flush_interval))
        if self.index == 0:
            self._spawn(self.gc.schedule())
            self._spawn(self.registry.quotas.ensure_built())
            if self.config.debug.addr:
                await self._start_debug()

    def _rules_changed(self, old: Any, new: Any) -> None:
        """Retention policies added by a reload: start noting pull times now (never stopped:
        a later reload may bring them back, and the records are tiny)."""
        retention = new.retention
        if self.pulls is None and retention is not None and retention.policies and self._tasks:
            self.pulls = PullRecorder(self.registry.driver)
            self.hub.sinks.append(self.pulls)
            self._spawn(self.pulls.run(retention.pull_flush_interval))

    async def _memory_upkeep(self) -> None:
        """Publish how full this worker's caches are and hand back to the system the free
        memory malloc keeps (cargohold.memory): a worker's memory is its caches, bounded."""
        while True:
            self.registry.uploads.buffers.shrink()  # upload buffers unused for a whole round
            metrics.cache_occupancy(memory.occupancy())
            memory.trim()
            await asyncio.sleep(MEMORY_UPKEEP)

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self.notifier is not None:
            await self.notifier.close()
        if self._debug is not None:
            await self._debug.cleanup()
            self._debug = None

    # -- the debug/admin listener --------------------------------------------------------------

    async def _start_debug(self) -> None:
        app = web.Application()
        debug = self.config.debug
        if debug.prometheus_enabled and metrics.enabled():
            app.router.add_get(debug.prometheus_path, self._metrics)
        app.router.add_post("/admin/gc", self._gc_post)
        app.router.add_get("/admin/gc", self._gc_get)
        app.router.add_get("/admin/retention", self._retention)
        app.router.add_get("/admin/du", self._du)
        app.router.add_get("/debug/health", self._health)
        self._debug = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._debug.setup()
        host, port = parse_addr(debug.addr)
        site = web.TCPSite(self._debug, host or None, port, reuse_address=True)
        await site.start()
        log.info("debug listener on %s (metrics at %s)", debug.addr, debug.prometheus_path)

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = await asyncio.to_thread(metrics.render)
        if self.registry.quotas.active:  # read from the shared index at scrape time
            body += metrics.quota_lines(await self.registry.quotas.report())
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _health(self, request: web.Request) -> web.Response:
        """Process liveness only, except while draining (the main listener is closed by then,
        so this is where a probe can still see why)."""
        if self.registry.health.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ok"})

    async def _gc_post(self, request: web.Request) -> web.Response:
        dry_run = _flag(request, "dryrun")
        delete_untagged = _flag(request, "deleteuntagged")
        try:
            if _flag(request, "wait"):
                report = await self.gc.collect(dry_run, delete_untagged)
                status = 500 if report.error else 200
                return web.json_response(report.to_json(), status=status)
            self.gc.start(dry_run, delete_untagged)
        except GCBusy as e:
            return web.json_response({"error": str(e)}, status=409)
        return web.json_response({"status": "started"}, status=202)

    async def _gc_get(self, request: web.Request) -> web.Response:
        running, last = self.gc.running, self.gc.last
        return web.json_response(
            {
                "running": running.to_json() if running else None,
                "last": last.to_json() if last else None,
            }
        )

    async def _retention(self, request: web.Request) -> web.Response:
        rules = self.registry.governance.rules
        retention = rules.retention
        if retention is None or not retention.policies:
            return web.json_response({"error": "no retention policies configured"}, status=404)
        engine = RetentionEngine(
            self.registry.driver, retention, self.config.storage.gc.graceperiod, rules
        )
        report = await engine.run(dry_run=True)
        return web.json_response(report.to_json())

    async def _du(self, request: web.Request) -> web.Response:
        report = (await disk_usage(self.registry.driver)).to_json()
        report["quotas"] = await self.registry.quotas.report()
        return web.json_response(report)


def _flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None:
        return None
    return value.lower() in ("1", "true", "yes", "on")
