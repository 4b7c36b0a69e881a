#!/usr/bin/env python3
"""Cold pull storm through a pull-through mirror: cargohold against registry:2's proxy mode.

    python bench/mirror_storm.py [--clients 50] [--size-mib 256] [--reps 2] [--json OUT]

An upstream (the reference registry, Debian ``docker-registry``) holds one image whose layer is
``--size-mib`` of random bytes. For each repetition a *fresh* mirror with an empty cache is
started in front of it, with registry:2's own ``proxy:`` section (remoteurl only): cargohold
(``--workers 2``) or ``docker-registry``, interleaved A,B,B,A. Then ``--clients`` clients pull
the image at once (manifest by tag, then config and layer). Measured:

- **upstream bytes**: what the upstream sent, summed from its access log (the response sizes of
  its blob GETs), in units of one image;
- **wall time**: from the first request to the last client done;
- **CPU seconds** of the mirror (all its processes), the upstream and the clients, so that
  where the time went can be read off each run.

The clients (``--client``) are the same for both servers. ``splice`` (the default): every
client checks the size of every blob, and every ``--verify-every``-th also its sha256
(OpenSSL's, through hashlib); the others discard the body with ``splice(2)`` into /dev/null, so
the kernel moves page references and no byte is copied into a client. On this bench the 50
clients share two cores with the servers, where in production they are 50 other machines: a
client's CPU second is added to both servers' wall time alike and only hides the difference
between them (with ``curl`` per request and coreutils' ``sha256sum``, the clients took more CPU
than cargohold did). ``curl``: one ``curl`` process per request, ``curl | sha256sum`` for the
verifying ones, as the first measurements were taken.

Prints a table and writes JSON (``--json``). Exit status 0 when every run completed with every
client's layer verified, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import hashlib
import http.client
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from procs import Proc

REPO_ROOT = Path(__file__).resolve().parent.parent
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCESS_LINE = re.compile(r'"GET (/v2/[^ ]+/blobs/sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200 (\d+)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(root: Path, port: int, extra: str = "", level: str = "error") -> str:
    return (
        f"version: 0.1\nlog:\n  level: {level}\n  accesslog:\n    disabled: {level == 'error'}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )


def start(kind: str, workdir: Path, extra: str = "", level: str = "error") -> Proc:
    workdir.mkdir(parents=True)
    root = workdir / "storage"
    root.mkdir()
    port = free_port()
    cfg = workdir / "config.yml"
    cfg.write_text(config(root, port, extra, level))
    if kind == "cargohold":
        argv = [sys.executable, "-m", "cargohold", "serve", str(cfg), "--workers", "2"]
        env = {"PYTHONPATH": str(REPO_ROOT / "src")}
    else:
        argv = ["docker-registry", "serve", str(cfg)]
        env = {}
    proc = Proc(kind, argv, workdir, {**os.environ, **env}, log="server.log", port=port)
    try:
        proc.wait_port(port)
    except BaseException:
        proc.stop()
        raise
    return proc


async def push_image(url: str, repo: str, size: int) -> tuple[str, str]:
    """One layer of ``size`` random bytes; returns (layer digest, manifest digest)."""
    layer = os.urandom(size)
    config_blob = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": []}}).encode()  # fmt: skip
    async with aiohttp.ClientSession() as s:
        digests = []
        for data in (config_blob, layer):
            d = "sha256:" + hashlib.sha256(data).hexdigest()
            async with s.post(f"{url}/v2/{repo}/blobs/uploads/") as r:
                assert r.status == 202, await r.text()
                loc = r.headers["Location"]
            loc = loc if loc.startswith("http") else url + loc
            sep = "&" if "?" in loc else "?"
            async with s.put(f"{loc}{sep}digest={d}", data=data) as r:
                assert r.status == 201, await r.text()
            digests.append((d, len(data)))
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": digests[0][0], "size": digests[0][1]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digests[1][0], "size": digests[1][1]}],
        }).encode()  # fmt: skip
        async with s.put(
            f"{url}/v2/{repo}/manifests/latest",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        ) as r:
            assert r.status == 201, await r.text()
    return digests[1][0], "sha256:" + hashlib.sha256(manifest).hexdigest()


def _curl(url: str, *args: str) -> list[str]:
    return ["curl", "-sS", "--max-time", "1800", "-o", "-", *args, url]


def one_client(url: str, repo: str, verify: bool) -> tuple[int, bool]:
    """Pull the image with curl: the manifest by tag, then every blob. Sizes are checked for
    every client, the sha256 for ``verify`` clients."""
    accept = f"Accept: {OCI_MANIFEST}"
    r = subprocess.run(
        _curl(f"{url}/v2/{repo}/manifests/latest", "-H", accept), capture_output=True
    )
    if r.returncode != 0:
        return 0, False
    doc = json.loads(r.stdout)
    received, ok = 0, True
    for desc in [doc["config"], *doc["layers"]]:
        blob_url = f"{url}/v2/{repo}/blobs/{desc['digest']}"
        if verify:
            got, good = curl_sha256(blob_url, desc)
        else:
            argv = ["curl", "-sS", "--max-time", "1800", "-L", "-o", "/dev/null"]
            r = subprocess.run(
                [*argv, "-w", "%{size_download}", blob_url], capture_output=True, text=True
            )
            got = int(r.stdout.strip() or 0) if r.returncode == 0 else 0
            good = got == desc["size"]
        ok, received = ok and good, received + got
    return received, ok


def curl_sha256(blob_url: str, desc: dict[str, Any]) -> tuple[int, bool]:
    """One blob through ``curl | sha256sum``: (bytes, whether they hash to its digest)."""
    curl = subprocess.Popen(_curl(blob_url, "-L"), stdout=subprocess.PIPE)
    out = subprocess.run(["sha256sum"], stdin=curl.stdout, capture_output=True, text=True)
    assert curl.stdout is not None
    curl.stdout.close()
    ok = curl.wait() == 0 and "sha256:" + out.stdout.split()[0] == desc["digest"]
    return (desc["size"] if ok else 0), ok


def _get(url: str, path: str) -> tuple[socket.socket, int, int | None]:
    """A GET of ``path`` on a new blocking connection, its response head read (and nothing
    of the body): (socket, status, Content-Length or None)."""
    host, _, port = url.removeprefix("http://").partition(":")
    sock = socket.create_connection((host, int(port)))  # blocking: splice waits for data
    try:
        head = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode())
        peeked = b""
        while b"\r\n\r\n" not in peeked:
            before = len(peeked)
            peeked = sock.recv(65536, socket.MSG_PEEK)
            if len(peeked) == before:
                if not peeked:
                    raise ConnectionError("closed before the response head")
                time.sleep(0.001)  # the head split across segments: wait for the rest
        lines = sock.recv(peeked.index(b"\r\n\r\n") + 4).decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        length = fields.get("content-length")
        return sock, int(lines[0].split()[1]), int(length) if length is not None else None
    except BaseException:
        sock.close()
        raise


def splice_get(url: str, path: str) -> tuple[int, int]:
    """GET ``path`` and discard the body with ``splice`` (socket -> pipe -> /dev/null): the
    kernel moves page references, no byte is copied into this process. Returns (status, body
    bytes received); a body without Content-Length (chunked) counts as 0."""
    sock, status, remaining = _get(url, path)
    received = 0
    r, w = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ: up to 1 MiB a splice
        with open(os.devnull, "wb") as null:
            while remaining:
                n = os.splice(sock.fileno(), w, min(remaining, 1 << 20))
                if n == 0:
                    break
                remaining -= n
                received += n
                while n:
                    n -= os.splice(r, null.fileno(), n)
    finally:
        os.close(r)
        os.close(w)
        sock.close()
    return status, received


def hash_get(url: str, path: str, algorithm: str = "sha256") -> tuple[int, int, str]:
    """GET ``path`` and hash the body as it arrives (OpenSSL's sha256 through hashlib, which
    lets go of the GIL: two to three times cheaper than coreutils' ``sha256sum``). Returns
    (status, bytes, hex digest)."""
    sock, status, remaining = _get(url, path)
    hasher = hashlib.new(algorithm)
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    received = 0
    try:
        while remaining is None or received < remaining:
            want = len(buf) if remaining is None else min(len(buf), remaining - received)
            n = sock.recv_into(view, want)
            if n == 0:
                break
            hasher.update(view[:n])
            received += n
    finally:
        sock.close()
    return status, received, hasher.hexdigest()


def splice_client(url: str, repo: str, verify: bool) -> tuple[int, bool]:
    """The same pull with a client that costs as little CPU as can be: the manifest by a
    plain GET, then blobs discarded by :func:`splice_get` (sizes checked) or, for ``verify``
    clients, hashed by :func:`hash_get`. On this bench the 50 clients share the 2 cores with
    the servers; in production they are 50 other machines, so every client CPU second here
    is added to both servers' wall time alike and only hides the difference between them."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=1800)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/latest", headers={"Accept": OCI_MANIFEST})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            return 0, False
    finally:
        conn.close()
    doc = json.loads(body)
    received, ok = 0, True
    for desc in [doc["config"], *doc["layers"]]:
        path = f"/v2/{repo}/blobs/{desc['digest']}"
        if verify:
            status, got, hexd = hash_get(url, path)
            good = status == 200 and got == desc["size"] and f"sha256:{hexd}" == desc["digest"]
        else:
            status, got = splice_get(url, path)
            good = status == 200 and got == desc["size"]
        ok, received = ok and good, received + got
    return received, ok


CLIENTS = {"splice": splice_client, "curl": one_client}


def storm(url: str, repo: str, clients: int, every: int, kind: str) -> tuple[float, int, int]:
    client = CLIENTS[kind]
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        began = time.perf_counter()
        futures = [pool.submit(client, url, repo, i % every == 0) for i in range(clients)]
        results = [f.result() for f in futures]
        wall = time.perf_counter() - began
    return wall, sum(r[0] for r in results), sum(1 for r in results if r[1])


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group: a server and its
    workers (each server is started in a session of its own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the name: state, ppid, pgrp, ..., utime, stime (stat(5) fields 3-5, 14, 15).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def own_cpu() -> tuple[float, float]:
    """CPU seconds of this process (its client threads) and of its reaped children (curl,
    sha256sum)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def upstream_bytes(log: Path, offset: int) -> tuple[int, int]:
    with open(log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    gets = [int(m.group(2)) for m in ACCESS_LINE.finditer(text)]
    return sum(gets), len(gets)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--reps", type=int, default=2, help="runs per server (interleaved A,B,B,A)")
    p.add_argument("--verify-every", type=int, default=10, help="every Nth client hashes")
    p.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="splice",
        help="splice: blobs discarded in the kernel (the servers are measured); curl: one "
        "curl process per request (the clients' CPU is added to both sides' wall time)",
    )
    p.add_argument("--json", default=None)
    p.add_argument("--tmpdir", default=None)
    args = p.parse_args()
    if shutil.which("docker-registry") is None:
        print("docker-registry (the reference registry) is not installed", file=sys.stderr)
        return 1
    base = Path(tempfile.mkdtemp(prefix="mirror-storm-", dir=args.tmpdir))
    procs: list[Proc] = []
    runs: dict[str, list[dict[str, Any]]] = {"cargohold": [], "registry:2": []}
    failed = False
    try:
        up = start("reference", base / "upstream", level="info")
        procs.append(up)
        size = args.size_mib << 20
        asyncio.run(push_image(up.url, "library/storm", size))
        image_bytes = size + 100  # the config blob is ~100 bytes
        order = ["cargohold", "registry:2", "registry:2", "cargohold"] * ((args.reps + 1) // 2)
        order = order[: args.reps * 2]
        for i, which in enumerate(order):
            kind = "cargohold" if which == "cargohold" else "reference"
            mirror = start(kind, base / f"mirror-{i}", f"proxy:\n  remoteurl: {up.url}\n")
            procs.append(mirror)
            offset = up.log.stat().st_size
            cpu0 = (group_cpu(mirror.proc.pid), group_cpu(up.proc.pid), *own_cpu())
            wall, received, verified = storm(
                mirror.url, "library/storm", args.clients, args.verify_every, args.client
            )
            cpu1 = (group_cpu(mirror.proc.pid), group_cpu(up.proc.pid), *own_cpu())
            cpu = [round(b - a, 2) for a, b in zip(cpu0, cpu1, strict=True)]
            time.sleep(1.0)  # let the upstream's access log lines reach the file
            sent, gets = upstream_bytes(up.log, offset)
            mirror.stop()
            procs.remove(mirror)
            shutil.rmtree(mirror.workdir, ignore_errors=True)
            run = {
                "wall_s": round(wall, 3),
                "upstream_bytes": sent,
                "upstream_images": round(sent / image_bytes, 2),
                "upstream_blob_gets": gets,
                "client_bytes": received,
                "clients_verified": verified,
                # Where the time went: CPU seconds of the mirror (all its processes), of the
                # upstream, and of the clients (curl and sha256sum; the bench's own threads).
                "cpu_mirror_s": cpu[0],
                "cpu_upstream_s": cpu[1],
                "cpu_clients_s": cpu[3],
                "cpu_bench_s": cpu[2],
                "load_avg": os.getloadavg()[0],
            }
            runs[which].append(run)
            failed |= verified != args.clients
            print(f"{which:>10}: {json.dumps(run)}", flush=True)
    finally:
        for proc in procs:
            proc.stop()
        shutil.rmtree(base, ignore_errors=True)

    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[which])

    rows = [
        ("Upstream bytes (images)", "upstream_images", "<= 1.0 (cargohold)"),
        ("Upstream blob GETs", "upstream_blob_gets", "2 (cargohold)"),
        ("Wall time (s)", "wall_s", "ratio <= 0.5"),
    ]
    print("\n| Metric | cargohold | registry:2 | ratio | target |\n|---|---|---|---|---|")
    for label, key, target in rows:
        ours, theirs = med("cargohold", key), med("registry:2", key)
        ratio = f"{ours / theirs:.2f}x" if theirs else "-"
        print(f"| {label} | {ours:g} | {theirs:g} | {ratio} | {target} |")
    report = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "clients": args.clients,
        "size_mib": args.size_mib,
        "client": args.client,
        "runs": runs,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
