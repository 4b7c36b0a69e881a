"""The loader: registry:2's rules for where settings come from, in one place.

Loading happens in three steps, mirroring registry:2 (configuration/parser.go):
  1. read the YAML file (or the embedded default) into a plain dict;
  2. apply REGISTRY_* environment overrides to that dict, in sorted order of variable name;
  3. validate the merged dict into the dataclasses (config/sections.py; the dict itself is kept
     in Config.raw).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from cargohold.config.model import DEFAULT_ROOT, Config
from cargohold.config.sections import SECTIONS, build
from cargohold.config.values import ConfigError

logger = logging.getLogger("cargohold.config")

ENV_PREFIX = "REGISTRY_"
# Variables with the prefix that are not overrides: the official image sets this one to the file.
CONFIGURATION_PATH_VARIABLE = "REGISTRY_CONFIGURATION_PATH"
_NOT_OVERRIDES = frozenset({CONFIGURATION_PATH_VARIABLE})

EMBEDDED_DEFAULT_YAML = f"""\
# cargohold's built-in configuration, used when no file is given. It follows registry:2's
# cmd/registry/config-example.yml, except that deleting is enabled (see default_config).
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {DEFAULT_ROOT}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


class _Loader(yaml.SafeLoader):
    """SafeLoader without two YAML 1.1 readings that Go's yaml.v2 does not make.

    registry:2 reads `2024-01-01` and `1:30` as the strings they look like; PyYAML would make a
    date and the base-60 integer 90, which then stringify differently (e.g. in http.secret).
    """


def _as_text(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    return loader.construct_scalar(node)


def _int_unless_base60(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    if ":" in str(node.value):
        return loader.construct_scalar(node)
    return loader.construct_yaml_int(node)


def _float_unless_base60(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    assert isinstance(node, yaml.ScalarNode)
    if ":" in str(node.value):
        return loader.construct_scalar(node)
    return loader.construct_yaml_float(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
_Loader.add_constructor("tag:yaml.org,2002:int", _int_unless_base60)
_Loader.add_constructor("tag:yaml.org,2002:float", _float_unless_base60)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", key=source) from exc


def _normalise_drivers(raw: dict[str, Any]) -> None:
    """`storage: s3` / `auth: htpasswd` mean "this driver, no parameters" (registry:2's
    Storage/Auth UnmarshalYAML); rewrite them so later overrides can descend into them."""
    for section in ("storage", "auth"):
        value = raw.get(section)
        if isinstance(value, str) and value:
            raw[section] = {value: {}}


# --------------------------------------------------------------------------- env overrides


def _find_key(node: dict[Any, Any], part: str) -> Any:
    """The existing key matching `part` case-insensitively, else the lowercased part."""
    for key in node:
        if str(key).upper() == part.upper():
            return key
    return part.lower()


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply REGISTRY_* variables to `raw` in place, as registry:2's parser does.

    Sorted order matters: REGISTRY_STORAGE=s3 replaces the storage section before
    REGISTRY_STORAGE_S3_BUCKET fills it in. A variable that cannot apply is warned about and
    skipped rather than fatal, as registry:2 does for unknown fields.
    """
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _NOT_OVERRIDES:
            continue
        path = name[len(ENV_PREFIX) :].split("_")
        top = path[0].lower()
        if top not in SECTIONS or top == "version":
            why = "the version is not overridable" if top == "version" else "no such section"
            logger.warning("ignoring environment variable %s: %s", name, why)
            continue
        value = _parse_yaml(environ[name], name)
        problem = _set_path(raw, path, value)
        if problem:
            logger.warning("ignoring environment variable %s: %s", name, problem)
        _normalise_drivers(raw)


def _set_path(node: Any, path: list[str], value: Any) -> str | None:
    """Set `value` at `path` below `node`, creating missing or null maps on the way as
    registry:2 does; returns why it could not apply, or None."""
    for depth, part in enumerate(path):
        if isinstance(node, dict):
            key: Any = _find_key(node, part)
        elif isinstance(node, list):
            # registry:2 indexes lists too (REGISTRY_NOTIFICATIONS_ENDPOINTS_0_URL).
            if not re.fullmatch(r"[0-9]+", part) or int(part) > len(node):
                return f"{part!r} is not an index of the list at {_dotted(path[:depth])}"
            key = int(part)
            if key == len(node):
                node.append(None)
        else:
            return f"{_dotted(path[:depth])} is {node!r}, not a mapping"
        if depth == len(path) - 1:
            node[key] = value
            return None
        child = node[key] if isinstance(node, list) else node.get(key)
        if child is None:
            child = node[key] = {}
        node = child
    return None


def _dotted(path: list[str]) -> str:
    return ".".join(part.lower() for part in path)


# --------------------------------------------------------------------------- entry points


def load_config(
    path: str | None,
    environ: Mapping[str, str] | None = None,
    *,
    default_root: str | None = None,
) -> Config:
    """Load the registry:2 YAML file at `path`, apply REGISTRY_* overrides, validate.

    `path=None` starts from EMBEDDED_DEFAULT_YAML, with its filesystem root set to
    `default_root` when given (overrides still apply on top). `environ=None` reads the process
    environment, as registry:2 does; tests pass an explicit dict. Raises ConfigError.
    """
    if path is None:
        raw = _parse_yaml(EMBEDDED_DEFAULT_YAML, "(embedded default)")
        if default_root is not None:
            raw["storage"]["filesystem"]["rootdirectory"] = default_root
    else:
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file: {exc}", key=path) from exc
        raw = _parse_yaml(text, path)
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError("expected a YAML mapping at the top level", key=path)
    _normalise_drivers(raw)
    apply_env_overrides(raw, os.environ if environ is None else environ)
    config = build(raw)
    config.source = path  # what a reload (cargohold.reload) reads again
    return config


def default_config(root: str) -> Config:
    """The embedded default with storage under `root`, ignoring the environment.

    Unlike registry:2's example config, deleting manifests and blobs is enabled: a registry
    you run yourself should let you clean it up, and clients only delete when asked to.
    """
    return load_config(None, {}, default_root=root)
