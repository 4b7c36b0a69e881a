"""The command line as a user meets it: version, help, the no-config start, bad configs."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from cargohold import __version__
from tests.support.servers import free_port

SRC = str(Path(__file__).resolve().parents[1] / "src")


def cargohold(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": SRC, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "cargohold", *args],
        capture_output=True, text=True, timeout=60, env=full_env, check=False,
    )  # fmt: skip


def test_version_and_help() -> None:
    r = cargohold("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cargohold {__version__}"
    r = cargohold("--help")
    assert r.returncode == 0
    for command in ("serve", "cert", "htpasswd", "import", "export", "garbage-collect", "du"):
        assert command in r.stdout, command
    r = cargohold("serve", "--help")
    assert "--workers" in r.stdout and "--root" in r.stdout and "--addr" in r.stdout


def test_serve_without_config_uses_and_prints_a_local_data_dir(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_DATA_HOME": str(tmp_path)}
    env = {k: v for k, v in env.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cargohold", "serve", "--addr", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "server did not start"
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        assert r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        data = b"stored where it said"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        up = requests.post(
            f"http://127.0.0.1:{port}/v2/cli/test/blobs/uploads/?digest={digest}",
            data=data, timeout=10,
        )  # fmt: skip
        assert up.status_code == 201
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    root = tmp_path / "cargohold"
    assert str(root) in out  # the start line names the data directory
    blob = root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    assert blob.read_bytes() == data
    assert proc.returncode == 0  # a clean stop on SIGTERM


def test_bad_config_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /x\n"
                   "  delete:\n    enabled: maybe\n")  # fmt: skip
    r = cargohold("serve", str(cfg))
    assert r.returncode == 2
    assert "storage.delete.enabled" in r.stderr
    r = cargohold("serve", str(tmp_path / "missing.yml"))
    assert r.returncode == 2 and "missing.yml" in r.stderr
    r = cargohold("serve", "--workers", "0", env={"XDG_DATA_HOME": str(tmp_path)})
    assert r.returncode == 2 and "--workers" in r.stderr


def test_serving_does_not_load_the_import_and_export_machinery() -> None:
    """Every module the server loads is resident in each worker: the archive and registry
    client code of ``cargohold import``/``export`` is loaded only when one of them runs."""
    code = (
        "import sys\n"
        "from cargohold.cli import build_parser\n"
        "import cargohold.server\n"
        "build_parser()\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('cargohold.images.')"
        " or m == 'tarfile')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["cargohold.images.arguments"]
