"""Prometheus metrics, correct across ``--workers`` (prometheus-client's multiprocess mode).

The parent process calls :func:`prepare` before it forks: it points ``PROMETHEUS_MULTIPROC_DIR``
at a fresh directory (or wipes the one the operator set), so every worker writes its samples to
its own memory-mapped files there, and whichever process serves ``/metrics`` (worker 0's debug
listener) adds them all up. When a worker dies the supervisor marks it dead
(:func:`cargohold.supervisor.mark_dead`) so its live gauges stop counting; its counters stay,
as counters must.

Everything here is a no-op until :func:`setup` ran (no ``http.debug.addr``: no metrics and no
cost on the request path). Names follow registry:2's where it has one (``registry_http_*``,
``registry_storage_cache_total``, ``registry_notifications_*``).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import time

ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_m: _Metrics | None = None  # the metric objects once set up
_created_dir: str | None = None


def prepare() -> str:
    """In the parent, before any fork: the multiprocess directory, fresh and empty."""
    global _created_dir
    directory = os.environ.get(ENV)
    if directory:
        os.makedirs(directory, exist_ok=True)
        for path in glob.glob(os.path.join(directory, "*.db")):
            os.remove(path)
    else:
        directory = _created_dir = tempfile.mkdtemp(prefix="cargohold-metrics-")
        os.environ[ENV] = directory
    return directory


def created_dir() -> str | None:
    """The directory :func:`prepare` made (not one the operator set), for whoever cleans up."""
    return _created_dir


def cleanup() -> None:
    """In the parent at exit: remove the directory :func:`prepare` created."""
    global _created_dir
    if _created_dir is not None:
        shutil.rmtree(_created_dir, ignore_errors=True)
        _created_dir = None


def enabled() -> bool:
    return _m is not None


def instruments() -> _Metrics | None:
    """The metric objects (None until :func:`setup`), for the API's request middleware
    (``cargohold.api.httpmetrics``), which names requests by route: the route table is the
    API's, so the middleware lives there and this module imports nothing above it."""
    return _m


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "registry_http_requests",
            "HTTP requests by handler, method and status code",
            ["handler", "method", "code"],
        )
        self.latency = Histogram(
            "registry_http_request_duration_seconds",
            "HTTP request latency by handler and method",
            ["handler", "method"],
            buckets=LATENCY_BUCKETS,
        )
        self.bytes_in = Counter(
            "registry_http_request_size_bytes", "Request body bytes received", ["handler"]
        )
        self.bytes_out = Counter(
            "registry_http_response_size_bytes", "Response body bytes sent", ["handler"]
        )
        self.in_flight = Gauge(
            "registry_http_in_flight_requests",
            "Requests being served",
            ["handler"],
            multiprocess_mode="livesum",
        )
        self.uploads = Gauge(
            "cargohold_uploads_in_flight",
            "Blob upload requests (POST, PATCH, PUT) receiving data right now",
            multiprocess_mode="livesum",
        )
        self.cache_entries = Gauge(
            "cargohold_cache_entries",
            "Entries in each bounded cache of each worker (cargohold.memory), every minute",
            ["cache"],
            multiprocess_mode="liveall",
        )
        self.cache_limit = Gauge(
            "cargohold_cache_limit",
            "The bound of each cache of each worker (CARGOHOLD_CACHE_SCALE applied)",
            ["cache"],
            multiprocess_mode="liveall",
        )
        self.cache = Counter(
            "registry_storage_cache",
            "Cache lookups by cache and result (hit, miss)",
            ["cache", "type"],
        )
        self.blob_cache_bytes = Counter(
            "cargohold_blob_cache_bytes",
            "Local blob cache (storage.cache.blobdir) bytes: sent from it (hit), written by "
            "fills (fill), removed at the size bound (evicted)",
            ["type"],
        )
        self.blob_cache_fills = Counter(
            "cargohold_blob_cache_fills",
            "Local blob cache fills by result (stored, mismatch: failed verification, "
            "abandoned: the stream or the disk failed)",
            ["result"],
        )
        self.storage_errors = Counter(
            "cargohold_storage_errors", "Storage operations that failed", ["operation"]
        )
        self.gc_runs = Counter(
            "cargohold_gc_runs", "Garbage collections by mode and result", ["mode", "result"]
        )
        self.gc_bytes = Counter("cargohold_gc_freed_bytes", "Bytes freed by garbage collection")
        self.gc_blobs = Counter("cargohold_gc_deleted_blobs", "Blobs deleted by garbage collection")
        self.gc_manifests = Counter(
            "cargohold_gc_deleted_manifests", "Manifests deleted by garbage collection"
        )
        self.gc_duration = Histogram(
            "cargohold_gc_duration_seconds",
            "Duration of garbage collections",
            buckets=(0.1, 1, 10, 60, 600, 3600),
        )
        self.gc_last = Gauge(
            "cargohold_gc_last_run_timestamp_seconds",
            "When the last garbage collection finished",
            multiprocess_mode="max",
        )
        self.events = Counter(
            "registry_notifications_events", "Events delivered per endpoint", ["endpoint"]
        )
        self.event_failures = Counter(
            "registry_notifications_errors", "Failed deliveries per endpoint", ["endpoint"]
        )
        self.events_dropped = Counter(
            "registry_notifications_dropped", "Events dropped, queue full", ["endpoint"]
        )
        self.events_pending = Gauge(
            "registry_notifications_pending",
            "Events queued per endpoint",
            ["endpoint"],
            multiprocess_mode="livesum",
        )
        self.mirror_requests = Counter(
            "cargohold_mirror_upstream_requests",
            "Requests to mirrors' upstreams by mirror, method and status (0: no answer)",
            ["mirror", "method", "code"],
        )
        self.mirror_bytes = Counter(
            "cargohold_mirror_upstream_bytes", "Body bytes received from upstreams", ["mirror"]
        )
        self.mirror_lookups = Counter(
            "cargohold_mirror_lookups",
            "Mirrored manifests and blobs served from the cache (hit) or fetched (miss)",
            ["mirror", "kind", "result"],
        )
        self.mirror_coalesced = Counter(
            "cargohold_mirror_coalesced_waits",
            "Requests that waited for another request's upstream fetch instead of their own",
            ["mirror", "kind"],
        )
        self.mirror_stale = Counter(
            "cargohold_mirror_stale_serves",
            "Cached content served because the upstream could not be asked",
            ["mirror"],
        )


