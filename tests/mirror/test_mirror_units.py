"""Small pieces of the mirror on their own: challenges, Retry-After, the fetch-file sweep,
routing of names to mirrors."""

from __future__ import annotations

import fcntl
import os
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from cargohold.config import load_config
from cargohold.errors import RegistryError
from cargohold.mirror.fetch import BlobFetches, _acquire, _lock_at, _release
from cargohold.mirror.mirrored import MirroredRegistry
from cargohold.mirror.upstream import _retry_after, parse_challenge
from cargohold.storage.filesystem import FilesystemDriver


def test_parse_challenge() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    assert c is not None
    assert (c.scheme, c.realm, c.service) == (
        "bearer",
        "https://auth.docker.io/token",
        "registry.docker.io",
    )
    basic = parse_challenge('Basic realm="Registry Realm"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None


def test_retry_after_seconds_and_dates() -> None:
    assert _retry_after("7", 1.0) == 7.0
    assert _retry_after(None, 1.5) == 1.5
    assert _retry_after("soon", 2.0) == 2.0
    in_a_minute = _retry_after(formatdate(time.time() + 60, usegmt=True), 1.0)
    assert 50 < in_a_minute <= 61


def test_sweep_keeps_what_a_fetch_holds(tmp_path: Path) -> None:
    fetches = BlobFetches(FilesystemDriver(str(tmp_path)))
    d = fetches.dir
    old = time.time() - 7200
    for name in ("sha256-aa.result", "sha256-bb.x.part", "sha256-bb.meta", "sha256-cc.result"):
        Path(d, name).write_text("{}")
        os.utime(os.path.join(d, name), (old, old))
    Path(d, "sha256-cc.result").touch()  # recent: kept
    held = os.open(os.path.join(d, "sha256-bb.lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # a fetch of bb is running
    try:
        assert fetches.sweep() == 1
    finally:
        os.close(held)
    assert sorted(os.listdir(d)) == [
        "sha256-bb.lock",
        "sha256-bb.meta",
        "sha256-bb.x.part",
        "sha256-cc.result",
    ]


def test_lock_files_are_removed_and_a_removed_one_is_worth_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "sha256-aa.lock")
    held = _acquire(path)
    assert held is not None
    assert _acquire(path) is None  # another holds it
    waiter = os.open(path, os.O_RDWR)  # a waiter opened the file before the holder was done
    _release(held, path)
    assert not os.path.exists(path)  # the holder removed it
    try:
        # The waiter's lock on the removed file guards nothing: refused, and let go...
        assert _lock_at(waiter, path) is False
        # ...so it opens the path anew, and so does everyone after: one lock file again.
        again = _acquire(path)
        assert again is not None
        with pytest.raises(BlockingIOError):
            fd = os.open(path, os.O_RDWR)
            try:
                _lock_at(fd, path)
            finally:
                os.close(fd)
        _release(again, path)
    finally:
        os.close(waiter)


def test_sweep_removes_lock_files_dead_fetchers_left(tmp_path: Path) -> None:
    fetches = BlobFetches(FilesystemDriver(str(tmp_path)))
    d = fetches.dir
    old = time.time() - 7200
    for name in ("sha256-dead.lock", "tag-dead.mlock", "sha256-live.lock"):
        Path(d, name).touch()
        os.utime(os.path.join(d, name), (old, old))
    live = os.open(os.path.join(d, "sha256-live.lock"), os.O_RDWR)
    fcntl.flock(live, fcntl.LOCK_EX)  # a fetch of "live" is running: its file stays
    try:
        assert fetches.sweep() == 2
    finally:
        os.close(live)
    assert os.listdir(d) == ["sha256-live.lock"]


def test_routes(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yml"
    config_path.write_text(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}\n"
        "mirrors:\n"
        "  - {prefix: hub, remoteurl: 'https://a', repositories: ['library/*']}\n"
        "  - {prefix: ghcr/io, remoteurl: 'https://b'}\n"
    )
    mirrors = MirroredRegistry(load_config(str(config_path), {})).mirrors
    hub = mirrors.route("hub/library/alpine")
    assert hub is not None and (hub.label, hub.remote) == ("hub", "library/alpine")
    ghcr = mirrors.route("ghcr/io/org/app")
    assert ghcr is not None and (ghcr.label, ghcr.remote) == ("ghcr/io", "org/app")
    for ordinary in ("hub", "hubx/library/alpine", "ghcr/other", "mine/app"):
        assert mirrors.route(ordinary) is None
        mirrors.refuse_write(ordinary)  # ordinary names take pushes
    with pytest.raises(RegistryError) as info:
        mirrors.refuse_write("hub/library/alpine")
    assert info.value.code.name == "UNSUPPORTED"
    with pytest.raises(RegistryError) as info:
        mirrors.allowed_route("hub/other/deep/name")
    assert info.value.code.name == "NAME_UNKNOWN"
