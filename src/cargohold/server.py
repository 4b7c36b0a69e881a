"""Running the API: logging, sockets, the worker processes and background maintenance.

``--workers N`` starts N processes that each bind the same port with ``SO_REUSEPORT``, so the
kernel spreads connections across them with no proxy in between. Workers share nothing but the
storage: every piece of state that must survive a request landing on another worker lives there
(see :mod:`cargohold.registry.uploads` for how upload hashing copes).

``SO_REUSEPORT`` lets *any* process of the same user join the port, so a second ``cargohold
serve`` on the same address would bind it too and the kernel would split connections between
two registries. Only one server's workers may share a port: :func:`claim_port` takes a name
tied to the port (an abstract Unix socket, gone with the last process that holds it) before
anything listens, and a second server fails with "address already in use", as registry:2 does.
A single-process server binds without ``SO_REUSEPORT`` at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
from typing import Any, NoReturn

from aiohttp import web

from cargohold import __version__, audit, memory, metrics, supervisor
from cargohold.admin.service import Operations
from cargohold.api import limits
from cargohold.api.app import create_app
from cargohold.api.socketbody import READ_SIZE
from cargohold.auth.accesslog import AccessLog
from cargohold.auth.middleware import AUTH_KEY
from cargohold.auth.throttle import SHARED_DIR_ENV
from cargohold.clientaddr import trusted_networks
from cargohold.config import Config, parse_addr
from cargohold.drain import Drain
from cargohold.mirror import upkeep as mirror_upkeep
from cargohold.mirror.mirrored import MirroredRegistry
from cargohold.registry.core import Registry
from cargohold.reload import Reloader
from cargohold.tls import ServerTLS

log = logging.getLogger("cargohold")

ACCESS_LOG_FORMAT = '%a "%r" %s %b "%{User-Agent}i" %Tfs'
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class JsonFormatter(logging.Formatter):
    """registry:2's ``log.formatter: json``: one object per line, with ``log.fields`` merged in."""

    def __init__(self, fields: dict[str, Any]) -> None:
        super().__init__()
        self.fields = fields

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **self.fields,
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.log.formatter == "json":
        handler.setFormatter(JsonFormatter(dict(config.log.fields)))
    else:
        suffix = "".join(f" {k}={v}" for k, v in config.log.fields.items())
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s %(name)s: %(message)s{suffix}")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS.get(config.log.level, logging.INFO))
    audit.setup(config.log.audit_path)  # log.audit.path: the JSON audit trail


def make_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    """One listening socket; an empty host means every interface, IPv4 and IPv6."""
    family = socket.AF_INET6 if (":" in host or host == "") and socket.has_ipv6 else socket.AF_INET
    bind_host = host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((bind_host, port))
    except OSError:
        sock.close()
        if family == socket.AF_INET6 and not host:
            return make_socket("0.0.0.0", port, reuse_port)
        raise
    sock.setblocking(False)
    return sock


def claim_port(port: int) -> socket.socket:
    """Hold the name ``cargohold-port-PORT`` (abstract, so per network namespace like the port)
    for this server's lifetime: the workers and the supervisor inherit it. Raises EADDRINUSE
    when another cargohold serves the port. Keyed by port alone: whatever the addresses, two
    servers on one port are what ``SO_REUSEPORT`` would otherwise let through unseen."""
    guard = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        guard.bind(f"\0cargohold-port-{port}")
    except OSError as e:
        guard.close()
        if e.errno != errno.EADDRINUSE:
            raise
        raise OSError(
            errno.EADDRINUSE, f"port {port}: address already in use (another cargohold serves it)"
        ) from None
    os.set_inheritable(guard.fileno(), True)  # the supervisor keeps it across its exec
    return guard


async def _maintenance(registry: Registry) -> None:
    purging = registry.config.storage.purging
    if not purging.enabled:
        return
    await asyncio.sleep(1.0)
    while True:
        try:
            purged = await registry.purge_uploads()
            if purged:
                log.info("upload purging removed %d stale uploads", purged)
        except Exception:
            log.exception("upload purging failed")
        await asyncio.sleep(max(purging.interval, 1.0))


async def _reconcile_catalog(registry: Registry) -> None:
    """Keep the repository index of an object store in line with the layout (see repoindex)."""
    if registry.layers.index is None:
        return
    from cargohold.registry.repoindex import RECONCILE_SECONDS

    await asyncio.sleep(5.0 + random.uniform(0, 5.0))
    while True:
        try:
            await registry.reconcile_catalog()
        except Exception:
            log.exception("repository index reconciliation failed")
        await asyncio.sleep(RECONCILE_SECONDS * random.uniform(0.9, 1.1))


