#!/usr/bin/env python3
"""Soak: cargohold (``--workers 2``) under a mixed push / pull / delete / online-GC load.

Client threads, as fast as they can, push small images (tags), pull them back (manifest by
tag, every blob, each checked against its digest), re-tag, untag and delete manifests, each
on repositories of its own, while an online garbage collection (``--delete-untagged``) runs
every ``--gc-interval`` seconds through the debug listener. The server's resident memory (its
whole process tree) is sampled every second. At the end the server is stopped and
``cargohold fsck --verify-blobs`` runs on the store.

It fails (exit 1) on any 5xx, any wrong byte pulled, any request that failed outright, a cache
of the server beyond its bound, or an fsck that is not clean. Memory: a worker's memory grows
while its bounded caches fill (cargohold.memory), which at the real bounds takes longer than
any soak (the blob verdicts: over an hour), so the server runs with every cache bound scaled by
``--cache-scale`` (1/64: full within the warm-up, the first quarter of the run) and what still
grows after warm-up is a leak. The resident memory of the server's process tree is *flat* when
its slope over the last half of the run is at most ``--max-slope`` MiB/min (1.0) and the RSS at
the end is within ``--max-growth`` (10 %) of the RSS after warm-up; judged (exit 1 if not) in
runs of five minutes or more, reported in shorter ones.

    python bench/soak.py                      # 10 minutes
    python bench/soak.py --duration 60 --json out.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client import OCI_MANIFEST, Http, Image, sha256_digest
from harness import Server, ServerSpec, free_port, install_signal_handlers

REPO_ROOT = Path(__file__).resolve().parent.parent
ANY = tuple(range(100, 600))


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter[int] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # 5xx, wrong bytes, broken requests

    def status(self, code: int, what: str) -> None:
        with self.lock:
            self.statuses[code] += 1
            if code >= 500 and len(self.failures) < 50:
                self.failures.append(f"{code} on {what}")

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 50:
                self.failures.append(what)

    def op(self, name: str) -> None:
        with self.lock:
            self.operations[name] += 1


@dataclass(frozen=True)
class Pushed:
    """What a client keeps of an image it pushed: enough to check a pull, not the bytes."""

    repo: str
    tag: str
    manifest: bytes
    digest: str
    blobs: tuple[str, ...]


class Client(threading.Thread):
    """Pushes, pulls, re-tags, untags and deletes on repositories of its own. It keeps at most
    ``live`` images and deletes the oldest beyond that, so the store (and every bounded cache
    of the server) reaches a steady size and memory growth after warm-up means a leak."""

    def __init__(
        self, index: int, server: Server, tally: Tally, stop: threading.Event, live: int
    ) -> None:
        super().__init__(daemon=True, name=f"soak-{index}")
        self.index = index
        self.server = server
        self.tally = tally
        self.stop_event = stop
        self.live = live
        self.rng = random.Random(index)
        self.images: list[Pushed] = []  # pullable by tag, oldest first
        self.counter = 0

    def call(self, http: Http, method: str, path: str, expect: tuple[int, ...], **kw: Any) -> Any:
        resp = http.request(method, path, expect=ANY, **kw)
        self.tally.status(resp.status, f"{method} {path}")
        if resp.status not in expect and resp.status < 500:
            self.tally.fail(f"{method} {path}: {resp.status} (expected {expect})")
        return resp

    def run(self) -> None:
        http = Http(self.server.host, self.server.port, timeout=120)
        try:
            while not self.stop_event.is_set():
                try:
                    self.step(http)
                except (OSError, http_errors) as e:
                    if self.stop_event.is_set():
                        return
                    self.tally.fail(f"{type(e).__name__}: {e}")
                    http.close()
                    http = Http(self.server.host, self.server.port, timeout=120)
        finally:
            http.close()

    def forget(self, gone: Pushed) -> None:
        self.images = [x for x in self.images if x.digest != gone.digest or x.repo != gone.repo]

    def step(self, http: Http) -> None:
        roll = self.rng.random()
        if len(self.images) > self.live:
            oldest = self.images[0]
            self.call(http, "DELETE", f"/v2/{oldest.repo}/manifests/{oldest.digest}", (202,))
            self.forget(oldest)
            self.tally.op("delete_manifest")
        elif roll < 0.35 or not self.images:
            self.push(http)
        elif roll < 0.75:
            self.pull(http)
        elif roll < 0.85:
            gone = self.rng.choice(self.images)
            self.call(http, "DELETE", f"/v2/{gone.repo}/manifests/{gone.digest}", (202,))
            self.forget(gone)
            self.tally.op("delete_manifest")
        elif roll < 0.93:
            gone = self.images.pop(self.rng.randrange(len(self.images)))
            self.call(http, "DELETE", f"/v2/{gone.repo}/manifests/{gone.tag}", (202,))
            self.tally.op("delete_tag")
        else:
            image = self.rng.choice(self.images)
            self.counter += 1
            tag = f"re{self.counter}"
            headers = {"Content-Type": OCI_MANIFEST}
            path = f"/v2/{image.repo}/manifests/{tag}"
            self.call(http, "PUT", path, (201,), headers=headers, body=image.manifest)
            self.images.append(Pushed(image.repo, tag, image.manifest, image.digest, image.blobs))
            self.tally.op("retag")

    def push(self, http: Http) -> None:
        self.counter += 1
        repo = f"soak/c{self.index}-{self.counter % 4}"
        tag = f"t{self.counter}"
        sizes = [self.rng.randint(4 << 10, 2 << 20) for _ in range(self.rng.randint(1, 3))]
        image = Image.build(sizes)
        for digest, data in image.blobs:
            resp = self.call(http, "POST", f"/v2/{repo}/blobs/uploads/", (202,))
            if resp.status != 202:
                return
            location = resp.headers["Location"]
            path = location.split("://", 1)[-1]
            path = path[path.index("/") :] if not location.startswith("/") else location
            sep = "&" if "?" in path else "?"
            headers = {"Content-Type": "application/octet-stream"}
            put = f"{path}{sep}digest={digest}"
            if self.call(http, "PUT", put, (201,), headers=headers, body=data).status != 201:
                return
        headers = {"Content-Type": OCI_MANIFEST}
        path = f"/v2/{repo}/manifests/{tag}"
        if self.call(http, "PUT", path, (201,), headers=headers, body=image.manifest).status == 201:
            blobs = tuple(d for d, _ in image.blobs)
            self.images.append(Pushed(repo, tag, image.manifest, image.digest, blobs))
        self.tally.op("push")

    def pull(self, http: Http) -> None:
        image = self.rng.choice(self.images)
        headers = {"Accept": OCI_MANIFEST}
        path = f"/v2/{image.repo}/manifests/{image.tag}"
        resp = self.call(http, "GET", path, (200,), headers=headers)
        if resp.status == 200 and resp.body != image.manifest:
            self.tally.fail(f"GET {image.repo}:{image.tag}: wrong manifest bytes")
        for digest in image.blobs:
            resp = self.call(http, "GET", f"/v2/{image.repo}/blobs/{digest}", (200,))
            if resp.status == 200 and sha256_digest(resp.body) != digest:
                self.tally.fail(f"GET {image.repo}@{digest}: wrong blob bytes")
        self.tally.op("pull")


http_errors = (http.client.HTTPException,)


def collect_garbage(debug: str, tally: Tally, stop: threading.Event, interval: float) -> None:
    host, port = debug.rsplit(":", 1)
    while not stop.wait(interval):
        conn = http.client.HTTPConnection(host, int(port), timeout=600)
        try:
            conn.request("POST", "/admin/gc?deleteuntagged=true&wait=true")
            resp = conn.getresponse()
            body = resp.read()
            tally.status(resp.status, "POST /admin/gc")
            if resp.status == 409:  # a repairing fsck (--online-fsck) holds the lease
                tally.op("gc_busy")
                continue
            if resp.status != 200:
                tally.fail(f"online GC answered {resp.status}: {body[:200]!r}")
            tally.op("gc")
        except (OSError, http.client.HTTPException) as e:
            if not stop.is_set():
                tally.fail(f"online GC: {e}")
        finally:
            conn.close()


def online_fsck(config: Path, env: dict[str, str], tally: Tally, stop: threading.Event,
                interval: float) -> None:
    """``cargohold fsck --repair`` on the live store now and then: it must find nothing (every
    in-flight state is a valid one) and, holding the lease, make collections wait (409)."""
    while not stop.wait(interval):
        proc = subprocess.run(
            [sys.executable, "-m", "cargohold", "fsck", str(config), "--repair", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode == 2 and "lease" in proc.stderr:
            tally.op("online_fsck_busy")  # a collection was running
        elif proc.returncode == 0:
            tally.op("online_fsck")
        else:
            try:
                problems = json.loads(proc.stdout).get("problems", [])
            except ValueError:
                problems = [proc.stderr[-500:]]
            tally.fail(f"online fsck exited {proc.returncode}: {problems[:3]}")


def cache_occupancy(debug: str) -> dict[str, dict[str, tuple[int, int]]]:
    """From the debug listener's /metrics: {cache: {pid: (entries, bound)}} of every worker,
    as each published it last (every 30 s: cargohold.admin.service)."""
    host, port = debug.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, dict[str, list[int]]] = {}
    for line in text.splitlines():
        for metric, slot in (("cargohold_cache_entries{", 0), ("cargohold_cache_limit{", 1)):
            if line.startswith(metric):
                labels, _, value = line[len(metric) :].rpartition("} ")
                fields = dict(kv.split("=", 1) for kv in labels.split(","))
                name, pid = fields["cache"].strip('"'), fields["pid"].strip('"')
                out.setdefault(name, {}).setdefault(pid, [0, 0])[slot] = int(float(value))
    return {name: {pid: (v[0], v[1]) for pid, v in by_pid.items()} for name, by_pid in out.items()}


def slope_mib_per_min(samples: list[tuple[float, int]], warmup: float) -> float | None:
    kept = [(t, rss) for t, rss in samples if t >= warmup]
    if len(kept) < 3:
        return None
    fit = statistics.linear_regression([t for t, _ in kept], [rss / 2**20 for _, rss in kept])
    return fit.slope * 60.0


def process_rss(server: Server) -> dict[int, float]:
    """MiB resident per process of the server's tree (the supervisor and each worker)."""
    out: dict[int, float] = {}
    for pid in server.pids():
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                out[pid] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
        except (OSError, IndexError, ValueError):
            continue
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-soak-", dir=args.tmpdir))
    debug = f"127.0.0.1:{free_port()}"
    src = str(REPO_ROOT / "src")
    env = {
        "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
        "REGISTRY_HTTP_DEBUG_ADDR": debug,
        "REGISTRY_STORAGE_MAINTENANCE_GC_GRACEPERIOD": f"{args.grace}s",
        "REGISTRY_STORAGE_MAINTENANCE_GC_SETTLE": "1s",
        "CARGOHOLD_CACHE_SCALE": repr(args.cache_scale),
    }
    argv = [sys.executable, "-m", "cargohold", "serve", "{config}", "--workers", str(args.workers)]
    server = Server(ServerSpec("cargohold", "cargohold", argv, env), workdir, 120.0)
    tally = Tally()
    stop = threading.Event()
    samples: list[tuple[float, int]] = []
    per_process: dict[str, dict[int, float]] = {}  # after warm-up and at the end, MiB by pid
    process_samples: dict[int, list[tuple[float, int]]] = {}  # pid -> (elapsed, bytes)
    caches: dict[str, dict[str, tuple[int, int]]] = {}
    warmup = args.duration / 4
    try:
        server.start(60.0)
        clients = [Client(i, server, tally, stop, args.live) for i in range(args.clients)]
        gc = threading.Thread(
            target=collect_garbage, args=(debug, tally, stop, args.gc_interval), daemon=True
        )
        checker = threading.Thread(
            target=online_fsck,
            args=(workdir / "config.yml", {"PYTHONPATH": env["PYTHONPATH"]}, tally, stop,
                  args.online_fsck),
            daemon=True,
        )  # fmt: skip
        started = time.monotonic()
        for c in clients:
            c.start()
        gc.start()
        if args.online_fsck > 0:
            checker.start()
        while (elapsed := time.monotonic() - started) < args.duration:
            samples.append((elapsed, server.rss_bytes()))
            for pid, mib in process_rss(server).items():
                process_samples.setdefault(pid, []).append((elapsed, int(mib * 2**20)))
            if "after_warmup" not in per_process and elapsed >= warmup:
                per_process["after_warmup"] = process_rss(server)
            server.check_alive()
            time.sleep(1.0)
        per_process["end"] = process_rss(server)
        try:
            caches = cache_occupancy(debug)
        except (OSError, http.client.HTTPException, ValueError) as e:
            tally.fail(f"reading the caches from /metrics: {e}")
        stop.set()
        for c in clients:
            c.join(timeout=120)
        gc.join(timeout=600)
        if checker.is_alive():
            checker.join(timeout=600)
        wall = time.monotonic() - started
    finally:
        stop.set()
        server.stop()
    fsck = subprocess.run(
        [sys.executable, "-m", "cargohold", "fsck", str(workdir / "config.yml"), "--json",
         "--verify-blobs"],
        env={**os.environ, "PYTHONPATH": env["PYTHONPATH"]},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )  # fmt: skip
    try:
        fsck_report = json.loads(fsck.stdout)
    except ValueError:
        fsck_report = {"clean": False, "error": fsck.stderr[-2000:]}
    shutil.rmtree(workdir, ignore_errors=True)
    overfull = [
        f"{name} in {pid}: {entries} > {bound}"
        for name, by_pid in caches.items()
        for pid, (entries, bound) in by_pid.items()
        if entries > bound
    ]
    if overfull:
        tally.fail(f"caches beyond their bound: {overfull}")
    # The online GC runs in a child process of a worker (registry/gcchild.py) that exits with
    # its peak: judged are the processes that live through the run (supervisor, workers); the
    # children are reported apart (how many, their largest RSS).
    tree_max = max((r for _, r in samples), default=0)
    lasting = set(per_process.get("after_warmup", {})) & set(per_process.get("end", {}))
    transient = {pid: got for pid, got in process_samples.items() if pid not in lasting}
    process_samples = {pid: got for pid, got in process_samples.items() if pid in lasting}
    if transient and process_samples:
        summed: dict[float, int] = {}
        for got in process_samples.values():
            for t, rss in got:
                summed[t] = summed.get(t, 0) + rss
        samples = sorted(summed.items())
    child_max = max((r for got in transient.values() for _, r in got), default=0)
    slope = slope_mib_per_min(samples, warmup)
    late_slope = slope_mib_per_min(samples, args.duration / 2)
    after_warmup = next((r for t, r in samples if t >= warmup), None)
    growth = (samples[-1][1] - after_warmup) / after_warmup if after_warmup and samples else None
    flat = (
        late_slope is not None
        and growth is not None
        and late_slope <= args.max_slope
        and growth <= args.max_growth
    )
    # Each process judged alone too: a growing worker can hide in the tree's total (the
    # online GC's worker grew +2 MiB/min while the other was flat, issue 17 point 10).
    by_process: dict[int, dict[str, Any]] = {}
    for pid, got in process_samples.items():
        p_late = slope_mib_per_min(got, args.duration / 2)
        p_start = next((r for t, r in got if t >= warmup), None)
        p_growth = (got[-1][1] - p_start) / p_start if p_start else None
        by_process[pid] = {
            "mib_after_warmup": round(p_start / 2**20, 1) if p_start else None,
            "mib_end": round(got[-1][1] / 2**20, 1),
            "mib_max": round(max(r for _, r in got) / 2**20, 1),
            "slope_last_half_mib_per_min": round(p_late, 2) if p_late is not None else None,
            "growth_after_warmup_pct": round(100 * p_growth, 1) if p_growth is not None else None,
            "flat": p_late is not None
            and p_growth is not None
            and p_late <= args.max_slope
            and p_growth <= args.max_growth,
        }
    flat = flat and all(p["flat"] for p in by_process.values())
    judged = args.duration >= 300
    requests_total = sum(tally.statuses.values())
    return {
        "duration_s": round(wall, 1),
        "workers": args.workers,
        "clients": args.clients,
        "live_images_per_client": args.live,
        "requests": requests_total,
        "requests_per_s": round(requests_total / wall, 1) if wall else None,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "operations": dict(tally.operations),
        "server_errors": sum(v for k, v in tally.statuses.items() if k >= 500),
        "failures": tally.failures,
        "rss_mib_first": round(samples[0][1] / 2**20, 1) if samples else None,
        "rss_mib_after_warmup": round(after_warmup / 2**20, 1) if after_warmup else None,
        "rss_mib_last": round(samples[-1][1] / 2**20, 1) if samples else None,
        "rss_mib_max": round(max(r for _, r in samples) / 2**20, 1) if samples else None,
        "rss_slope_mib_per_min": round(slope, 2) if slope is not None else None,
        "rss_slope_last_half_mib_per_min": round(late_slope, 2) if late_slope is not None else None,
        "rss_growth_after_warmup_pct": round(100 * growth, 1) if growth is not None else None,
        "rss_mib_by_process": per_process,
        "rss_judged_by_process": by_process,
        "rss_mib_tree_max_with_gc_children": round(tree_max / 2**20, 1),
        "gc_children": {"count": len(transient), "mib_max": round(child_max / 2**20, 1)},
        "memory_flat": flat,
        "memory_judged": judged,
        "cache_scale": args.cache_scale,
        "caches": caches,
        "fsck_clean": bool(fsck_report.get("clean")),
        "fsck": {
            k: fsck_report.get(k)
            for k in ("repositories", "manifests", "tags", "blobs", "blobsVerified", "problems")
        },
        "ok": not tally.failures and bool(fsck_report.get("clean")) and (flat or not judged),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    p.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    p.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    p.add_argument("--gc-interval", type=float, default=20.0, help="seconds between online GCs")
    p.add_argument("--live", type=int, default=40, help="images each client keeps (default 40)")
    p.add_argument(
        "--online-fsck",
        type=float,
        default=60.0,
        metavar="S",
        help="run cargohold fsck --repair on the live store every S seconds (0: never)",
    )
    p.add_argument(
        "--cache-scale",
        type=float,
        default=1 / 64,
        help="CARGOHOLD_CACHE_SCALE for the server (default 1/64: caches full after warm-up)",
    )
    p.add_argument("--max-slope", type=float, default=1.0, help="flat: MiB/min, last half")
    p.add_argument("--max-growth", type=float, default=0.10, help="flat: end vs after warm-up")
    p.add_argument("--grace", type=float, default=5.0, help="GC grace period, seconds")
    p.add_argument("--tmpdir", help="where the storage root goes (default: system temp)")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON here")
    args = p.parse_args(argv)
    install_signal_handlers()
    result = run(args)
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
