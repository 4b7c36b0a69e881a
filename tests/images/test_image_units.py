"""Small pieces of the import/export code on their own: names, platforms, auth challenges,
gzip checking, tar indexing, which image goes where, and the progress display on a terminal."""

from __future__ import annotations

import gzip
import io
import os
import pty
import select
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest
from support.images import ImageCache
from support.servers import cargohold_env

from cargohold.images.archive import Archive, ArchiveImage, GunzipHasher, sha256_of
from cargohold.images.client import is_loopback, parse_challenge
from cargohold.images.files import CHUNK, ArchiveError, TarFiles, gunzip_chunks
from cargohold.images.importer import plan_jobs
from cargohold.images.names import (
    Platform,
    Ref,
    UsageError,
    parse_archive_name,
    parse_destination,
    parse_reference,
)
from cargohold.images.progress import Progress, human_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox:latest", Ref("busybox", "latest")),
        ("docker.io/library/busybox:1.36", Ref("busybox", "1.36")),
        ("docker.io/team/app:1", Ref("team/app", "1")),
        ("localhost:5000/team/app:2", Ref("team/app", "2")),
        ("registry.example:443/a/b/c", Ref("a/b/c", None)),
        ("latest", Ref(None, "latest")),
        ("v1.2", Ref(None, "v1.2")),
        ("quay.io/x/y@sha256:" + "0" * 64, Ref("x/y", None)),
    ],
)
def test_archive_names(text: str, expected: Ref) -> None:
    assert parse_archive_name(text) == expected


def test_command_line_references() -> None:
    assert parse_destination("team/app") == ("team/app", None)
    assert parse_destination("team/app:1") == ("team/app", "1")
    assert parse_reference("team/app") == ("team/app", "latest")
    digest = "sha256:" + "a" * 64
    assert parse_reference(f"team/app@{digest}") == ("team/app", digest)
    with pytest.raises(UsageError, match="registry host"):
        parse_destination("localhost:5000/team/app")
    with pytest.raises(UsageError):
        parse_destination("Team/App")
    with pytest.raises(UsageError):
        parse_reference("team/app@sha256:short")


def test_platforms() -> None:
    arm = Platform.parse("linux/arm64/v8")
    assert str(arm) == "linux/arm64/v8"
    assert Platform.parse("linux/arm64").matches(arm)
    assert not arm.matches(Platform("linux", "arm64", "v7"))
    assert Platform.of({"os": "linux", "architecture": "amd64"}) == Platform("linux", "amd64")
    with pytest.raises(UsageError):
        Platform.parse("linux")


def test_auth_challenges() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="Registry Realm"') == ("basic", {"realm": "Registry Realm"})
    assert is_loopback("127.0.0.1:5000") and is_loopback("localhost") and is_loopback("[::1]:80")
    assert not is_loopback("registry.example:5000")


def test_gunzip_checks_truncation_and_corruption() -> None:
    data = os.urandom(200_000)
    packed = gzip.compress(data) + gzip.compress(b"second member")
    assert b"".join(gunzip_chunks(iter([packed[:1000], packed[1000:]]))) == data + b"second member"
    with pytest.raises(ArchiveError, match="truncated"):
        list(gunzip_chunks(iter([packed[:5000]])))
    bad = bytearray(packed)
    bad[-12] ^= 1  # the first member's CRC
    with pytest.raises(ArchiveError, match="corrupt"):
        list(gunzip_chunks(iter([bytes(bad)])))

    hasher = GunzipHasher("layer")
    for i in range(0, len(packed), 777):
        hasher.update(packed[i : i + 777])
    assert hasher.finish() == sha256_of(data + b"second member")
    short = GunzipHasher("layer")
    short.update(packed[:3000])
    with pytest.raises(ArchiveError, match="truncated"):
        short.finish()
    with pytest.raises(ArchiveError, match="corrupt"):
        GunzipHasher("layer").update(b"\x1f\x8b\x08\x00" + b"\xff" * 50)
    assert zlib  # zlib is what both use underneath


def test_gunzip_output_is_bounded_for_a_crafted_layer() -> None:
    """A small layer that inflates a thousandfold is hashed one bounded piece at a time, in
    the layer verifier (archive.py) as in the whole-archive spool (files.py)."""
    bomb = gzip.compress(bytes(64 * CHUNK), 9)
    assert len(bomb) < CHUNK // 8  # one read of the archive holds all of it
    pieces: list[int] = []
    hasher = GunzipHasher("layer", lambda out: pieces.append(len(out)))
    hasher.update(bomb)
    assert hasher.finish() == sha256_of(bytes(64 * CHUNK))
    assert sum(pieces) == 64 * CHUNK
    assert max(pieces) <= CHUNK
    assert max(len(out) for out in gunzip_chunks(iter([bomb]))) <= CHUNK