def _describe_store(config: Config) -> str:
    params = config.storage.params
    if config.storage.driver == "s3":
        root = str(params.get("rootdirectory") or "").strip("/")
        endpoint = params.get("regionendpoint") or f"region {params.get('region')}"
        return f"s3://{params.get('bucket')}/{root} at {endpoint}"
    return config.storage.driver


def ensure_secret(config: Config) -> None:
    """Without http.secret, generate one as registry:2 does, *before* any worker is forked so
    that the workers of this process share it, and say loudly what that means for replicas."""
    if config.http.secret:
        return
    config.http.secret = secrets.token_urlsafe(32)
    log.warning(
        "http.secret is not set: generated a random secret for this process. Upload URLs are "
        "signed with it, so replicas behind a load balancer will NOT work together (an upload "
        "continued on another replica is refused): set the same http.secret on every replica "
        "(or REGISTRY_HTTP_SECRET)."
    )


async def run_worker(config: Config, sock: socket.socket, index: int) -> None:
    registry = MirroredRegistry(config)
    app = create_app(registry, config.http.headers)
    drain = Drain()
    app.middlewares.insert(0, drain.middleware)
    if config.debug.addr and config.debug.prometheus_enabled:
        metrics.setup()
    ops = Operations(registry, config, index)  # events, online GC, the debug listener
    ops.install(app)
    access_log = None if config.log.accesslog_disabled else logging.getLogger("cargohold.access")
    runner = web.AppRunner(
        app,
        access_log=access_log,
        access_log_class=AccessLog,  # ACCESS_LOG_FORMAT with secrets in query strings redacted
        access_log_format=ACCESS_LOG_FORMAT,
        handle_signals=False,
        read_bufsize=READ_SIZE // 2,  # request bodies: see api.socketbody
        auto_decompress=False,  # a blob is the bytes sent, whatever Content-Encoding says
        **limits.handler_args(config.http.limits),
        shutdown_timeout=FINISH_SECONDS,
    )
    await runner.setup()
    tls = ServerTLS(config.http.tls) if config.http.tls is not None else None
    site = limits.LimitedSite(
        runner,
        sock,
        config.http.limits,
        trusted_networks(config.http.trustedproxies),
        backlog=1024,
        ssl_context=tls.context if tls else None,
    )
    await site.start()
    await ops.start()
    tls_watch = asyncio.create_task(tls.watch()) if tls is not None else None
    reloader = Reloader(config, registry, app.get(AUTH_KEY), tls, primary=index == 0)
    config_watch = asyncio.create_task(reloader.watch())
    stop = asyncio.Event()
    stopped_by: list[signal.Signals] = []
    loop = asyncio.get_running_loop()

    def on_stop(sig: signal.Signals) -> None:
        stopped_by.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop, sig)
    reloads: set[asyncio.Task[bool]] = set()

    def on_hangup() -> None:  # SIGHUP: reload the policy (cargohold.reload)
        task = asyncio.create_task(reloader.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    maintenance = asyncio.create_task(_maintenance(registry)) if index == 0 else None
    reconcile = asyncio.create_task(_reconcile_catalog(registry)) if index == 0 else None
    upkeep = (  # hit rates, pull times; worker 0: maxsize/ttl eviction and prefetch
        asyncio.create_task(mirror_upkeep.run(registry.mirrors, index, config.storage.gc))
        if registry.mirrors.enabled
        else None
    )
    try:
        await stop.wait()
    finally:
        # Graceful shutdown (see cargohold.drain), in this order: unhealthy at once (a probe on
        # a kept-alive connection, or on the debug listener, sees 503), no new connections (the
        # listening socket closes), then the requests in flight get http.draintimeout to finish,
        # then aiohttp cancels what is left, and only then the debug listener, notifications
        # and the storage go.
        registry.health.draining = True
        await site.stop()
        # Like registry:2, only SIGTERM drains: SIGINT is somebody at a terminal.
        if config.http.draintimeout > 0 and signal.SIGINT not in stopped_by:
            log.info(
                "stopping: draining %d requests in flight for up to %gs",
                drain.in_flight,
                config.http.draintimeout,
            )
            if not await drain.wait(config.http.draintimeout):
                log.warning("drain time over: cutting %d requests", drain.in_flight)
        for task in (maintenance, reconcile, tls_watch, config_watch, upkeep):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await runner.cleanup()
        await ops.stop()
        await registry.close()


# After the drain (or at once, with registry:2's default draintimeout of 0): how long aiohttp
# lets a response that is being written finish before it cancels it.
FINISH_SECONDS = 0.5


def _tune_interpreter() -> None:
    """Hashing and file writes run in threads that release the GIL; with the default 5 ms switch
    interval they then wait for the event loop to hand it back, which halves upload throughput.
    A 0.5 ms interval keeps receive, hash and write overlapped (measured: ~2x on 1 GiB)."""
    sys.setswitchinterval(0.0005)
    memory.limit_arenas()  # before any thread: see cargohold.memory


def _worker_main(config: Config, host: str, port: int, index: int) -> None:
    _tune_interpreter()
    setup_logging(config)
    sock = make_socket(host, port, reuse_port=True)
    sock.listen(1024)
    asyncio.run(run_worker(config, sock, index))


def serve(config: Config, workers: int = 1, worker_index: int | None = None) -> int:
    if worker_index is not None:
        # A replacement for a worker that died, started by cargohold.supervisor: the parent
        # already checked everything and put what it generated into the environment.
        host, port = parse_addr(config.http.addr)
        _worker_main(config, host, port, worker_index)
        return 0
    # First, before anything can start a thread: an arena a thread takes before the cap stays.
    # A single-process server is a worker itself; forked workers inherit it (and set it again).
    memory.limit_arenas()
    setup_logging(config)
    ensure_secret(config)
    # fail fast on a bad storage, auth or TLS setup, before any process starts
    create_app(MirroredRegistry(config))
    # That registry is cyclic garbage now: collect it at once, or its caches stay registered in
    # cargohold.memory (and their bounds in the metrics) until the collector happens to run.
    gc.collect()
    if config.http.tls is not None:
        ServerTLS(config.http.tls)
    host, port = parse_addr(config.http.addr)
    try:
        probe = make_socket(host, port, reuse_port=workers > 1)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
        raise OSError(e.errno, f"listen tcp {config.http.addr}: address already in use") from None
    port = probe.getsockname()[1]
    try:
        guard = claim_port(port)
    except OSError:
        probe.close()
        raise
    shown = host or "0.0.0.0"
    where = (
        config.storage.rootdirectory
        if config.storage.driver == "filesystem"
        else _describe_store(config)
    )
    log.info(
        "cargohold %s listening on %s://%s:%d (%d worker%s), storage: %s %s",
        __version__,
        "https" if config.http.tls is not None else "http",
        shown if ":" not in shown else f"[{shown}]",
        port,
        workers,
        "s" * (workers != 1),
        config.storage.driver,
        where,
    )
    if config.debug.addr and config.debug.prometheus_enabled:
        metrics.prepare()  # before any fork: the workers' shared metrics directory
    if workers <= 1:
        try:
            _tune_interpreter()
            probe.listen(1024)
            asyncio.run(run_worker(config, probe, 0))
            return 0
        finally:
            guard.close()
            metrics.cleanup()
    _start_workers(config, host, port, workers, probe)


def _start_workers(
    config: Config, host: str, port: int, workers: int, probe: socket.socket
) -> NoReturn:
    """Fork the workers, then become :mod:`cargohold.supervisor`, which restarts any that dies
    by running this same command line with ``--worker-index``."""
    os.environ["REGISTRY_HTTP_SECRET"] = config.http.secret  # replacements sign uploads alike
    # What the workers share besides storage (the login throttle's counts): a directory that
    # they, and replacements, find through the environment; the supervisor removes it.
    shared = tempfile.mkdtemp(prefix="cargohold-shared-")
    os.environ[SHARED_DIR_ENV] = shared
    # Objects made so far are never freed: keep the collector from touching (and so copying)
    # the pages the workers share with this process (serve() collected the registry it built
    # only to check the setup: frozen, it would live in every worker).
    gc.freeze()
    # A stop signal that arrives before the supervisor has its handlers would kill it and
    # orphan the workers: hold them back (the mask survives exec) until it is ready.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    # A reload (SIGHUP) before a process has its handler must not kill it: ignored until then
    # (the supervisor and the workers install theirs).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pids: list[int] = []
    for index in range(workers):
        pid = os.fork()
        if pid == 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            probe.close()
            code = 0
            try:
                _worker_main(config, host, port, index)
            except BaseException:
                logging.getLogger("cargohold").exception("worker %d failed", index)
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    probe.close()
    cleanup = metrics.created_dir()
    # Run as a script, without site-packages unless it must mark dead workers for Prometheus'
    # multiprocess mode: otherwise it needs only the standard library, and skipping site's
    # imports (and any .pth hooks) keeps it ~3 MiB smaller.
    flags = [] if os.environ.get(metrics.ENV) else ["-S"]
    argv = [sys.executable, *flags, supervisor.__file__]
    for index, pid in enumerate(pids):
        argv += ["--child", f"{pid}:{index}"]
    for directory in (cleanup, shared):
        if directory:
            argv += ["--cleanup", directory]
    if config.log.formatter == "json":
        argv.append("--json-log")
    command = [sys.executable, *sys.orig_argv[1:]]
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()  # exec discards whatever is still buffered
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [*argv, "--", *command])
    except OSError:
        for pid in pids:  # no supervisor after all: do not leave the workers behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise
