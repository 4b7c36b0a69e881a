"""A filesystem blob removed while a GET is being answered (garbage collection, online GC, a
delete in another worker). The server is held between the handler's steps
(``CARGOHOLD_PAUSE_AT``, see ``cargohold.faults``) while the test removes the blob's data file,
so the race happens every time."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from support.pausing import held

from .helpers import assert_error, blob_url, push_blob, rand_bytes, repo

TIMEOUT = 60


def _data_file(root: Path, digest: str) -> Path:
    return root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"


def _get_while_held(fifo: Path, url: str, act: Callable[[], None]) -> requests.Response:
    """GET ``url``; once the server is held at its pause point, ``act()``, then let it go on."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(requests.get, url, timeout=TIMEOUT)
        with held(fifo):
            act()
        return pending.result()


def _held_registry(make_registry, tmp_path: Path, point: str):  # type: ignore[no-untyped-def]
    fifo = tmp_path / "pause"
    os.mkfifo(fifo)
    return make_registry(env={"CARGOHOLD_PAUSE_AT": f"{point}:{fifo}"}), fifo


def test_a_blob_removed_between_stat_and_open_is_blob_unknown(make_registry, tmp_path):
    """The blob's link and stat said it is there, then its data file went: the spec's JSON
    BLOB_UNKNOWN 404 (it was aiohttp's empty 404)."""
    reg, fifo = _held_registry(make_registry, tmp_path, "blob-found")
    name = repo()
    data = rand_bytes(200_000, seed=11)
    digest = push_blob(reg.url, name, data)
    data_file = _data_file(reg.root, digest)
    assert data_file.exists()
    resp = _get_while_held(fifo, blob_url(reg.url, name, digest), data_file.unlink)
    assert_error(resp, 404, "BLOB_UNKNOWN")
    assert resp.json()["errors"][0]["detail"] == {"digest": digest}


def test_a_blob_removed_once_open_is_sent_whole(make_registry, tmp_path):
    """Removed after the handler opened it: the open file is still read to its end, so the
    client gets the whole blob it asked for, verified, with its digest headers."""
    reg, fifo = _held_registry(make_registry, tmp_path, "blob-opened")
    name = repo()
    data = rand_bytes(3_000_000, seed=12)
    digest = push_blob(reg.url, name, data)
    data_file = _data_file(reg.root, digest)
    resp = _get_while_held(fifo, blob_url(reg.url, name, digest), data_file.unlink)
    assert not data_file.exists()
    assert resp.status_code == 200, resp.text[:500]
    assert resp.content == data
    assert resp.headers["Docker-Content-Digest"] == digest
    assert resp.headers["ETag"] == f'"{digest}"'
    assert_error(
        requests.get(blob_url(reg.url, name, digest), timeout=TIMEOUT), 404, "BLOB_UNKNOWN"
    )