def setup() -> None:
    """In each serving process (after the fork): create the metrics."""
    global _m
    if _m is not None:
        return
    from prometheus_client import values

    # multiprocess iff ENV is set (now: prometheus-client decided at import time)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _m = _Metrics()


def render() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    if os.environ.get(ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------- recording


def quota_lines(entries: list[dict[str, object]]) -> bytes:
    """``cargohold_quota_{usage,limit}_bytes{rule,kind,scope}``: usage against every quota,
    from the shared usage index (not per process, so not a multiprocess metric)."""
    out = []
    for name, key, help_text in (
        ("cargohold_quota_usage_bytes", "usage", "bytes held against a quota"),
        ("cargohold_quota_limit_bytes", "limit", "the quota's limit in bytes"),
    ):
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for e in entries:
            scope = str(e["scope"]).replace("\\", "\\\\").replace('"', '\\"')
            labels = f'rule="{e["rule"]}",kind="{e["kind"]}",scope="{scope}"'
            out.append(f"{name}{{{labels}}} {e[key]}")
    return ("\n".join(out) + "\n").encode()


def cache(name: str, hit: bool) -> None:
    if _m is not None:
        _m.cache.labels(name, "hit" if hit else "miss").inc()


def cache_occupancy(caches: dict[str, tuple[int, int]]) -> None:
    """Each cache's (entries, bound) in this worker (see cargohold.memory)."""
    if _m is not None:
        for name, (entries, bound) in caches.items():
            _m.cache_entries.labels(name).set(entries)
            _m.cache_limit.labels(name).set(bound)


def blob_cache_hit(size: int) -> None:
    """A GET answered from the local blob cache (its lookups count in registry_storage_cache
    as cache="blobdir")."""
    if _m is not None:
        _m.cache.labels("blobdir", "hit").inc()
        _m.blob_cache_bytes.labels("hit").inc(size)


def blob_cache_miss() -> None:
    if _m is not None:
        _m.cache.labels("blobdir", "miss").inc()


def blob_cache_fill(result: str, size: int) -> None:
    if _m is not None:
        _m.blob_cache_fills.labels(result).inc()
        if size:
            _m.blob_cache_bytes.labels("fill").inc(size)


def blob_cache_evicted(size: int) -> None:
    if _m is not None:
        _m.blob_cache_bytes.labels("evicted").inc(size)


def mirror_upstream_request(mirror: str, method: str, code: int) -> None:
    if _m is not None:
        _m.mirror_requests.labels(mirror, method, str(code)).inc()


def mirror_upstream_bytes(mirror: str, count: int) -> None:
    if _m is not None and count:
        _m.mirror_bytes.labels(mirror).inc(count)


def mirror_lookup(mirror: str, kind: str, hit: bool) -> None:
    if _m is not None:
        _m.mirror_lookups.labels(mirror, kind, "hit" if hit else "miss").inc()


def mirror_coalesced(mirror: str, kind: str) -> None:
    if _m is not None:
        _m.mirror_coalesced.labels(mirror, kind).inc()


def mirror_stale(mirror: str) -> None:
    if _m is not None:
        _m.mirror_stale.labels(mirror).inc()


def storage_error(operation: str) -> None:
    if _m is not None:
        _m.storage_errors.labels(operation).inc()


def gc_run(mode: str, ok: bool, seconds: float, freed: int, blobs: int, manifests: int) -> None:
    if _m is None:
        return
    _m.gc_runs.labels(mode, "success" if ok else "error").inc()
    _m.gc_duration.observe(seconds)
    _m.gc_bytes.inc(freed)
    _m.gc_blobs.inc(blobs)
    _m.gc_manifests.inc(manifests)
    _m.gc_last.set(time.time())


def notification_sent(endpoint: str, count: int) -> None:
    if _m is not None:
        _m.events.labels(endpoint).inc(count)


def notification_failed(endpoint: str) -> None:
    if _m is not None:
        _m.event_failures.labels(endpoint).inc()


def notification_dropped(endpoint: str) -> None:
    if _m is not None:
        _m.events_dropped.labels(endpoint).inc()


def notification_pending(endpoint: str, delta: int) -> None:
    if _m is not None:
        _m.events_pending.labels(endpoint).inc(delta)
