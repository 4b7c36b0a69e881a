"""The config package's machinery: the declarative field table, driver parameters beside their
drivers, and the one answer to "which config file, which default data directory".

tests/test_config.py covers every key's behaviour; these tests pin the mechanisms new sections
rely on, on a section of their own (so they fail if the table stops doing its part) and through
load_config on real files and explicit environ dicts.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cargohold.config import (
    ConfigError,
    Field,
    Section,
    default_data_dir,
    load_config,
    locate_config,
)
from cargohold.config.values import boolean, duration, integer, text, text_list
from cargohold.storage import fsparams
from cargohold.storage.params import ParamError

SRC = str(Path(__file__).resolve().parents[1] / "src")


@dataclass
class _Mirror:
    enabled: bool = False
    ttl: float = 3600.0
    upstream: str = "https://registry-1.docker.io"
    pool_size: int = 4
    names: list[str] = field(default_factory=list)


MIRROR = Section(
    "mirrors.hub",
    _Mirror,
    (
        Field("enabled", boolean),
        Field("ttl", duration),
        Field("upstream", text),
        Field("pool.size", integer, 8),  # the row's own default wins over the model's
        Field("names", text_list),
    ),
)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_table_fills_the_model_with_defaults() -> None:
    mirror = MIRROR.build(None)
    assert mirror == _Mirror(pool_size=8)  # model defaults, except the row's own for pool.size
    mirror = MIRROR.build({"enabled": True, "ttl": "90s", "pool": {"size": "3"}, "names": "a"})
    assert mirror == _Mirror(enabled=True, ttl=90.0, pool_size=3, names=["a"])


def test_table_warns_about_unknown_keys_at_every_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    mirror = MIRROR.build({"enabled": True, "tll": "1h", "pool": {"size": 2, "max": 9}})
    assert mirror.enabled and mirror.ttl == 3600.0 and mirror.pool_size == 2
    messages = _warnings(caplog)
    assert any("mirrors.hub.tll" in m for m in messages), messages
    assert any("mirrors.hub.pool.max" in m for m in messages), messages
    assert not any("mirrors.hub.enabled" in m or "pool.size" in m for m in messages), messages


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"enabled": "yes"}, "mirrors.hub.enabled: expected a boolean, got 'yes'"),
        ({"ttl": 30}, "mirrors.hub.ttl: expected a duration"),
        ({"pool": {"size": "many"}}, "mirrors.hub.pool.size: expected an integer, got 'many'"),
        ({"pool": ["size"]}, "mirrors.hub.pool: expected a mapping"),
        ({"names": ["a", {"b": 1}]}, "mirrors.hub.names[1]: expected a string"),
        ("on", "mirrors.hub: expected a mapping"),
    ],
)
def test_table_errors_name_the_dotted_key(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        MIRROR.build(value)
    assert str(info.value).startswith(message), str(info.value)


def test_a_list_entry_is_named_by_its_index_and_strict_tables_refuse_unknown_keys() -> None:
    strict = Section("mirrors.list[]", _Mirror, MIRROR.fields, strict=True)
    with pytest.raises(ConfigError, match=r"^mirrors\.list\[2\]\.ttl: expected a duration"):
        strict.build({"ttl": 5}, "mirrors.list[2]")
    with pytest.raises(ConfigError) as info:
        strict.build({"tll": "1h"}, "mirrors.list[0]")
    assert str(info.value) == (
        "mirrors.list[0].tll: unknown key (expected enabled, names, pool, ttl, upstream)"
    )


def _write(tmp_path: Path, text_: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(text_))
    return str(path)


BASE = """\
version: 0.1
storage:
  filesystem:
    rootdirectory: /srv/registry
  maintenance:
    gc:
      enabled: true
redis:
  addr: 127.0.0.1:6379
  pool:
    maxidle: 2
