#!/usr/bin/env python3
"""Pull storm across replicas: 3 replicas on one S3 endpoint behind haproxy, cargohold against
registry:2 in the same topology, with S3 redirects off and on.

    python bench/replica_storm.py [--clients 200] [--layers 4] [--layer-mib 16] [--reps 1]
                                  [--replicas 3] [--workers 1] [--redirect off,on] [--redis]
                                  [--blobcache] [--null] [--s3 moto|rgw]
                                  [--json OUT]

For every run a fresh topology is started (all on loopback): one moto S3 server (``python -m
moto.server``) with a new bucket, optionally a redis-server (``--redis``: the replicas' blob
descriptor cache), ``--replicas`` replicas sharing the bucket and ``http.secret`` (cargohold
``serve --workers N`` or Debian's ``docker-registry``, with the same registry:2 config), and
haproxy in front (round robin per request, health-checked with ``GET /v2/``). One image
(``--layers`` layers of ``--layer-mib`` random bytes and a config) is pushed once through
haproxy, untimed; then ``--clients`` clients, released together, each pull the manifest by tag
and every blob through haproxy. With redirect on, blob GETs answer 307 to a presigned moto URL
and the client follows it, so moto itself serves the bytes: what the replicas then cost is what
the issue measures. Every client checks the manifest's digest and every blob's sha256 and size.

``--null`` adds a third server with redirect on, the null replica: no replica process at all,
haproxy itself answers the manifest and each blob GET's 307 to a URL presigned once at setup
(:func:`start_null`), so what is left is the cost of the storm without any registry in it.
``--s3 rgw`` puts a Ceph RADOS Gateway (``scripts/ceph-rgw.sh``, one cluster for the whole
bench, a bucket per run) where moto was, to see whether the answers depend on the S3 server.

Measured per run: the wall time from release to the last client done, and the replicas' total
RSS (every replica's process tree, summed) sampled from /proc every 100 ms during the storm: peak
and mean (PSS beside it), plus the replicas' CPU seconds. Runs go A,B,B,A per variant (A =
cargohold; A,B,C,C,B,A with the null replica); medians are compared as cargohold / registry:2
ratios against the targets (wall <= 0.7x, memory <= 0.5x). Exit status 0 when every client of
every run verified every blob, 1 otherwise.

The clients are threads of this process with blocking sockets: each reads bodies with
``readinto`` into its own 1 MiB buffer and hashes them in place (``hashlib`` releases the GIL for
large buffers), so the bytes are never copied into Python objects and the client's cost per
byte is the same whichever server answers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from client import OCI_MANIFEST, Http, Image, ServerError
from harness import free_port, install_signal_handlers, process_tree
from procs import Proc, read_rss_pss

REPO_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
REPO = "bench/storm"
SECRET = "replica-storm-shared-secret"
ACCESS_KEY, SECRET_KEY, REGION = "bench", "bench-secret", "us-east-1"
TARGETS = {"wall_s": 0.7, "rss_peak_mib": 0.5, "rss_mean_mib": 0.5}
# REPLICA_STORM_PROFILE=DIR: each cargohold replica runs under cProfile (main thread only) and
# writes DIR/replicaN-runM.prof when it stops, for finding where a replica's CPU goes.
PROFILE_DIR = os.environ.get("REPLICA_STORM_PROFILE")
PROFILED_SERVE = (
    "import cProfile, sys\n"
    "from cargohold.cli import main\n"
    "profile = cProfile.Profile()\n"
    "try:\n"
    "    profile.runcall(main, ['serve', sys.argv[1]])\n"
    "finally:\n"
    "    profile.dump_stats(sys.argv[2])\n"
)


# Each replica's local blob cache with --blobcache: room for the whole image.
BLOBDIRSIZE = "4GiB"


@dataclass(frozen=True)
class S3Target:
    """The bucket of one run and how to reach it."""

    endpoint: str
    bucket: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client(self) -> Any:
        """A botocore S3 client signing as the replicas do (path style, SigV4)."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