def test_tar_index_follows_links_and_refuses_escapes(tmp_path: Path) -> None:
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        data = b"layer bytes"
        info = tarfile.TarInfo("abc/layer.tar")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("def/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../abc/layer.tar"
        tar.addfile(link)
        hard = tarfile.TarInfo("./ghi.tar")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "abc/layer.tar"
        tar.addfile(hard)
    files = TarFiles(str(path))
    for name in ("abc/layer.tar", "def/layer.tar", "ghi.tar", "/abc/./layer.tar"):
        with files.open(name) as f:
            assert f.read() == b"layer bytes"
    assert not files.exists("../../etc/passwd")


def _image(*refs: Ref) -> ArchiveImage:
    return ArchiveImage(list(refs), str(refs), [])


def test_which_image_goes_where() -> None:
    a = _image(Ref("multi/a", "1"), Ref("multi/a", "latest"))
    b = _image(Ref("multi/b", "2"))
    both = Archive("docker-save", [a, b])
    jobs = plan_jobs(both, None)
    assert [(j.repo, j.tags) for j in jobs] == [("multi/a", ["1", "latest"]), ("multi/b", ["2"])]
    assert [(j.repo, j.tags) for j in plan_jobs(both, ("multi/a", "1"))] == [("multi/a", ["1"])]
    with pytest.raises(UsageError, match="multi/a:1"):
        plan_jobs(both, ("other/name", None))
    single = Archive("docker-save", [a])
    assert [(j.repo, j.tags) for j in plan_jobs(single, ("new/name", None))] == [
        ("new/name", ["1", "latest"])
    ]
    assert [(j.repo, j.tags) for j in plan_jobs(single, ("new/name", "x"))] == [("new/name", ["x"])]
    tags_only = Archive("OCI layout", [_image(Ref(None, "v1")), _image(Ref(None, "v2"))])
    with pytest.raises(UsageError, match="give one as REPO"):
        plan_jobs(tags_only, None)
    assert [(j.repo, j.tags) for j in plan_jobs(tags_only, ("r/x", None))] == [
        ("r/x", ["v1"]),
        ("r/x", ["v2"]),
    ]
    assert [(j.repo, j.tags) for j in plan_jobs(tags_only, ("r/x", "v2"))] == [("r/x", ["v2"])]
    clash = Archive("docker-save", [_image(Ref("x/y", "1")), _image(Ref("x/y", "1"))])
    with pytest.raises(UsageError, match="both named x/y:1"):
        plan_jobs(clash, None)


def test_plain_progress_lines() -> None:
    out = io.StringIO()
    progress = Progress("plain", stream=out)
    task = progress.task("sha256:abc", 2_000_000)
    task.advance(1_000_000)
    task.advance(1_000_000)
    task.finish("written")
    progress.info("hello")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("sha256:abc written: 2.0 MB in ")
    assert lines[1] == "hello"
    assert human_size(999) == "999 B" and human_size(1_500_000) == "1.5 MB"
    quiet = io.StringIO()
    q = Progress("quiet", stream=quiet)
    q.task("x", 1).finish()
    q.info("not shown")
    q.result("the answer")
    assert quiet.getvalue() == "the answer\n"


def test_terminal_gets_progress_bars(images: ImageCache, tmp_path: Path) -> None:
    """On a terminal rich draws bars (bytes, rate, time left); the summary still ends the output."""
    pytest.importorskip("rich")
    image = images.get(seed=601, layer_count=2)
    primary, secondary = pty.openpty()
    env = {**os.environ, **cargohold_env(), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cargohold", "import", str(image.layout), "tty/test:1",
         "--root", str(tmp_path / "root")],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env,
    )  # fmt: skip
    os.close(secondary)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([primary], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(primary, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(primary)
    assert proc.wait(60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\x1b[" in screen  # terminal control sequences: live bars, not log lines
    assert "kB" in screen and "/s" in screen
    assert "imported tty/test:1" in screen


def test_gunzip_hasher_inflates_a_bomb_a_bounded_piece_at_a_time() -> None:
    """A small crafted layer (64 MiB of zeros in ~64 KiB of gzip) fed in one update must not
    be inflated into memory at once: every piece handed on is at most one CHUNK."""
    from cargohold.images.files import CHUNK

    data = bytes(64 << 20)
    bomb = gzip.compress(data, compresslevel=9)
    assert len(bomb) < CHUNK
    pieces: list[int] = []
    hasher = GunzipHasher("layer", lambda out: pieces.append(len(out)))
    hasher.update(bomb)
    assert hasher.finish() == sha256_of(data)
    assert sum(pieces) == len(data)
    assert max(pieces) <= CHUNK
