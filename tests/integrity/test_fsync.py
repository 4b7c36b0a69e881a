"""``storage.filesystem.fsync``: blob data, link files and their directories reach the disk
before the 201. Observed from outside with ``strace`` (system calls of the real server, in
order, with the file each descriptor names), not by wrapping anything in the process."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import requests
from support.servers import RegistryProcess, cargohold_env, unique_repo
from support.waiting import eventually

from tests.api.helpers import image_manifest, put_manifest, rand_bytes, sha256

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

CALL = re.compile(
    r"^\d+\s+(?P<call>fsync|fdatasync|sendto)\((?P<fd>\d+)<(?P<path>[^>]*)>(?P<rest>.*)$"
)


def _traced(tmp_path: Path, fsync: bool) -> tuple[RegistryProcess, Path]:
    out = tmp_path / "strace.out"

    def command(config_path: Path) -> list[str]:
        return [
            "strace", "-f", "-qq", "-y", "-s", "24", "-o", str(out),
            "-e", "trace=fsync,fdatasync,sendto",
            sys.executable, "-m", "cargohold", "serve", str(config_path),
        ]  # fmt: skip

    server = RegistryProcess(
        "cargohold-strace",
        command,
        tmp_path / "server",
        config={"storage": {"filesystem": {"fsync": fsync}}},
        env=cargohold_env(),
        ready_timeout=60,
    )
    return server.start(), out


def _calls(out: Path, start: int) -> list[tuple[str, str, str]]:
    """(call, path, rest) of every traced call from line ``start`` on."""
    found = []
    for line in out.read_text(errors="replace").splitlines()[start:]:
        m = CALL.match(line)
        if m:
            found.append((m["call"], m["path"], m["rest"]))
    return found


def _until_201(out: Path, start: int) -> list[tuple[str, str]]:
    """The fsyncs from ``start`` up to the send of the next 201 response."""
    calls: list[tuple[str, str, str]] = []

    def answered() -> bool:
        calls[:] = _calls(out, start)
        return any(c == "sendto" and "201 Created" in rest for c, _, rest in calls)

    eventually(answered, timeout=30)
    synced = []
    for call, path, rest in calls:
        if call == "sendto" and "201 Created" in rest:
            break
        if call in ("fsync", "fdatasync"):
            synced.append((call, path))
    return synced


def _lines(out: Path) -> int:
    return len(out.read_text(errors="replace").splitlines())


def test_with_fsync_data_links_and_directories_are_synced_before_the_201(tmp_path):
    server, out = _traced(tmp_path, fsync=True)
    try:
        name = unique_repo("durable")
        data = rand_bytes(200_000, seed=5)
        digest = sha256(data)
        mark = _lines(out)
        r = requests.post(
            f"{server.url}/v2/{name}/blobs/uploads/?digest={digest}", data=data, timeout=30
        )
        assert r.status_code == 201
        paths = [p for _, p in _until_201(out, mark)]
        assert any(p.endswith("/data") and "/_uploads/" in p for p in paths), paths  # the bytes
        # the blob's directory, made in scratch space and renamed in with the data
        assert any(f"/blobs/sha256/{digest[7:9]}/{digest[7:]}" in p for p in paths), paths
        assert any("/_cargohold/tmp/" in p for p in paths), paths  # the link's content
        assert any(f"/repositories/{name}" in p for p in paths), paths  # the link's directory

        m = image_manifest(server.url, name, seed=6)
        mark = _lines(out)
        assert put_manifest(server.url, name, "v1", m.data, m.media_type).status_code == 201
        paths = [p for _, p in _until_201(out, mark)]
        assert any(p.endswith("/_manifests/revisions/sha256") for p in paths), paths
        assert any("/_manifests/tags" in p for p in paths), paths
        assert sum("/_cargohold/tmp/" in p for p in paths) >= 3, paths  # blob, revision, tag
    finally:
        server.stop()


def test_without_fsync_nothing_is_synced(tmp_path):
    server, out = _traced(tmp_path, fsync=False)
    try:
        name = unique_repo("fast")
        data = rand_bytes(50_000, seed=7)
        mark = _lines(out)
        r = requests.post(
            f"{server.url}/v2/{name}/blobs/uploads/?digest={sha256(data)}", data=data, timeout=30
        )
        assert r.status_code == 201
        assert _until_201(out, mark) == []
    finally:
        server.stop()
