"""How fast the web UI's first pages are on a big registry (issue 16: under 200 ms each).

``python bench/ui.py`` fills a fresh store *directly in registry:2's layout* (no pushes: that
would take an hour for 10,000 repositories) with ``--repos`` repositories of 1-3 tags each and
one repository ``big/many-tags`` with ``--tags`` tags, starts cargohold on it (one worker),
then times, with one client on loopback:

- the repositories page (first page, name order), searched, sorted by last push and by size;
- the big repository's tag page (newest first, by name, by size);
- the same through ``/ui/api/...`` (JSON).

Each request is repeated ``--reps`` times; the first (cold: nothing cached in the worker yet)
is reported separately from the median and the worst of the others (warm). Times are wall
clock on the client, so they include HTTP on loopback (~0.3 ms): an upper bound of the server
side. Nothing is asserted; the figures go into bench/RESULTS.md.

``fill_store`` is also used by the UI's unit tests (the 10,000-repository page).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _blob(root: Path, data: bytes) -> tuple[str, int]:
    hexd = hashlib.sha256(data).hexdigest()
    path = root / V2 / "blobs" / "sha256" / hexd[:2] / hexd / "data"
    if not path.exists():
        _put(path, data)
    return f"sha256:{hexd}", len(data)


def fill_store(
    root: Path, repos: int, big_tags: int, seed: int = 1, max_tags: int = 3
) -> list[str]:
    """Write ``repos`` repositories (``team-<i % 100>/app-<i>``) and ``big/many-tags`` with
    ``big_tags`` tags under ``root``; returns the repository names. Push times (tag link
    mtimes) are spread over the last year, so sorting by push has work to do."""
    rng = random.Random(seed)
    now = time.time()
    layers = [_blob(root, rng.randbytes(64) + bytes(i)) for i in range(64)]
    # the layer sizes a manifest declares are what sizes are computed from: make them varied
    declared = [(d, rng.randint(1 << 20, 400 << 20)) for d, _ in layers]
    names: list[str] = []

    def image(n: int) -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Env": [str(n)]}})
        config_d, config_size = _blob(root, config.encode())
        chosen = rng.sample(declared, rng.randint(1, 4))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_d, "size": config_size},
                "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in chosen],
            },
            separators=(",", ":"),
        ).encode()
        digest, _ = _blob(root, manifest)
        return digest

    # Repositories share a pool of images, as real ones share base images: the store then
    # holds ~3 small files per tag instead of a dozen, and fills in seconds.
    pool = [image(n) for n in range(256)]

    def link(path: Path, digest: str, mtime: float | None = None) -> None:
        _put(path, digest.encode())
        if mtime is not None:
            os.utime(path, (mtime, mtime))

    def repository(name: str, tags: list[str]) -> None:
        base = root / V2 / "repositories" / name
        for tag in tags:
            digest = rng.choice(pool)
            hexd = digest.split(":", 1)[1]
            link(base / "_manifests" / "revisions" / "sha256" / hexd / "link", digest)
            pushed = now - rng.uniform(0, 365 * 86400)
            link(base / "_manifests" / "tags" / tag / "current" / "link", digest, pushed)
            link(base / "_manifests" / "tags" / tag / "index" / "sha256" / hexd / "link", digest)
        names.append(name)

    for i in range(repos):
        repository(
            f"team-{i % 100:02d}/app-{i:05d}", [f"v{j}" for j in range(rng.randint(1, max_tags))]
        )
    repository("big/many-tags", [f"1.{j // 100}.{j % 100}" for j in range(big_tags)])
    return names


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[float, int, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
        status = response.status
    return (time.perf_counter() - start) * 1000, status, body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=10_000)
    parser.add_argument("--tags", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--tmpdir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the store goes (default /dev/shm: filling ~100,000 small files on a disk "
        "takes minutes; once filled, a disk store is served from the page cache alike)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cargohold-ui-bench-", dir=args.tmpdir) as tmp:
        root = Path(tmp) / "storage"
        started = time.perf_counter()
        fill_store(root, args.repos, args.tags)
        print(
            f"filled {args.repos} repositories + {args.tags} tags in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        port = _free_port()
        config = Path(tmp) / "config.yml"
        config.write_text(
            f"version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n"
            f"storage: {{filesystem: {{rootdirectory: {root}}}, delete: {{enabled: true}}}}\n"
            f"http: {{addr: '127.0.0.1:{port}', secret: bench}}\n"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        server = subprocess.Popen(
            [sys.executable, "-m", "cargohold", "serve", str(config)], env=env
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    _get(base + "/debug/health")
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("cargohold did not start") from None
                    time.sleep(0.1)
            cases = [
                ("repositories, by name", "/ui/"),
                ("repositories, search 'app-0999'", "/ui/?q=app-0999"),
                ("repositories, by last push", "/ui/?sort=pushed"),
                ("repositories, by size", "/ui/?sort=size"),
                ("repositories, last page", "/ui/?page=201"),
                (f"{args.tags} tags, newest first", "/ui/r/big/many-tags"),
                (f"{args.tags} tags, by name", "/ui/r/big/many-tags?sort=name"),
                (f"{args.tags} tags, by size", "/ui/r/big/many-tags?sort=size"),
                ("a tag", "/ui/r/big/many-tags/-/tag/1.0.0"),
                ("JSON repositories", "/ui/api/repositories"),
                ("JSON tags", "/ui/api/tags?repository=big/many-tags"),
            ]
            results = []
            for label, path in cases:
                times = []
                for _ in range(args.reps):
                    ms, status, _body = _get(base + path)
                    if status != 200:
                        raise RuntimeError(f"{path}: {status}")
                    times.append(ms)
                warm = times[1:]
                results.append(
                    {
                        "case": label,
                        "path": path,
                        "cold_ms": round(times[0], 1),
                        "median_ms": round(statistics.median(warm), 1),
                        "max_ms": round(max(warm), 1),
                    }
                )
                print(
                    f"{label:<36} cold {times[0]:7.1f} ms"
                    f"   median {statistics.median(warm):6.1f} ms"
                    f"   max {max(warm):6.1f} ms"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
