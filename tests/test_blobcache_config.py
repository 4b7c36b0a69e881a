"""``storage.cache.blobdir`` / ``blobdirsize``: parsed from YAML and from ``REGISTRY_*``
variables, off by default, and ignored (with a warning) on the filesystem driver."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cargohold.config import ConfigError, load_config
from cargohold.config.model import DEFAULT_BLOBDIRSIZE
from cargohold.registry import blobcache

S3 = """\
version: 0.1
storage:
  s3:
    bucket: b
    region: eu-west-1
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "config.yml"
    path.write_text(text)
    return load_config(str(path), environ or {})


def test_off_unless_configured(tmp_path: Path) -> None:
    storage = load(tmp_path, S3).storage
    assert storage.cache_blobdir == ""
    assert blobcache.from_config(storage) is None


def test_yaml_and_environment(tmp_path: Path) -> None:
    text = S3 + f"  cache:\n    blobdir: {tmp_path}/a\n    blobdirsize: 512MiB\n"
    storage = load(tmp_path, text).storage
    assert (storage.cache_blobdir, storage.cache_blobdirsize) == (f"{tmp_path}/a", 512 << 20)
    environ = {
        "REGISTRY_STORAGE_CACHE_BLOBDIR": f"{tmp_path}/b",
        "REGISTRY_STORAGE_CACHE_BLOBDIRSIZE": "2GiB",
    }
    storage = load(tmp_path, S3, environ).storage
    assert (storage.cache_blobdir, storage.cache_blobdirsize) == (f"{tmp_path}/b", 2 << 30)
    cache = blobcache.from_config(storage)
    assert cache is not None and cache.max_bytes == 2 << 30
    assert (tmp_path / "b").is_dir()
    storage = load(tmp_path, S3, {"REGISTRY_STORAGE_CACHE_BLOBDIR": "/x"}).storage
    assert storage.cache_blobdirsize == DEFAULT_BLOBDIRSIZE
    with pytest.raises(ConfigError, match=r"^storage\.cache\.blobdirsize"):
        load(tmp_path, S3, {"REGISTRY_STORAGE_CACHE_BLOBDIRSIZE": "lots"})


def test_ignored_for_the_filesystem_driver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/r\n"
    text += f"  cache:\n    blobdir: {tmp_path}/c\n"
    storage = load(tmp_path, text).storage
    assert storage.cache_blobdir == f"{tmp_path}/c"
    with caplog.at_level(logging.WARNING, logger="cargohold.blobcache"):
        assert blobcache.from_config(storage) is None
    assert "ignored with the filesystem driver" in caplog.text
    assert not (tmp_path / "c").exists()
