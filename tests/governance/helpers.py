"""Helpers for the governance tests: audit trail lines, config rewrites, raw pushes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml
from support.servers import RegistryProcess, cargohold_env


def audit_lines(path: Path) -> list[dict[str, Any]]:
    """Every JSON line of an audit file (each line must parse on its own)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def find(lines: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [entry for entry in lines if all(entry.get(k) == v for k, v in match.items())]


def rewrite_config(server: RegistryProcess, change: dict[str, Any] | None, text: str = "") -> None:
    """Replace the server's config file atomically: top-level keys of ``change`` replaced
    (None removes them), or the raw ``text``."""
    if not text:
        config = yaml.safe_load(server.config_path.read_text())
        for key, value in (change or {}).items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        text = yaml.safe_dump(config, sort_keys=False)
    tmp = server.config_path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, server.config_path)


def hangup(server: RegistryProcess) -> None:
    """SIGHUP to the server's process (the supervisor with --workers)."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGHUP)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(
    server: RegistryProcess, repo: str, data: bytes, auth: Any = None
) -> requests.Response:
    """A monolithic blob upload: POST then PUT ?digest= with the body."""
    start = requests.post(f"{server.url}/v2/{repo}/blobs/uploads/", auth=auth, timeout=30)
    if start.status_code != 202:
        return start
    location = start.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    sep = "&" if "?" in url else "?"
    return requests.put(f"{url}{sep}digest={sha(data)}", data=data, auth=auth, timeout=30)


def image_config(tag: str) -> bytes:
    return json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()


def push_image(
    server: RegistryProcess, repo: str, tag: str, layers: list[bytes], auth: Any = None
) -> requests.Response:
    """Push config + layers + an OCI manifest by tag; the manifest PUT's response (or the
    first failing blob's)."""
    config = image_config(tag)
    for blob in (config, *layers):
        r = push_blob(server, repo, blob, auth)
        if r.status_code != 201:
            return r
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": sha(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": sha(layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    return requests.put(
        f"{server.url}/v2/{repo}/manifests/{tag}",
        data=json.dumps(manifest).encode(),
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        auth=auth,
        timeout=30,
    )


def error_of(response: requests.Response) -> dict[str, Any]:
    errors: list[dict[str, Any]] = response.json()["errors"]
    return errors[0]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m cargohold ARGS`` with this checkout's sources; must succeed."""
    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **cargohold_env()},
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"cargohold {args}: {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc
