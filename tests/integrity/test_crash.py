"""Crash-safe ordering (docs/ordering.md): a server killed at any step of any multi-file
operation leaves a store that ``cargohold fsck`` finds clean, and that serves on.

Two ways of killing: the fault-injection hook ``CARGOHOLD_CRASH_AT=<point>:<n>`` (the process
``os._exit``s at a named step, as abruptly as ``kill -9``), once per named point; and a real
``kill -9`` of a two-worker server under a push/delete load, at whatever instant it lands.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading

import pytest
import requests
from support.servers import cargohold_env, unique_repo
from support.waiting import eventually

from tests.api.helpers import (
    artifact_manifest,
    image_manifest,
    push_blob,
    put_manifest,
    rand_bytes,
)

from .helpers import fsck, store_config

TIMEOUT = 30


def _workload(url: str, name: str, seed: int) -> None:
    """Every multi-file operation of docs/ordering.md, each answered 2xx."""
    http = requests.Session()
    m = image_manifest(url, name, seed=seed)  # uploads: POST, PATCH, PUT
    r = put_manifest(url, name, "v1", m.data, m.media_type)
    assert r.status_code == 201, r.text
    assert put_manifest(url, name, "v2", m.data, m.media_type).status_code == 201
    layer = rand_bytes(1000, seed=seed)
    push_blob(url, name, layer)
    push_blob(url, name, b"{}")
    art = artifact_manifest(m, "application/vnd.example.sbom", layer)
    assert put_manifest(url, name, art.digest, art.data, art.media_type).status_code == 201
    other = unique_repo("mount")
    r = http.post(f"{url}/v2/{other}/blobs/uploads/?mount={m.digest}&from={name}", timeout=TIMEOUT)
    assert r.status_code in (201, 202)
    assert http.delete(f"{url}/v2/{name}/manifests/v2", timeout=TIMEOUT).status_code == 202
    r = http.delete(f"{url}/v2/{name}/manifests/{m.digest}", timeout=TIMEOUT)
    assert r.status_code == 202
    # (a blob no manifest uses: deleting one a manifest needs is the client breaking its
    # image, which fsck reports as reference-unlinked)
    loose = push_blob(url, name, rand_bytes(500, seed=seed + 1))
    assert http.delete(f"{url}/v2/{name}/blobs/{loose}", timeout=TIMEOUT).status_code == 202


SERVER_POINTS = [
    "upload.finish.after-move:1",
    "upload.finish.after-link:2",
    "manifest.put.after-blob:1",
    "manifest.put.after-referrer:1",
    "manifest.put.after-revision:1",
    "manifest.tag.after-current:2",
    "manifest.delete.after-tag:1",
    "manifest.delete.after-revision:1",
    "fs.put.before-rename:1",
    "fs.put.before-rename:6",
    "fs.delete.after-rename:1",
    "fs.delete.after-rename:3",
]


@pytest.mark.parametrize("point", SERVER_POINTS)
def test_a_server_killed_at_each_step_leaves_a_clean_store(make_registry, tmp_path, point):
    root = tmp_path / "store"
    name = unique_repo("crash")
    doomed = make_registry(root=root, env={"CARGOHOLD_CRASH_AT": point})
    with pytest.raises((requests.ConnectionError, AssertionError)):
        _workload(doomed.url, name, seed=1)
    assert doomed.proc is not None
    proc = doomed.proc
    eventually(lambda: proc.poll() is not None, timeout=30)
    assert f"crashing at {point.split(':')[0]}" in doomed.log_tail(20000)
    doomed.stop()

    config = store_config(tmp_path, root)
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]

    # and the store serves on: the same operations, again, from the start
    reg = make_registry(root=root)
    _workload(reg.url, name, seed=1)
    _workload(reg.url, unique_repo("after"), seed=2)
    reg.stop()
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]


@pytest.mark.parametrize("point", ["gc.blob.after-link:1", "gc.manifest.before-revision:1"])
def test_a_garbage_collection_killed_midway_leaves_a_clean_store(make_registry, tmp_path, point):
    root = tmp_path / "store"
    reg = make_registry(root=root)
    name = unique_repo("gccrash")
    _workload(reg.url, name, seed=3)  # leaves garbage: a deleted manifest's blobs
    m = image_manifest(reg.url, name, seed=4)
    assert put_manifest(reg.url, name, m.digest, m.data, m.media_type).status_code == 201
    reg.stop()
    config = store_config(tmp_path, root)
    proc = subprocess.run(
        [sys.executable, "-m", "cargohold", "garbage-collect", str(config), "-m"],
        env={**os.environ, **cargohold_env({"CARGOHOLD_CRASH_AT": point})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 137, (proc.stdout, proc.stderr)
    code, report = fsck(config, "--verify-blobs")
    assert code == 0, report["problems"]


class _Load:
    """Three client threads running :func:`_workload` on new repositories until stopped."""

    def __init__(self, url: str, first_seed: int) -> None:
        self.url = url
        self.seed = first_seed
        self.done = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.seed += 1
                seed = self.seed
            try:
                _workload(self.url, unique_repo("kill"), seed)
            except (requests.RequestException, AssertionError):
                continue
            with self.lock:
                self.done += 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_kill_9_under_a_push_and_delete_load(make_registry, tmp_path):
    """Real SIGKILLs of a two-worker server while clients push and delete; after each, fsck
    finds the store clean."""
    root = tmp_path / "store"
    config = store_config(tmp_path, root)
    rng = random.Random(7)
    for round_ in range(3):
        reg = make_registry(root=root, workers=2)
        load = _Load(reg.url, 1000 * round_)
        target = rng.randint(1, 4)
        eventually(lambda load=load, target=target: load.done >= target, timeout=180)
        assert reg.proc is not None
        os.killpg(reg.proc.pid, signal.SIGKILL)  # mid-flight: other workloads are running
        load.finish()
        reg.stop()
        code, report = fsck(config, "--verify-blobs")
        assert code == 0, (round_, report["problems"])
