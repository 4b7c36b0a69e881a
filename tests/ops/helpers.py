"""Helpers for the operations tests: CLI runs, store inspection, image verification."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml
from support.images import MANIFEST_ACCEPT, TestImage
from support.servers import cargohold_env

V2 = "docker/registry/v2"


def run_cli(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``python -m cargohold ARGS`` with this checkout's sources."""
    env = {**os.environ, **cargohold_env()}
    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"cargohold {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def write_config(path: Path, root: Path, extra: dict[str, Any] | None = None) -> Path:
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:5000"},
    }
    for key, value in (extra or {}).items():
        config[key] = value
    path.write_text(yaml.safe_dump(config))
    return path


def blob_digests(root: Path) -> set[str]:
    """Digests of every blob data file in a store."""
    out = set()
    base = root / V2 / "blobs"
    for data in base.glob("*/*/*/data"):
        out.add(f"{data.parent.parent.parent.name}:{data.parent.name}")
    return out


def blob_sizes(root: Path) -> dict[str, int]:
    base = root / V2 / "blobs"
    return {
        f"{d.parent.parent.parent.name}:{d.parent.name}": d.stat().st_size
        for d in base.glob("*/*/*/data")
    }


def revision_digests(root: Path, repo: str) -> set[str]:
    base = root / V2 / "repositories" / repo / "_manifests" / "revisions"
    return {f"{p.parent.parent.name}:{p.parent.name}" for p in base.glob("*/*/link")}


def layer_links(root: Path, repo: str) -> set[str]:
    base = root / V2 / "repositories" / repo / "_layers"
    return {f"{p.parent.parent.name}:{p.parent.name}" for p in base.glob("*/*/link")}


def image_digests(image: TestImage) -> set[str]:
    return {b.digest for b in image.all_blobs()}


def age_store(root: Path, seconds: float = 86400.0) -> None:
    """Make every file of a store look ``seconds`` old (what a grace period compares with)."""
    when = os.path.getmtime(root) - seconds
    for dirpath, _dirs, files in os.walk(root / V2):
        for name in files:
            os.utime(os.path.join(dirpath, name), (when, when))


def verify_image(
    url: str, repo: str, reference: str, image: TestImage, session: requests.Session | None = None
) -> None:
    """Pull ``repo:reference`` blob by blob over HTTP and check every digest."""
    http = session or requests.Session()
    resp = http.get(
        f"{url}/v2/{repo}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT}, timeout=30
    )
    assert resp.status_code == 200, f"{repo}:{reference}: {resp.status_code} {resp.text[:300]}"
    assert resp.headers["Docker-Content-Digest"] == image.digest
    manifests = [resp.content]
    if image.is_multi_arch:
        manifests = []
        for child in json.loads(resp.content)["manifests"]:
            r = http.get(
                f"{url}/v2/{repo}/manifests/{child['digest']}",
                headers={"Accept": MANIFEST_ACCEPT},
                timeout=30,
            )
            assert r.status_code == 200, f"{repo}@{child['digest']}: {r.status_code}"
            assert "sha256:" + hashlib.sha256(r.content).hexdigest() == child["digest"]
            manifests.append(r.content)
    for data in manifests:
        doc = json.loads(data)
        for desc in [doc["config"], *doc["layers"]]:
            r = http.get(f"{url}/v2/{repo}/blobs/{desc['digest']}", timeout=30)
            assert r.status_code == 200, f"{repo} blob {desc['digest']}: {r.status_code}"
            assert "sha256:" + hashlib.sha256(r.content).hexdigest() == desc["digest"]


def wait_debug(debug: str, limit: float = 20.0) -> None:
    """The debug listener starts in worker 0 just after the API: wait until it answers."""
    import time

    deadline = time.monotonic() + limit
    while True:
        try:
            if requests.get(f"http://{debug}/debug/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)