def replica_config(
    port: int, s3: S3Target, redirect: bool, redis: str | None, blobdir: str = ""
) -> str:
    """The registry:2 config both servers get: S3 on moto, shared secret, blob descriptor cache;
    with ``blobdir`` cargohold's local blob cache (``--blobcache``; registry:2 ignores it)."""
    return (
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        "storage:\n  s3:\n"
        f"    region: {REGION}\n    regionendpoint: {s3.endpoint}\n    forcepathstyle: true\n"
        f"    bucket: {s3.bucket}\n    accesskey: {s3.access_key}\n"
        f"    secretkey: {s3.secret_key}\n"
        "    secure: false\n    v4auth: true\n"
        "  delete:\n    enabled: true\n"
        f"  redirect:\n    disable: {'false' if redirect else 'true'}\n"
        f"  cache:\n    blobdescriptor: {'redis' if redis else 'inmemory'}\n"
        + (f"    blobdir: {blobdir}\n    blobdirsize: {BLOBDIRSIZE}\n" if blobdir else "")
        + f"http:\n  addr: 127.0.0.1:{port}\n  secret: {SECRET}\n"
        + (f"redis:\n  addr: {redis}\n" if redis else "")
    )


HAPROXY_HEAD = """global
    maxconn 4000

defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    option http-server-close
"""


def haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check inter 1s" for i, p in enumerate(backends)
    )
    return f"""{HAPROXY_HEAD}
frontend registry
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /v2/
    http-check expect status 200
{servers}
"""


@dataclass
class Topology:
    """moto (+ redis) + replicas + haproxy for one run; ``stop`` ends them all."""

    procs: list[Proc] = field(default_factory=list)
    replicas: list[Proc] = field(default_factory=list)
    port: int = 0
    s3: S3Target | None = None
    # Processes this run uses but does not own (a Ceph cluster shared by the runs): name ->
    # pid, for the CPU accounting only.
    shared: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


BUCKET = "storm"
S3_PROCESSES = ("moto", "rgw", "osd", "mon")  # whose CPU is the S3 server's