"""


def test_real_sections_through_load_config(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    path = _write(tmp_path, BASE + "    maxidel: 3\n")
    config = load_config(path, {})
    assert config.redis is not None and config.redis.pool_maxidle == 2
    assert config.redis.pool_maxactive == 0 and config.redis.db == 0  # defaults applied
    assert config.storage.gc.enabled and config.storage.gc.interval == 24 * 3600.0
    assert config.storage.gc.graceperiod == 3600.0 and config.storage.gc.settle == 10.0
    assert any("redis.pool.maxidel" in m for m in _warnings(caplog))
    with pytest.raises(ConfigError, match=r"^redis\.pool\.maxactive: expected an integer"):
        load_config(_write(tmp_path, BASE + "    maxactive: all\n"), {})


def test_env_override_of_a_nested_key_reaches_the_model(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    config = load_config(
        path,
        {
            "REGISTRY_REDIS_POOL_MAXIDLE": "7",
            "REGISTRY_REDIS_TLS_ENABLED": "true",
            "REGISTRY_STORAGE_MAINTENANCE_GC_INTERVAL": "2h",
        },
    )
    assert config.redis is not None
    assert config.redis.pool_maxidle == 7 and config.redis.tls_enabled is True
    assert config.storage.gc.interval == 7200.0
    with pytest.raises(ConfigError, match=r"^redis\.pool\.maxidle: expected an integer"):
        load_config(path, {"REGISTRY_REDIS_POOL_MAXIDLE": "[1]"})


# -------------------------------------------------------------------- driver parameters


def test_filesystem_parameters_are_read_beside_the_driver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    warned: list[tuple[str, str]] = []
    params = fsparams.parse_filesystem_params(
        {"maxthreads": "3"}, lambda k, m: warned.append((k, m))
    )
    assert params == {"rootdirectory": "/var/lib/registry", "maxthreads": 25, "fsync": False}
    assert warned == [("maxthreads", "3 raised to 25")]
    with pytest.raises(ParamError) as info:
        fsparams.parse_filesystem_params({"rootdirectory": ""}, lambda k, m: None)
    assert info.value.key == "rootdirectory"
    # config names the whole dotted key for the driver's own errors and warnings
    bad = "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ''\n"
    with pytest.raises(ConfigError, match=r"^storage\.filesystem\.rootdirectory: must not be"):
        load_config(_write(tmp_path, bad), {})
    caplog.set_level(logging.WARNING, logger="cargohold.config")
    mem = "version: 0.1\nstorage:\n  inmemory:\n    size: 10\n"
    assert load_config(_write(tmp_path, mem), {}).storage.driver == "inmemory"
    assert any("storage.inmemory.size" in m for m in _warnings(caplog))


def test_s3_parameter_errors_name_the_dotted_key(tmp_path: Path) -> None:
    cfg = "version: 0.1\nstorage:\n  s3:\n    bucket: b\n    region: r\n    secure: maybe\n"
    with pytest.raises(ConfigError, match=r"^storage\.s3\.secure: expected a boolean"):
        load_config(_write(tmp_path, cfg), {})


# -------------------------------------------------------------------- which file, which dir


def test_locate_config_reads_the_variable(tmp_path: Path) -> None:
    env = {"REGISTRY_CONFIGURATION_PATH": "/etc/docker/registry/config.yml"}
    location = locate_config(None, environ={**env, "XDG_DATA_HOME": str(tmp_path)})
    assert location.path == "/etc/docker/registry/config.yml"
    assert location.default_root == str(tmp_path / "cargohold")


def test_an_explicit_path_wins_over_the_variable(tmp_path: Path) -> None:
    env = {"REGISTRY_CONFIGURATION_PATH": "/nowhere.yml"}
    path = _write(tmp_path, BASE)
    location = locate_config(path, environ=env)
    assert location.path == path
    assert location.load({}).storage.rootdirectory == "/srv/registry"


def test_no_file_means_the_embedded_default_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = locate_config(None, environ={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert location.path is None
    assert location.default_root == str(tmp_path / "xdg" / "cargohold")
    assert location.load({}).storage.rootdirectory == str(tmp_path / "xdg" / "cargohold")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = str(tmp_path / "home" / ".local" / "share" / "cargohold")
    assert default_data_dir({"REGISTRY_CONFIGURATION_PATH": ""}) == expected
    assert locate_config(None, environ={"REGISTRY_CONFIGURATION_PATH": ""}).path is None


def test_root_and_from_environment(tmp_path: Path) -> None:
    env = {"REGISTRY_CONFIGURATION_PATH": "/etc/x.yml", "XDG_DATA_HOME": str(tmp_path)}
    located = locate_config(None, root="/data", environ=env)
    assert (located.path, located.default_root) == ("/etc/x.yml", "/data")
    located = locate_config(None, root="/data", environ=env, from_environment=False)
    assert (located.path, located.default_root) == (None, "/data")


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True, text=True, timeout=120, check=False,
        env={**clean, "PYTHONPATH": SRC, **env},
    )  # fmt: skip


def test_admin_commands_find_the_file_the_same_way_without_importing_cli(tmp_path: Path) -> None:
    root = tmp_path / "store"
    good = _write(tmp_path, f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {root}\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 0.1\nstorage:\n  filesystem:\n  delete:\n    enabled: maybe\n")
    r = _run("-m", "cargohold", "du", env={"REGISTRY_CONFIGURATION_PATH": str(bad)})
    assert r.returncode == 2 and "storage.delete.enabled" in r.stderr, r.stderr
    r = _run("-m", "cargohold", "du", "--json", good, env={"REGISTRY_CONFIGURATION_PATH": str(bad)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["repositories"] == []
    code = "import sys, cargohold.admin.commands; print('cargohold.cli' in sys.modules)"
    r = _run("-c", code, env={})
    assert r.stdout.strip() == "False", r.stderr
