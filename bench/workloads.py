"""The benchmark workloads.

A workload has an untimed ``setup(server)`` (push fixtures, check that the server
answers correctly, warm up) and a ``measure(server)`` that runs one repetition and
returns ``{metric: value}``.  ``run.py`` calls them interleaved A,B,B,A,... so that
machine noise hits both servers alike.  Anything a workload needs per server is kept
in ``self._state[server.name]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import loadgen
from client import (
    OCI_MANIFEST,
    READ_BUFFER,
    Http,
    Image,
    ServerError,
    mount_blob,
    put_manifest,
    random_file,
    upload_file_chunked,
    upload_file_monolithic,
    write_random_file,
)
from harness import RssSampler, Server

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MB, GB = 10**6, 10**9

T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """Every size, count and duration the workloads use; ``FULL`` and ``QUICK`` below."""

    upload_bytes: int
    chunk_bytes: int
    download_bytes: int
    parallel_streams: int
    load_seconds: float
    warmup_seconds: float
    manifest_connections: int
    head_connections: int
    list_connections: int
    tags: int
    repos: int
    storm_uploads: int
    storm_upload_bytes: int
    pull_clients: int
    pull_layers: int
    pull_layer_bytes: int
    idle_seconds: float
    reps: int
    sync: bool  # flush dirty pages (os.sync) before every timed repetition

    def describe(self) -> dict[str, Any]:
        return self.__dict__.copy()


FULL = Sizes(
    upload_bytes=1 * GiB,
    chunk_bytes=16 * MiB,
    download_bytes=1 * GiB,
    parallel_streams=8,
    load_seconds=10,
    warmup_seconds=2,
    manifest_connections=64,
    head_connections=64,
    list_connections=16,
    tags=1000,
    repos=1000,
    storm_uploads=50,
    storm_upload_bytes=64 * MiB,
    pull_clients=100,
    pull_layers=3,
    pull_layer_bytes=20 * MiB,
    idle_seconds=1.0,
    reps=4,
    sync=True,
)

QUICK = Sizes(
    upload_bytes=4 * MiB,
    chunk_bytes=1 * MiB,
    download_bytes=8 * MiB,
    parallel_streams=8,
    load_seconds=1,
    warmup_seconds=0,
    manifest_connections=64,
    head_connections=64,
    list_connections=16,
    tags=120,
    repos=120,
    storm_uploads=50,
    storm_upload_bytes=256 * KiB,
    pull_clients=100,
    pull_layers=3,
    pull_layer_bytes=256 * KiB,
    idle_seconds=0.3,
    reps=2,
    sync=False,
)

IMAGE_REPO = "bench/image"
SETUP_THREADS = 8


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def run_clients(
    n: int,
    prepare: Callable[[int], T],
    work: Callable[[int, T], None],
    timeout: float,
) -> float:
    """Run ``work`` in ``n`` threads released together; return the wall time of the work.

    ``prepare`` (e.g. opening the connection) runs before the common start line and is
    not timed.  The first error of any client is raised.
    """
    barrier = threading.Barrier(n + 1, timeout=timeout)
    ends: list[float] = [0.0] * n
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            state = prepare(i)
            barrier.wait()
            work(i, state)
            ends[i] = time.perf_counter()
        except threading.BrokenBarrierError:
            pass
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    start = time.perf_counter()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise ServerError(f"{n} clients did not finish within {timeout:.0f}s")
    if barrier.broken:
        raise ServerError("clients could not start together")
    return max(ends) - start


def parallel_setup(server: Server, items: Iterable[T], fn: Callable[[Http, T], None]) -> None:
    """Apply ``fn`` to every item over a few kept-alive connections (untimed setup)."""
    local = threading.local()
    conns: list[Http] = []
    lock = threading.Lock()

    def call(item: T) -> None:
        http = getattr(local, "http", None)
        if http is None:
            http = local.http = server.http()
            with lock:
                conns.append(http)
        fn(http, item)

    try:
        with ThreadPoolExecutor(SETUP_THREADS) as pool:
            for _ in pool.map(call, items):
                pass
    finally:
        for http in conns:
            http.close()


class Workload:
    name = ""
    metrics: tuple[str, ...] = ()  # the metrics measure() returns, when not just (name,)

    def __init__(self, sizes: Sizes, scratch: Path, fixtures: Fixtures) -> None:
        self.sizes = sizes
        self.scratch = scratch
        self.fixtures = fixtures
        self._state: dict[str, Any] = {}

    @classmethod
    def produces(cls) -> tuple[str, ...]:
        return cls.metrics or (cls.name,)

    def describe(self) -> str:
        """One line for the report: what a repetition does."""
        return self.name

    def setup(self, server: Server) -> None:
        """Untimed preparation, once per server before the first repetition."""

    def measure(self, server: Server) -> dict[str, float]:
        raise NotImplementedError


class Fixtures:
    """Things several workloads share, pushed at most once per server."""

    def __init__(self, sizes: Sizes, scratch: Path) -> None:
        self.sizes = sizes
        self.scratch = scratch
        self.image = Image.build([4 * KiB, 32 * KiB])
        self._done: set[tuple[str, str]] = set()
        self._download: tuple[Path, str] | None = None

    def image_repo(self, server: Server) -> str:
        """A small image (config + 2 layers + OCI manifest) at ``bench/image:latest``."""
        if (server.name, "image") not in self._done:
            with server.http() as http:
                self.image.push(http, IMAGE_REPO, "latest")
            self._done.add((server.name, "image"))
        return IMAGE_REPO

    def download_blob(self, server: Server) -> tuple[str, str, int]:
        """(repo, digest, size) of a large random blob, pushed and verified once per server."""
        size = self.sizes.download_bytes
        repo = "bench/download"
        if self._download is None:
            path = self.scratch / "download.bin"
            self._download = (path, write_random_file(path, size))
        path, digest = self._download
        if (server.name, "download") not in self._done:
            fd = os.open(path, os.O_RDONLY)
            try:
                with server.http() as http:
                    upload_file_monolithic(http, repo, fd, size, digest)
                    h = hashlib.sha256()
                    got = http.download(
                        f"/v2/{repo}/blobs/{digest}", bytearray(READ_BUFFER), hasher=h
                    )
            finally:
                os.close(fd)
            if got != size or "sha256:" + h.hexdigest() != digest:
                raise ServerError(f"downloaded blob differs from the pushed one ({got} bytes)")
            self._done.add((server.name, "download"))
        return repo, digest, size


# --- memory --------------------------------------------------------------------------------


class RssIdle(Workload):
    name = "rss_idle"
    metrics = ("rss_idle", "pss_idle")

    def describe(self) -> str:
        return (
            f"RSS and PSS of the server's process tree at rest, sampled for "
            f"{self.sizes.idle_seconds} s"
        )

    def measure(self, server: Server) -> dict[str, float]:
        samples: list[int] = []
        pss: list[int] = []
        deadline = time.monotonic() + self.sizes.idle_seconds
        while time.monotonic() < deadline:
            samples.append(server.rss_bytes())
            pss.append(server.pss_bytes())
            time.sleep(0.05)
        return {
            "rss_idle": statistics.median(samples) / MiB,
            "pss_idle": statistics.median(pss) / MiB,
        }


# --- uploads -------------------------------------------------------------------------------


class UploadMonolithic(Workload):
    name = "upload_monolithic"

    def describe(self) -> str:
        return (
            f"POST + one PUT ?digest= of {human_bytes(self.sizes.upload_bytes)} fresh random data"
        )

    def _upload(self, http: Http, repo: str, fd: int, size: int, digest: str) -> None:
        upload_file_monolithic(http, repo, fd, size, digest)

    def measure(self, server: Server) -> dict[str, float]:
        size = self.sizes.upload_bytes
        path = self.scratch / f"{self.name}.bin"
        digest = write_random_file(path, size)
        if self.sizes.sync:  # the fresh data is not written back during the timed run
            os.sync()
        fd = os.open(path, os.O_RDONLY)
        try:
            with server.http() as http:
                http.connect()
                start = time.perf_counter()
                self._upload(http, f"bench/{self.name}", fd, size, digest)
                elapsed = time.perf_counter() - start
        finally:
            os.close(fd)
            path.unlink()
            server.drop_blob_data(digest)
        return {self.name: size / elapsed / MB}


class UploadChunked(UploadMonolithic):
    name = "upload_chunked"

    def describe(self) -> str:
        return (
            f"POST, PATCH {human_bytes(self.sizes.chunk_bytes)} chunks with Content-Range "
            f"following Location, PUT ?digest=; {human_bytes(self.sizes.upload_bytes)} in all"
        )

    def _upload(self, http: Http, repo: str, fd: int, size: int, digest: str) -> None:
        upload_file_chunked(http, repo, fd, size, digest, self.sizes.chunk_bytes)


# --- downloads -----------------------------------------------------------------------------


class DownloadSingle(Workload):
    name = "download_single"

    def describe(self) -> str:
        return f"GET of one {human_bytes(self.sizes.download_bytes)} blob, one stream"

    def setup(self, server: Server) -> None:
        self.fixtures.download_blob(server)

    def measure(self, server: Server) -> dict[str, float]:
        repo, digest, size = self.fixtures.download_blob(server)
        buf = bytearray(READ_BUFFER)
        with server.http() as http:
            http.connect()
            start = time.perf_counter()
            got = http.discard(f"/v2/{repo}/blobs/{digest}", buf)
            elapsed = time.perf_counter() - start
        if got != size:
            raise ServerError(f"got {got} of {size} bytes")
        return {self.name: size / elapsed / GB}


class DownloadParallel(DownloadSingle):
    name = "download_parallel"

    def describe(self) -> str:
        n = self.sizes.parallel_streams
        return f"{n} concurrent GETs of the same {human_bytes(self.sizes.download_bytes)} blob"

    def measure(self, server: Server) -> dict[str, float]:
        repo, digest, size = self.fixtures.download_blob(server)
        n = self.sizes.parallel_streams
        conns: list[Http] = []

        def prepare(_: int) -> tuple[Http, bytearray]:
            http = server.http()
            conns.append(http)
            http.connect()
            return http, bytearray(READ_BUFFER)

        def work(_: int, state: tuple[Http, bytearray]) -> None:
            http, buf = state
            got = http.discard(f"/v2/{repo}/blobs/{digest}", buf)
            if got != size:
                raise ServerError(f"got {got} of {size} bytes")

        try:
            wall = run_clients(n, prepare, work, timeout=server.request_timeout * 4)
        finally:
            for http in conns:
                http.close()
        return {self.name: n * size / wall / GB}


# --- request rates -------------------------------------------------------------------------


class ManifestGet(Workload):
    name = "manifest_get"

    def describe(self) -> str:
        c = self.sizes.manifest_connections
        return f"wrk -t2 -c{c}: GET /v2/{IMAGE_REPO}/manifests/latest with Accept: OCI manifest"

    def _path(self, server: Server) -> str:
        return f"/v2/{self.fixtures.image_repo(server)}/manifests/latest"

    def setup(self, server: Server) -> None:
        path = self._path(server)
        with server.http() as http:
            resp = http.request("GET", path, headers={"Accept": OCI_MANIFEST})
        image = self.fixtures.image
        if resp.body != image.manifest:
            raise ServerError(f"GET {path} returned a different manifest")
        if resp.headers.get("Content-Type", "").split(";")[0] != OCI_MANIFEST:
            raise ServerError(f"GET {path}: Content-Type {resp.headers.get('Content-Type')!r}")
        if resp.headers.get("Docker-Content-Digest") != image.digest:
            raise ServerError(f"GET {path}: wrong Docker-Content-Digest")
        if self.sizes.warmup_seconds:
            self._load(server, self.sizes.warmup_seconds)

    def _load(self, server: Server, seconds: float) -> loadgen.LoadResult:
        return loadgen.wrk(
            server.url(self._path(server)),
            seconds=seconds,
            connections=self.sizes.manifest_connections,
            headers={"Accept": OCI_MANIFEST},
        ).check(self.name)

    def measure(self, server: Server) -> dict[str, float]:
        return {self.name: self._load(server, self.sizes.load_seconds).rate}


class BlobHead(Workload):
    name = "blob_head"

    def describe(self) -> str:
        c = self.sizes.head_connections
        return f"ab -i -k, 2 x {c // 2} connections: HEAD /v2/{IMAGE_REPO}/blobs/<layer>"

    def _path(self, server: Server) -> str:
        digest = self.fixtures.image.blobs[-1][0]
        return f"/v2/{self.fixtures.image_repo(server)}/blobs/{digest}"

    def setup(self, server: Server) -> None:
        path = self._path(server)
        with server.http() as http:
            resp = http.request("HEAD", path)
        size = len(self.fixtures.image.layers[-1])
        if resp.headers.get("Content-Length") != str(size):
            raise ServerError(f"HEAD {path}: Content-Length {resp.headers.get('Content-Length')}")
        if self.sizes.warmup_seconds:
            self._load(server, self.sizes.warmup_seconds)

    def _load(self, server: Server, seconds: float) -> loadgen.LoadResult:
        return loadgen.ab_head(
            server.url(self._path(server)),
            seconds=seconds,
            connections=self.sizes.head_connections,
        ).check(self.name)

    def measure(self, server: Server) -> dict[str, float]:
        return {self.name: self._load(server, self.sizes.load_seconds).rate}


class TagsList(Workload):
    name = "tags_list"
    repo = "bench/tags"

    def describe(self) -> str:
        c = self.sizes.list_connections
        return f"wrk -t2 -c{c}: GET /v2/{self.repo}/tags/list, {self.sizes.tags} tags"

    def setup(self, server: Server) -> None:
        image = self.fixtures.image
        source = self.fixtures.image_repo(server)
        with server.http() as http:
            for digest, data in image.blobs:
                mount_blob(http, self.repo, digest, source, data)
        tags = [f"v{i:04d}" for i in range(self.sizes.tags)]
        parallel_setup(
            server, tags, lambda http, tag: put_manifest(http, self.repo, tag, image.manifest)
        )
        with server.http() as http:
            listed = json.loads(http.request("GET", f"/v2/{self.repo}/tags/list").body)
        if sorted(listed.get("tags") or []) != tags:
            raise ServerError(
                f"tags/list returned {len(listed.get('tags') or [])} of {len(tags)} tags"
            )
        if self.sizes.warmup_seconds:
            self._load(server, self.sizes.warmup_seconds)

    def _load(self, server: Server, seconds: float) -> loadgen.LoadResult:
        return loadgen.wrk(
            server.url(f"/v2/{self.repo}/tags/list"),
            seconds=seconds,
            connections=self.sizes.list_connections,
        ).check(self.name)

    def measure(self, server: Server) -> dict[str, float]:
        return {self.name: self._load(server, self.sizes.load_seconds).rate}


class Catalog(Workload):
    name = "catalog"
    path = "/v2/_catalog?n=100"

    def describe(self) -> str:
        c = self.sizes.list_connections
        return f"wrk -t2 -c{c}: GET {self.path}, {self.sizes.repos} repositories"

    def setup(self, server: Server) -> None:
        image = self.fixtures.image
        source = self.fixtures.image_repo(server)

        def make_repo(http: Http, i: int) -> None:
            repo = f"bench/catalog/r{i:04d}"
            for digest, data in image.blobs:
                mount_blob(http, repo, digest, source, data)
            put_manifest(http, repo, "latest", image.manifest)

        parallel_setup(server, range(self.sizes.repos), make_repo)
        with server.http() as http:
            listed = json.loads(http.request("GET", self.path).body)
        got = listed.get("repositories") or []
        if len(got) != 100 or got != sorted(got):
            raise ServerError(f"{self.path} returned {len(got)} repositories")
        if self.sizes.warmup_seconds:
            self._load(server, self.sizes.warmup_seconds)

    def _load(self, server: Server, seconds: float) -> loadgen.LoadResult:
        return loadgen.wrk(
            server.url(self.path),
            seconds=seconds,
            connections=self.sizes.list_connections,
        ).check(self.name)

    def measure(self, server: Server) -> dict[str, float]:
        return {self.name: self._load(server, self.sizes.load_seconds).rate}


# --- storms --------------------------------------------------------------------------------


class UploadStorm(Workload):
    name = "upload_storm"
    metrics = ("upload_storm_peak_rss", "upload_storm_peak_pss", "upload_storm_wall")

    def describe(self) -> str:
        n, size = self.sizes.storm_uploads, human_bytes(self.sizes.storm_upload_bytes)
        return f"{n} concurrent monolithic uploads of {size} each; peak RSS/PSS every 50 ms"

    def measure(self, server: Server) -> dict[str, float]:
        n, size = self.sizes.storm_uploads, self.sizes.storm_upload_bytes
        # One random body per repetition; each upload appends its own 16 bytes so that
        # every blob is distinct, and the digests cost a single pass over the body.
        tail = 16
        path = self.scratch / f"{self.name}.bin"
        h = random_file(path, size - tail)
        nonce = os.urandom(8)
        trailers = [nonce + i.to_bytes(8, "big") for i in range(n)]
        digests = []
        for t in trailers:
            d = h.copy()
            d.update(t)
            digests.append("sha256:" + d.hexdigest())
        if self.sizes.sync:  # the fresh data is not written back during the timed run
            os.sync()
        fd = os.open(path, os.O_RDONLY)
        conns: list[Http] = []

        def prepare(_: int) -> Http:
            http = server.http()
            conns.append(http)
            http.connect()
            return http

        def work(i: int, http: Http) -> None:
            upload_file_monolithic(
                http, f"bench/storm/u{i:02d}", fd, size, digests[i], trailer=trailers[i]
            )

        try:
            with RssSampler(server) as rss:
                wall = run_clients(n, prepare, work, timeout=server.request_timeout * 4)
        finally:
            for http in conns:
                http.close()
            os.close(fd)
            path.unlink()
            for digest in digests:
                server.drop_blob_data(digest)
        return {
            "upload_storm_peak_rss": rss.peak / MiB,
            "upload_storm_peak_pss": rss.peak_pss / MiB,
            "upload_storm_wall": wall,
        }


class PullStorm(Workload):
    name = "pull_storm"
    metrics = ("pull_storm_wall", "pull_storm_peak_rss", "pull_storm_peak_pss")
    repo = "bench/pull"

    def describe(self) -> str:
        s = self.sizes
        return (
            f"{s.pull_clients} concurrent clients, each GETs the manifest and "
            f"{s.pull_layers} x {human_bytes(s.pull_layer_bytes)} layers"
        )

    def setup(self, server: Server) -> None:
        if "image" not in self._state:
            s = self.sizes
            self._state["image"] = Image.build([s.pull_layer_bytes] * s.pull_layers)
        with server.http() as http:
            self._state["image"].push(http, self.repo, "latest")

    def measure(self, server: Server) -> dict[str, float]:
        image: Image = self._state["image"]
        layers = [(d, len(b)) for d, b in image.blobs[1:]]
        conns: list[Http] = []

        def prepare(_: int) -> tuple[Http, bytearray]:
            http = server.http()
            conns.append(http)
            http.connect()
            return http, bytearray(256 * KiB)

        def work(_: int, state: tuple[Http, bytearray]) -> None:
            http, buf = state
            resp = http.request(
                "GET", f"/v2/{self.repo}/manifests/latest", headers={"Accept": OCI_MANIFEST}
            )
            if resp.body != image.manifest:
                raise ServerError("pull storm: wrong manifest")
            for digest, size in layers:
                got = http.discard(f"/v2/{self.repo}/blobs/{digest}", buf)
                if got != size:
                    raise ServerError(f"pull storm: got {got} of {size} bytes")

        try:
            with RssSampler(server) as rss:
                wall = run_clients(
                    self.sizes.pull_clients, prepare, work, timeout=server.request_timeout * 4
                )
        finally:
            for http in conns:
                http.close()
        return {
            "pull_storm_wall": wall,
            "pull_storm_peak_rss": rss.peak / MiB,
            "pull_storm_peak_pss": rss.peak_pss / MiB,
        }


WORKLOADS: tuple[type[Workload], ...] = (
    RssIdle,
    UploadMonolithic,
    UploadChunked,
    DownloadSingle,
    DownloadParallel,
    ManifestGet,
    BlobHead,
    TagsList,
    Catalog,
    UploadStorm,
    PullStorm,
)