class Rgw:
    """A one-node Ceph cluster with a RADOS Gateway (``scripts/ceph-rgw.sh``), started once
    for the whole bench (it takes seconds and ~230 MB); every run gets a fresh bucket of its
    own, emptied and removed after the run (the object store is in RAM)."""

    SCRIPT = REPO_ROOT / "scripts" / "ceph-rgw.sh"

    def __init__(self) -> None:
        # A short path of its own: the daemons' admin sockets live under it (at most 107
        # bytes for a unix socket's path), wherever --tmpdir puts the runs.
        self.home = Path(tempfile.mkdtemp(prefix="storm-rgw-", dir="/tmp"))
        self.dir = self.home / "c"
        done = subprocess.run(
            ["bash", str(self.SCRIPT), "start", str(self.dir)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            if (self.dir / "run").is_dir():
                self.stop()  # the daemons it started before it gave up
            raise SystemExit(f"ceph-rgw.sh start failed:\n{done.stdout}\n{done.stderr}")
        env = dict(
            line.split("=", 1)
            for line in (self.dir / "env").read_text().splitlines()
            if "=" in line
        )
        self.endpoint = env["RGW_ENDPOINT"]
        self.access_key, self.secret_key = env["RGW_ACCESS_KEY"], env["RGW_SECRET_KEY"]

    def pids(self) -> dict[str, int]:
        return {
            name: int((self.dir / "run" / f"{name}.pid").read_text())
            for name in ("rgw", "osd", "mon")
        }

    def bucket(self, name: str) -> S3Target:
        target = S3Target(self.endpoint, name, self.access_key, self.secret_key)
        s3 = target.client()
        s3.create_bucket(Bucket=name)
        s3.close()
        return target

    def remove(self, target: S3Target) -> None:
        s3 = target.client()
        try:
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=target.bucket):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    s3.delete_objects(Bucket=target.bucket, Delete={"Objects": keys})
            uploads = s3.list_multipart_uploads(Bucket=target.bucket).get("Uploads", [])
            for up in uploads:
                s3.abort_multipart_upload(
                    Bucket=target.bucket, Key=up["Key"], UploadId=up["UploadId"]
                )
            s3.delete_bucket(Bucket=target.bucket)
        finally:
            s3.close()

    def stop(self) -> None:
        subprocess.run(["bash", str(self.SCRIPT), "stop", str(self.dir)], timeout=120, check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def start_s3(top: Topology, workdir: Path, rgw: Rgw | None) -> S3Target:
    """The run's bucket: on a fresh moto, or a fresh bucket on the shared RGW."""
    workdir.mkdir(parents=True, exist_ok=True)
    if rgw is not None:
        top.s3 = rgw.bucket(f"storm-{workdir.name}")
        top.shared = rgw.pids()
    else:
        top.s3 = S3Target(f"http://127.0.0.1:{start_moto(top, workdir)}", BUCKET)
    return top.s3


def start_moto(top: Topology, workdir: Path) -> int:
    """A fresh moto S3 server with an empty bucket ``BUCKET``; returns its port."""
    s3_port = free_port()
    moto = Proc(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        workdir,
    )
    top.procs.append(moto)
    moto.wait_ready(s3_port, "/moto-api/")
    req = urllib.request.Request(f"http://127.0.0.1:{s3_port}/{BUCKET}", method="PUT")
    urllib.request.urlopen(req, timeout=30).close()
    return s3_port


def start_haproxy(top: Topology, workdir: Path, config: str) -> None:
    hcfg = workdir / "haproxy.cfg"
    hcfg.write_text(config)
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    top.procs.append(Proc("haproxy", [haproxy, "-db", "-f", str(hcfg)], workdir))
    top.procs[-1].wait_ready(top.port, "/v2/")


def start_topology(
    kind: str,
    workdir: Path,
    replicas: int,
    workers: int,
    redirect: bool,
    redis: bool,
    blobcache: bool = False,
    rgw: Rgw | None = None,
) -> Topology:
    top = Topology()
    try:
        s3 = start_s3(top, workdir, rgw)
        redis_addr = None
        if redis:
            redis_port = free_port()
            top.procs.append(
                Proc(
                    "redis",
                    [
                        "redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    workdir,
                )
            )
            redis_addr = f"127.0.0.1:{redis_port}"
        ports = []
        for i in range(replicas):
            port = free_port()
            ports.append(port)
            cfg = workdir / f"replica{i}.yml"
            cfg.write_text(
                replica_config(
                    port,
                    s3,
                    redirect,
                    redis_addr,
                    str(workdir / f"replica{i}-blobs") if blobcache else "",
                )
            )
            env = dict(os.environ)
            env.pop("AWS_CA_BUNDLE", None)  # the reference panics with it set
            if kind == "cargohold" and PROFILE_DIR:
                out = Path(PROFILE_DIR) / f"replica{i}-{workdir.name}.prof"
                argv = [sys.executable, "-c", PROFILED_SERVE, str(cfg), str(out.resolve())]
                env["PYTHONPATH"] = str(REPO_ROOT / "src")
            elif kind == "cargohold":
                argv = [sys.executable, "-m", "cargohold", "serve", str(cfg)]
                argv += ["--workers", str(workers)] if workers != 1 else []
                env["PYTHONPATH"] = str(REPO_ROOT / "src")
            else:
                argv = ["docker-registry", "serve", str(cfg)]
            proc = Proc(f"replica{i}", argv, workdir, env)
            top.procs.append(proc)
            top.replicas.append(proc)
        for proc, port in zip(top.replicas, ports, strict=True):
            proc.wait_ready(port, "/v2/")
        top.port = free_port()
        start_haproxy(top, workdir, haproxy_config(top.port, ports))
    except BaseException:
        top.stop()
        raise
    return top


# --- the null replica: haproxy answers what a replica would ---------------------------------

# How long the null variant's presigned URLs stay valid: they are made once, before the run,
# and must outlive the slowest run (the replicas sign theirs per request, for 20 minutes).
NULL_PRESIGN_SECONDS = 24 * 3600


def blob_key(digest: str) -> str:
    """The object key registry:2 (and cargohold) keep a blob's bytes under, rootdirectory
    empty: what a replica's presigned URL points at."""
    algorithm, hexdigest = digest.split(":", 1)
    return f"docker/registry/v2/blobs/{algorithm}/{hexdigest[:2]}/{hexdigest}/data"


def _hap(value: str, log_format: bool = True) -> str:
    """``value`` as one double-quoted haproxy word: quotes and backslashes escaped, and ``%``
    doubled where the word is a log-format string (a ``return`` header's value is one)."""
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + (value.replace("%", "%%") if log_format else value) + '"'


def null_haproxy_config(
    port: int, manifest_file: Path, manifest_digest: str, locations: dict[str, str]
) -> str:
    """haproxy alone answering the storm's requests as a replica would: ``GET /v2/``, the
    manifest by tag (its exact bytes, content type and ``Docker-Content-Digest``), and each
    blob GET with a 307 to its presigned S3 URL; anything else 404s with a registry error."""
    api = "hdr Docker-Distribution-Api-Version registry/2.0"
    blobs = "\n".join(
        f"    http-request return status 307 hdr Location {_hap(url)} {api}"
        f" if {{ method GET }} {{ path /v2/{REPO}/blobs/{digest} }}"
        for digest, url in locations.items()
    )
    not_found = '{"errors":[{"code":"NOT_FOUND","message":"not served by the null replica"}]}'
    return f"""{HAPROXY_HEAD}
frontend registry
    bind 127.0.0.1:{port}
    http-request return status 200 content-type application/json string "{{}}" {api} if {{ method GET HEAD }} {{ path /v2/ }}
    http-request return status 200 content-type {_hap(OCI_MANIFEST, False)} file {_hap(str(manifest_file), False)} hdr Docker-Content-Digest {_hap(manifest_digest)} {api} if {{ method GET HEAD }} {{ path /v2/{REPO}/manifests/latest }}
{blobs}
    http-request return status 404 content-type application/json string {_hap(not_found)} {api}
"""  # noqa: E501


def start_null(workdir: Path, image: Image, rgw: Rgw | None = None) -> Topology:
    """moto + haproxy, no replica: the image's blobs are put into the bucket under the keys a
    replica would have written, their GET URLs presigned once with the replicas' credentials,
    region and endpoint (path-style, SigV4, as ``storage.s3`` with ``forcepathstyle`` and
    ``v4auth``), and haproxy answers the manifest and the 307s itself (see
    :func:`null_haproxy_config`)."""
    top = Topology()
    try:
        target = start_s3(top, workdir, rgw)
        s3 = target.client()
        locations = {}
        for digest, data in image.blobs:
            s3.put_object(Bucket=target.bucket, Key=blob_key(digest), Body=data)
            locations[digest] = s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": target.bucket, "Key": blob_key(digest)},
                ExpiresIn=NULL_PRESIGN_SECONDS,
            )
        s3.close()
        manifest = workdir / "manifest.json"
        manifest.write_bytes(image.manifest)
        top.port = free_port()
        start_haproxy(
            top, workdir, null_haproxy_config(top.port, manifest, image.digest, locations)
        )
        # haproxy must hand out each URL byte for byte (its config quoting and log-format
        # escaping in between), and a path it was not told of must not look like a blob.
        with Http("127.0.0.1", top.port, 30) as http:
            for digest, url in locations.items():
                resp = http.request("GET", f"/v2/{REPO}/blobs/{digest}", expect=(307,))
                if resp.header("Location") != url:
                    raise SystemExit(f"null: haproxy's Location {resp.header('Location')!r}")
            http.request("GET", f"/v2/{REPO}/blobs/sha256:{'0' * 64}", expect=(404,))
    except BaseException:
        top.stop()
        raise
    return top


# --- measurement ---------------------------------------------------------------------------


def _tree_pids(roots: list[int]) -> list[int]:
    return [pid for root in roots for pid in process_tree(root)]


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


class MemorySampler(threading.Thread):
    """Total RSS and PSS of the replicas' process trees, every ``interval`` seconds."""

    def __init__(self, roots: list[int], interval: float = 0.1) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.roots, self.interval = roots, interval
        self.rss: list[int] = []
        self.pss: list[int] = []
        self.peaks = [0] * len(roots)  # each replica's own peak RSS
        self._halt = threading.Event()

    def sample(self) -> None:
        rss = pss = 0
        for i, root in enumerate(self.roots):
            mine = 0
            for pid in process_tree(root):
                with contextlib.suppress(OSError, IndexError, ValueError):
                    r, p = read_rss_pss(pid)
                    rss, pss, mine = rss + r, pss + p, mine + r
            self.peaks[i] = max(self.peaks[i], mine)
        self.rss.append(rss)
        self.pss.append(pss)

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def finish(self) -> None:
        self._halt.set()
        self.join(10)
        self.sample()


@dataclass(frozen=True)
class Wanted:
    """What every client must receive, computed once (not per client, not in the timed part)."""

    manifest: str
    blobs: list[tuple[str, int]]


class Puller:
    """One client: its own connection to haproxy, one to the S3 endpoint it is redirected to."""

    def __init__(self, port: int, want: Wanted, timeout: float) -> None:
        self.http = Http("127.0.0.1", port, timeout)
        self.want, self.timeout = want, timeout
        self.buf = bytearray(MiB)
        self.redirected: dict[tuple[str, int], Http] = {}
        self.redirects = 0
        self.verified = 0
        # TCP connections opened during the pull (the one to haproxy is opened before the
        # release): the same for every server when each keeps its connections alive alike.
        self.connects = 0

    def close(self) -> None:
        self.http.close()
        for conn in self.redirected.values():
            conn.close()

    def _get_blob(self, conn: Http, path: str, hasher: Any, hops: int = 0) -> int:
        c = conn._conn
        self.connects += c.sock is None  # http.client connects on demand
        c.request("GET", path)
        raw = c.getresponse()
        if raw.status in (301, 302, 303, 307, 308) and hops < 3:
            location = raw.getheader("Location") or ""
            raw.read()
            if raw.will_close:
                c.close()
            parts = urlsplit(location)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ServerError(f"redirect off loopback: {location}")
            target = self.redirected.get((host, port))
            if target is None:
                target = self.redirected[(host, port)] = Http(host, port, self.timeout)
            self.redirects += 1
            rel = f"{parts.path}?{parts.query}" if parts.query else parts.path
            return self._get_blob(target, rel, hasher, hops + 1)
        if raw.status != 200:
            raise ServerError(f"GET {path}: {raw.status} {raw.read()[:300]!r}")
        view = memoryview(self.buf)
        total = 0
        while n := raw.readinto(view):
            hasher.update(view[:n])
            total += n
        if raw.will_close:
            c.close()
        return total

    def pull(self) -> None:
        self.connects += self.http._conn.sock is None
        resp = self.http.request(
            "GET", f"/v2/{REPO}/manifests/latest", headers={"Accept": OCI_MANIFEST}
        )
        if "sha256:" + hashlib.sha256(resp.body).hexdigest() != self.want.manifest:
            raise ServerError("wrong manifest")
        for digest, length in self.want.blobs:
            hasher = hashlib.sha256()
            size = self._get_blob(self.http, f"/v2/{REPO}/blobs/{digest}", hasher)
            if size != length or "sha256:" + hasher.hexdigest() != digest:
                raise ServerError(f"blob {digest}: {size} bytes, sha256 {hasher.hexdigest()}")
            self.verified += 1


MOTO_REQUEST = re.compile(rb'"([A-Z]+) (\S+) HTTP/[0-9.]+" (\d{3})')


def moto_requests(log: Path, offset: int) -> dict[str, int]:
    """The requests moto logged after ``offset`` (werkzeug writes one line each), by method
    and status, the presigned ones (the clients' redirected GETs) apart from the replicas'."""
    counts: dict[str, int] = {}
    with open(log, "rb") as f:
        f.seek(offset)
        for m in MOTO_REQUEST.finditer(f.read()):
            who = "presigned" if b"X-Amz-Signature=" in m.group(2) else "replicas"
            key = f"{who} {m.group(1).decode()} {m.group(3).decode()}"
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def storm(top: Topology, image: Image, clients: int, timeout: float) -> dict[str, Any]:
    want = Wanted(image.digest, [(d, len(b)) for d, b in image.blobs])
    pullers = [Puller(top.port, want, timeout) for _ in range(clients)]
    for p in pullers:
        p.http.connect()
    barrier = threading.Barrier(clients + 1)
    errors: list[str] = []

    def run(p: Puller) -> None:
        barrier.wait()
        try:
            p.pull()
        except (OSError, ServerError, http.client.HTTPException) as e:
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in pullers]
    for t in threads:
        t.start()
    roots = [r.proc.pid for r in top.replicas]
    others = {p.name: p.proc.pid for p in top.procs if p not in top.replicas} | top.shared
    moto = next((p for p in top.procs if p.name == "moto"), None)
    moto_offset = moto.log.stat().st_size if moto is not None else 0
    cpu_before = cpu_seconds(_tree_pids(roots))
    others_before = {name: cpu_seconds([pid]) for name, pid in others.items()}
    client_before = time.process_time()
    sampler = MemorySampler(roots)
    sampler.sample()
    rest = statistics.mean(sampler.rss) / MiB
    rest_each = list(sampler.peaks)  # one sample so far: each replica's RSS at rest
    sampler.start()
    # The S3 server's memory too: moto holds each object whole and copies it per GET, so how
    # many GETs it serves at once decides its RSS (and, through it, how fast it serves).
    s3_sampler = MemorySampler([pid for name, pid in others.items() if name in S3_PROCESSES])
    s3_sampler.start()
    barrier.wait()
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    wall = time.perf_counter() - began
    sampler.finish()
    s3_sampler.finish()
    cpu = cpu_seconds(_tree_pids(roots)) - cpu_before
    client_cpu = time.process_time() - client_before
    others_cpu = {name: cpu_seconds([pid]) - others_before[name] for name, pid in others.items()}
    hung = sum(t.is_alive() for t in threads)
    s3_requests: dict[str, int] = {}
    if moto is not None:  # moto logs a request after answering it: wait for the last lines
        redirected, settle = sum(p.redirects for p in pullers), time.monotonic() + 5
        while True:
            s3_requests = moto_requests(moto.log, moto_offset)
            logged = sum(n for k, n in s3_requests.items() if k.startswith("presigned GET"))
            if logged >= redirected or time.monotonic() > settle:
                break
            time.sleep(0.05)
    for p in pullers:
        p.close()
    blobs = len(want.blobs)
    return {
        "wall_s": round(wall, 3),
        "rss_peak_mib": round(max(sampler.rss) / MiB, 1),
        "rss_mean_mib": round(statistics.mean(sampler.rss) / MiB, 1),
        "pss_peak_mib": round(max(sampler.pss) / MiB, 1),
        "rss_peak_each_mib": [round(p / MiB, 1) for p in sampler.peaks],
        "s3_rss_peak_mib": round(max(s3_sampler.rss) / MiB, 1),
        "rss_rest_each_mib": [round(r / MiB, 1) for r in rest_each],
        "rss_rest_mib": round(rest, 1),
        "replica_cpu_s": round(cpu, 2),
        # Where the rest of the machine went: S3 (moto serves every byte either way: through
        # the replicas, or straight to the clients when redirected), haproxy, the clients.
        **{f"{name}_cpu_s": round(v, 2) for name, v in others_cpu.items()},
        "s3_cpu_s": round(sum(v for k, v in others_cpu.items() if k in S3_PROCESSES), 2),
        "client_cpu_s": round(client_cpu, 2),
        "clients_verified": sum(p.verified == blobs for p in pullers),
        "redirects": sum(p.redirects for p in pullers),
        "client_connects": sum(p.connects for p in pullers),
        # What the S3 server was asked during the storm (moto only; its log is per run).
        **({"s3_requests": s3_requests} if moto is not None else {}),
        "hung": hung,
        "errors": errors[:5],
    }


def push(port: int, image: Image, timeout: float) -> None:
    with Http("127.0.0.1", port, timeout) as http:
        image.push(http, REPO, "latest")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--layer-mib", type=float, default=16)
    p.add_argument("--reps", type=int, default=1, help="runs per server and variant (A,B,B,A)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--workers", type=int, default=1, help="cargohold worker processes per replica")
    p.add_argument("--redirect", default="off,on", help="variants to run: off, on or off,on")
    p.add_argument("--redis", action="store_true", help="a redis-server as blob descriptor cache")
    p.add_argument(
        "--blobcache",
        action="store_true",
        help="give each replica storage.cache.blobdir (cargohold's local blob cache)",
    )
    p.add_argument(
        "--null",
        action="store_true",
        help="a third server with redirect on: no replica, haproxy answers the manifest and "
        "the 307s itself (the storm without any registry in it); A,B,C,C,B,A",
    )
    p.add_argument(
        "--only", choices=("cargohold", "registry:2", "null"), help="one server (no ratios)"
    )
    p.add_argument(
        "--s3",
        choices=("moto", "rgw"),
        default="moto",
        help="the S3 server: a fresh moto per run, or one Ceph RGW (scripts/ceph-rgw.sh) for "
        "the whole bench with a fresh bucket per run",
    )
    p.add_argument("--timeout", type=float, default=600, help="bound on one storm (s)")
    p.add_argument("--json", default=None)
    p.add_argument("--tmpdir", default=None)
    args = p.parse_args()
    tools = ["docker-registry", "haproxy", *(["redis-server"] if args.redis else [])]
    tools += ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin"] if args.s3 == "rgw" else []
    for tool in tools:
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 1
    install_signal_handlers()
    variants = [v.strip() for v in args.redirect.split(",") if v.strip()]
    if not variants or set(variants) - {"on", "off"}:
        p.error("--redirect takes off, on or off,on")
    size = int(args.layer_mib * MiB)
    image = Image.build([size] * args.layers)
    base = Path(tempfile.mkdtemp(prefix="replica-storm-", dir=args.tmpdir))
    load_before = os.getloadavg()
    servers = ["cargohold", "registry:2"] + (["null"] if args.null or args.only == "null" else [])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        v: {which: [] for which in servers if which != "null" or v == "on"} for v in variants
    }
    failed = False
    rgw: Rgw | None = None
    try:
        rgw = Rgw() if args.s3 == "rgw" else None
        order = (servers + servers[::-1]) * args.reps  # A,B,B,A or A,B,C,C,B,A
        n = 0
        for variant in variants:
            for which in order[: args.reps * len(servers)]:
                if (args.only and which != args.only) or which not in runs[variant]:
                    continue  # the null replica exists only with redirect on
                workdir = base / f"run{n}"
                n += 1
                load = [round(x, 2) for x in os.getloadavg()]
                if which == "null":
                    top = start_null(workdir, image, rgw)  # the image is put into S3 directly
                else:
                    top = start_topology(
                        "cargohold" if which == "cargohold" else "reference",
                        workdir,
                        args.replicas,
                        args.workers,
                        variant == "on",
                        args.redis,
                        args.blobcache,
                        rgw,
                    )
                try:
                    if which != "null":
                        push(top.port, image, args.timeout)
                    run = storm(top, image, args.clients, args.timeout)
                finally:
                    top.stop()
                    if rgw is not None and top.s3 is not None:
                        rgw.remove(top.s3)
                    shutil.rmtree(workdir, ignore_errors=True)
                run["load_before"] = load
                run["load"] = [round(x, 2) for x in os.getloadavg()]
                runs[variant][which].append(run)
                failed |= run["clients_verified"] != args.clients
                print(f"redirect {variant:>3} {which:>10}: {json.dumps(run)}", flush=True)
    finally:
        if rgw is not None:
            rgw.stop()
        shutil.rmtree(base, ignore_errors=True)
    load_after = os.getloadavg()

    def med(variant: str, which: str, key: str) -> float:
        values = [r[key] for r in runs[variant].get(which, [])]
        return float(statistics.median(values)) if values else 0.0

    rows = [
        ("Wall time (s)", "wall_s"),
        ("Replicas' peak RSS (MiB)", "rss_peak_mib"),
        ("Replicas' mean RSS (MiB)", "rss_mean_mib"),
        ("Replicas' peak PSS (MiB)", "pss_peak_mib"),
        ("Replicas' RSS at rest (MiB)", "rss_rest_mib"),
        ("Replicas' CPU (s)", "replica_cpu_s"),
        ("S3's CPU (s)", "s3_cpu_s"),
        ("S3's peak RSS (MiB)", "s3_rss_peak_mib"),
        ("haproxy's CPU (s)", "haproxy_cpu_s"),
        ("Clients' CPU (s)", "client_cpu_s"),
    ]
    summary: dict[str, dict[str, Any]] = {}
    print(
        f"\n{args.clients} clients, {args.layers} x {args.layer_mib:g} MiB layers, "
        f"{args.replicas} replicas (cargohold --workers {args.workers}), "
        f"redis {'on' if args.redis else 'off'}, "
        f"blob cache {'on' if args.blobcache else 'off'}, S3 {args.s3}\n"
    )
    null = "null" in servers
    print(
        "| Redirect | Metric | cargohold | registry:2 | ratio | target |"
        + (" null | null / registry:2 |" if null else "")
    )
    print("|---|---|---:|---:|---:|---|" + ("---:|---:|" if null else ""))
    for variant in variants:
        for label, key in rows:
            ours, theirs = med(variant, "cargohold", key), med(variant, "registry:2", key)
            ratio = ours / theirs if theirs else None
            target = TARGETS.get(key)
            verdict = ""
            if target is not None and ratio is not None:
                verdict = f"<= {target}x {'PASS' if ratio <= target else 'FAIL'}"
            shown = f"{ratio:.2f}x" if ratio is not None else "-"
            line = f"| {variant} | {label} | {ours:g} | {theirs:g} | {shown} | {verdict} |"
            entry = {"cargohold": ours, "registry:2": theirs, "ratio": ratio, "target": target}
            if null and "null" in runs[variant]:
                floor = med(variant, "null", key)
                floor_ratio = floor / theirs if theirs else None
                shown = f"{floor_ratio:.2f}x" if floor_ratio is not None else "-"
                line += f" {floor:g} | {shown} |"
                entry |= {"null": floor, "null_ratio": floor_ratio}
            elif null:
                line += " - | - |"
            print(line)
            summary.setdefault(variant, {})[key] = entry
    print(
        f"\nload average before {', '.join(f'{x:.2f}' for x in load_before)}; "
        f"after {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "clients": args.clients,
        "layers": args.layers,
        "layer_mib": args.layer_mib,
        "replicas": args.replicas,
        "workers": args.workers,
        "redis": args.redis,
        "blobcache": args.blobcache,
        "s3": args.s3,
        "servers": servers,
        "load_before": load_before,
        "load_after": load_after,
        "runs": runs,
        "summary": summary,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
