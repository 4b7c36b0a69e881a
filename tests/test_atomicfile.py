"""The one atomic-write helper: complete or absent, the mode from the start, no leftovers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cargohold.atomicfile import AtomicFile, create_exclusive, write_atomic


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    write_atomic(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert listing(tmp_path) == ["f"]


def test_mode_is_set_before_any_byte_is_written(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    old_umask = os.umask(0)
    try:
        out = AtomicFile(str(target), mode=0o600)
        # The temporary file is already private while the secret is being written.
        assert stat.S_IMODE(os.stat(out.tmp).st_mode) == 0o600
        out.file.write(b"secret")
        out.commit()
        write_atomic(str(tmp_path / "cert.pem"), b"public", mode=0o644)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "cert.pem").stat().st_mode) == 0o644


def test_without_a_mode_the_umask_decides(tmp_path: Path) -> None:
    old_umask = os.umask(0o027)
    try:
        write_atomic(str(tmp_path / "f"), b"x", fsync=False)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_a_failure_while_writing_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(str(target), prefix=".tmp-") as f:
        f.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_bytes() == b"old"
    assert listing(tmp_path) == ["f"]


def test_the_temporary_name_uses_the_prefix_in_the_same_directory(tmp_path: Path) -> None:
    out = AtomicFile(str(tmp_path / "f"), prefix=".cargohold-tmp-")
    try:
        assert os.path.dirname(out.tmp) == str(tmp_path)
        assert os.path.basename(out.tmp).startswith(".cargohold-tmp-")
    finally:
        out.abort()
    assert listing(tmp_path) == []


def test_commit_exclusive_creates_once(tmp_path: Path) -> None:
    target = str(tmp_path / "ca.key")
    first, second = AtomicFile(target, mode=0o600), AtomicFile(target, mode=0o600)
    first.file.write(b"winner")
    second.file.write(b"loser")
    assert first.commit_exclusive() is True
    assert second.commit_exclusive() is False
    assert (tmp_path / "ca.key").read_bytes() == b"winner"
    assert create_exclusive(target, b"late", mode=0o600) is False
    assert create_exclusive(str(tmp_path / "new.key"), b"k", mode=0o600) is True
    assert (tmp_path / "ca.key").read_bytes() == b"winner"
    assert stat.S_IMODE((tmp_path / "new.key").stat().st_mode) == 0o600
    assert listing(tmp_path) == ["ca.key", "new.key"]


def test_a_missing_directory_is_an_error_not_a_stray_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(str(tmp_path / "absent" / "f"), b"x")
    assert listing(tmp_path) == []
