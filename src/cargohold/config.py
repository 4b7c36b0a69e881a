"""registry:2-compatible configuration: the same YAML file and the same REGISTRY_* overrides.

CONTRACT (the rest of the code relies on exactly these names):
    load_config(path: str | None, environ: Mapping[str, str] | None = None) -> Config
    default_config(root: str) -> Config          # the embedded default (no file)
    ConfigError(Exception)                       # message names the offending key
Everything not listed in the dataclasses below is kept in Config.raw.

Why this module is strict: cargohold is a drop-in for CNCF distribution's `registry:2`, so an
operator can point it at the config file and environment they already have. Silently ignoring a
section we do not implement yet (auth, TLS, notifications...) would start a registry that looks
fine but is open, unencrypted or deaf, so every such section is a ConfigError that names it.
Sections that change nothing a client can observe (health, reporting...) are accepted.

Loading happens in three steps, mirroring registry:2 (configuration/parser.go):
  1. read the YAML file (or the embedded default) into a plain dict;
  2. apply REGISTRY_* environment overrides to that dict, in sorted order of variable name;
  3. validate the merged dict into the dataclasses (the dict itself is kept in Config.raw).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

logger = logging.getLogger("cargohold.config")

ENV_PREFIX = "REGISTRY_"
DEFAULT_ROOT = "/var/lib/registry"
LOG_LEVELS = ("error", "warn", "info", "debug")

# Variables with the prefix that are not overrides: the official image sets this one to the file.
_NOT_OVERRIDES = frozenset({"REGISTRY_CONFIGURATION_PATH"})
# registry:2's top-level keys (Configuration struct in configuration/configuration.go).
# fmt: off
_SECTIONS = frozenset({
    "version", "log", "loglevel", "storage", "auth", "middleware", "reporting", "http",
    "notifications", "redis", "health", "catalog", "proxy", "compatibility", "validation",
    "policy", "access",  # access: cargohold's repository access policy (see _access)
})
_LOG_KEYS = frozenset({"level", "formatter", "fields", "accesslog", "hooks", "reportcaller"})
_HTTP_KEYS = frozenset({
    "addr", "net", "prefix", "host", "secret", "relativeurls", "headers", "tls", "debug",
    "http2", "letsencrypt", "draintimeout",
})
# fmt: on
_SECTIONS = _SECTIONS | {"retention"}  # cargohold's retention policies (see _retention)
# Sections that do not change what a client sees: accepted, and only mentioned at debug level.
_IGNORED_SECTIONS = ("health", "reporting", "compatibility", "catalog")
# Keys of `storage` that configure the registry rather than name a driver.
_STORAGE_OPTIONS = frozenset({"delete", "redirect", "cache", "maintenance", "tag"})
_SUPPORTED_DRIVERS = ("filesystem", "inmemory", "s3")
_KNOWN_DRIVERS = frozenset({"s3-aws", "azure", "gcs", "swift", "oss"})
_FS_MIN_THREADS, _FS_DEFAULT_THREADS = 25, 100  # registry:2's filesystem driver limits

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


class ConfigError(Exception):
    """A configuration problem that must stop the start; the message names the key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


# -- cargohold's operations sections: debug listener, online GC, notifications, retention --


@dataclass
class DebugConfig:
    """http.debug: the debug/admin listener (Prometheus metrics, /admin/* operations)."""

    addr: str = ""  # "" = no debug listener
    prometheus_enabled: bool = True  # registry:2 needs prometheus.enabled; here it is the default
    prometheus_path: str = "/metrics"


@dataclass
class GCConfig:
    """storage.maintenance.gc (cargohold): garbage collection while serving, on a schedule."""

    enabled: bool = False
    interval: float = 24 * 3600.0  # seconds between runs
    graceperiod: float = 3600.0  # nothing written more recently than this is collected
    deleteuntagged: bool = False
    dryrun: bool = False
    settle: float = 10.0  # seconds between publishing a batch of deletions and deleting


@dataclass
class NotificationEndpoint:
    """One notifications.endpoints entry, with registry:2's defaults."""

    name: str
    url: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    timeout: float = 1.0
    threshold: int = 10
    backoff: float = 1.0
    ignored_mediatypes: list[str] = field(default_factory=list)
    ignored_actions: list[str] = field(default_factory=list)


@dataclass
class NotificationsConfig:
    endpoints: list[NotificationEndpoint] = field(default_factory=list)
    include_references: bool = False


@dataclass
class RetentionPolicy:
    """retention.policies entry (cargohold): which tags of matching repositories to keep."""

    repositories: list[str]  # globs (fnmatch): the first policy that matches a repository wins
    keep_last: int | None = None  # the newest N tags (by push time)
    keep_within: float | None = None  # tags pushed or pulled within this many seconds
    keep_tags: str | None = None  # tags matching this regular expression (re.search)
    delete_untagged: bool = False


@dataclass
class RetentionConfig:
    policies: list[RetentionPolicy] = field(default_factory=list)
    pull_flush_interval: float = 60.0  # how often pull times are written to storage


@dataclass
class LogConfig:
    level: str = "info"  # error | warn | info | debug
    formatter: str = "text"  # text | json (registry:2's logstash is read as json)
    fields: dict[str, Any] = field(default_factory=dict)
    accesslog_disabled: bool = False


@dataclass
class UploadPurging:
    enabled: bool = True
    age: float = 168 * 3600.0  # seconds
    interval: float = 24 * 3600.0  # seconds
    dryrun: bool = False


@dataclass
class StorageConfig:
    driver: str = "filesystem"
    # filesystem: always holds `rootdirectory` (str) and `maxthreads` (int) after validation.
    params: dict[str, Any] = field(default_factory=dict)
    delete_enabled: bool = False
    redirect_disable: bool = False
    readonly: bool = False
    purging: UploadPurging = field(default_factory=UploadPurging)
    gc: GCConfig = field(default_factory=GCConfig)
    cache_blobdescriptor: str = ""  # "" (no cache) | inmemory | redis (needs Config.redis)

    @property
    def rootdirectory(self) -> str:
        return str(self.params.get("rootdirectory", DEFAULT_ROOT))


# Go's names of the TLS 1.2 suites registry:2 accepts in http.tls.ciphersuites, in OpenSSL's
# spelling. TLS 1.3 suites are always enabled, in Go and in OpenSSL alike.
TLS12_CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
}
TLS13_CIPHER_SUITES = frozenset(
    {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
)
TLS_VERSIONS = ("tls1.2", "tls1.3")


@dataclass
class TlsConfig:
    """http.tls: serve HTTPS; with clientcas, require a client certificate signed by one."""

    certificate: str
    key: str
    clientcas: list[str] = field(default_factory=list)
    minimumtls: str = "tls1.2"  # tls1.2 | tls1.3
    ciphersuites: list[str] = field(default_factory=list)  # Go names; [] = OpenSSL's defaults


@dataclass
class HttpConfig:
    addr: str = ":5000"
    prefix: str = ""  # normalised to "/path" (no trailing slash), "" for none
    host: str = ""  # absolute URL clients reach us at, "" to derive it from the request
    secret: str = ""  # "" means: the server makes a random one (and should warn, as registry:2)
    headers: dict[str, list[str]] = field(default_factory=dict)
    relativeurls: bool = False
    net: str = "tcp"
    draintimeout: float = 0.0  # seconds
    http2_disabled: bool = False
    tls: TlsConfig | None = None

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) to listen on; host '' means all interfaces."""
        return parse_addr(self.addr)


@dataclass
class ValidationConfig:
    disabled: bool = False
    # distribution 3's validation.manifests.indexes: which platforms of an index must be present.
    indexes_platforms: str = "all"  # all | none | list
    indexes_platformlist: list[dict[str, str]] = field(default_factory=list)
    urls_allow: list[str] = field(default_factory=list)
    urls_deny: list[str] = field(default_factory=list)


TOKEN_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


@dataclass
class HtpasswdConfig:
    """auth.htpasswd: HTTP Basic logins checked against a bcrypt htpasswd file."""

    realm: str
    path: str


@dataclass
class BuiltinTokenConfig:
    """auth.token.builtin (cargohold): also be the token server, at /auth/token."""

    htpasswd: str  # who may log in
    key: str  # PEM signing key; generated (0600) on first start when missing
    certificate: str  # self-signed certificate of the key, written next to it
    expiration: float = 300.0  # token lifetime, seconds


@dataclass
class TokenConfig:
    """auth.token: bearer tokens (Docker registry token spec) from a token server."""

    realm: str  # "" (builtin only): the request's own https://HOST/auth/token
    service: str
    issuer: str
    rootcertbundle: str = ""
    jwks: str = ""
    autoredirect: bool = False
    autoredirectpath: str = "/auth/token"
    signingalgorithms: list[str] = field(default_factory=lambda: list(TOKEN_ALGORITHMS))
    builtin: BuiltinTokenConfig | None = None


@dataclass
class AuthConfig:
    htpasswd: HtpasswdConfig | None = None
    token: TokenConfig | None = None

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None or self.token is not None


ACCESS_ACTIONS = ("pull", "push", "delete")


@dataclass
class AccessRule:
    """Grants `actions` on repositories matching any of `repositories` to the named callers."""

    repositories: list[str]  # globs: * and ? stay within a path segment, ** crosses them
    actions: list[str]  # subset of ACCESS_ACTIONS; push implies pull
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    anonymous: bool = False  # anyone, without credentials
    authenticated: bool = False  # anyone who logged in


@dataclass
class AccessConfig:
    """access (cargohold): who may pull, push and delete what; absent = every user, everything."""

    admins: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    rules: list[AccessRule] = field(default_factory=list)


@dataclass
class RedisConfig:
    """registry:2's `redis` section (the blob descriptor cache's server); durations in seconds."""

    addr: str
    password: str = ""
    username: str = ""
    db: int = 0
    dialtimeout: float = 0.0  # 0: the client's default
    readtimeout: float = 0.0
    writetimeout: float = 0.0
    pool_maxidle: int = 0
    pool_maxactive: int = 0  # 0: no limit
    pool_idletimeout: float = 0.0
    tls_enabled: bool = False
    tls_certificate: str = ""  # client certificate, for servers that require one
    tls_key: str = ""
    tls_clientcas: list[str] = field(default_factory=list)  # CAs to verify the server with


@dataclass
class Config:
    version: str = "0.1"
    log: LogConfig = field(default_factory=LogConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    raw: dict[str, Any] = field(default_factory=dict)
    auth: AuthConfig = field(default_factory=AuthConfig)
    access: AccessConfig | None = None
    redis: RedisConfig | None = None  # the `redis` section, None when absent or empty
    debug: DebugConfig = field(default_factory=DebugConfig)  # http.debug
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    retention: RetentionConfig | None = None


# --------------------------------------------------------------------------- public helpers

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse a Go duration (`168h`, `1h30m`, `1.5s`, `250ms`, `-1m`, `0`) into seconds.

    registry:2 reads its durations with Go's time.ParseDuration, so existing files use that
    syntax: one or more number+unit pairs, an optional sign, and a bare `0`. Raises ValueError.
    """
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r} (expected e.g. 24h, 1h30m, 10s)")
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_addr(addr: str) -> tuple[str, int]:
    """Split a listen address (`:5000`, `127.0.0.1:5000`, `[::1]:5000`, `host:5000`).

    Follows Go's net.SplitHostPort, which registry:2 hands http.addr to: IPv6 literals need
    brackets. Returns (host, port) with host '' for all interfaces. Unlike Go, the port must be
    numeric and 1-65535 (no service names, no ephemeral port 0). Raises ValueError.
    """
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0 or addr[end + 1 : end + 2] != ":":
            raise ValueError(f"invalid address {addr!r} (expected [ipv6]:port)")
        host, port_text = addr[1:end], addr[end + 2 :]
    else:
        host, sep, port_text = addr.rpartition(":")
        if not sep:
            raise ValueError(f"missing port in address {addr!r} (expected host:port or :port)")
        if ":" in host:
            raise ValueError(f"too many colons in address {addr!r} (write IPv6 as [::1]:5000)")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port {port_text!r} in address {addr!r} (expected 1-65535)")
    return host, int(port_text)


# --------------------------------------------------------------------------- reading YAML


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
        if top not in _SECTIONS or top == "version":
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


# --------------------------------------------------------------------------- value checks


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise ConfigError(f"expected a mapping, got {value!r}", key=key)


def _bool(value: Any, key: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    raise ConfigError(f"expected a boolean, got {value!r}", key=key)


def _str(value: Any, key: str, default: str = "") -> str:
    """Scalars become their text, as yaml.v2 does when the Go field is a string."""
    if value is None:
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigError(f"expected a string, got {value!r}", key=key)


def _int(value: Any, key: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    raise ConfigError(f"expected an integer, got {value!r}", key=key)


def _str_list(value: Any, key: str) -> list[str]:
    """A list of strings; a single string is taken as a one-element list."""
    if value is None:
        return []
    if isinstance(value, list):
        return [_str(item, f"{key}[{i}]") for i, item in enumerate(value)]
    return [_str(value, key)]


def _duration(value: Any, key: str, default: float) -> float:
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"expected a duration like '24h' or '30m', got {value!r}", key=key)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from exc


def _has_settings(value: Any) -> bool:
    """True when anything under `value` is set: `tls: {}` or `certificate: ""` is not."""
    if isinstance(value, dict):
        return any(_has_settings(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_settings(v) for v in value)
    return bool(value)


def _active_entries(value: Any, key: str) -> list[Any]:
    """Entries of a list (endpoints, hooks, middleware) not marked `disabled: true`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list, got {value!r}", key=key)
    return [e for e in value if not (isinstance(e, dict) and e.get("disabled") is True)]


def _warn_unknown(section: Mapping[Any, Any], key: str, known: set[str] | frozenset[str]) -> None:
    for name in section:
        if name not in known:
            logger.warning("unknown configuration key %s ignored", f"{key}.{name}" if key else name)


def _unsupported(key: str, what: str) -> ConfigError:
    return ConfigError(f"{what} is not supported yet", key=key)


# --------------------------------------------------------------------------- sections


def _version(raw: Mapping[str, Any]) -> str:
    value = raw.get("version")
    if value is None:
        raise ConfigError('missing; expected "0.1"', key="version")
    text = _str(value, "version")
    if text != "0.1":
        raise ConfigError(f'unsupported version {text!r}; expected "0.1"', key="version")
    return text


def _log(raw: Mapping[str, Any]) -> LogConfig:
    section = _mapping(raw.get("log"), "log")
    _warn_unknown(section, "log", _LOG_KEYS)
    level_value, level_key = section.get("level"), "log.level"
    if level_value in (None, "") and raw.get("loglevel") not in (None, ""):
        logger.warning("loglevel is deprecated; use log.level")
        level_value, level_key = raw["loglevel"], "loglevel"
    level = _str(level_value, level_key, "info").lower() or "info"
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"expected one of {', '.join(LOG_LEVELS)}, got {level_value!r}", key=level_key
        )
    formatter = _str(section.get("formatter"), "log.formatter", "text") or "text"
    if formatter == "logstash":
        logger.warning("log.formatter: logstash is written as plain json")
        formatter = "json"
    if formatter not in ("text", "json"):
        raise ConfigError(
            f"expected text, json or logstash, got {formatter!r}", key="log.formatter"
        )
    if _active_entries(section.get("hooks"), "log.hooks"):
        raise _unsupported("log.hooks", "log hooks")
    _bool(section.get("reportcaller"), "log.reportcaller", False)
    fields = {str(k): v for k, v in _mapping(section.get("fields"), "log.fields").items()}
    accesslog = _mapping(section.get("accesslog"), "log.accesslog")
    _warn_unknown(accesslog, "log.accesslog", {"disabled"})
    return LogConfig(
        level=level,
        formatter=formatter,
        fields=fields,
        accesslog_disabled=_bool(accesslog.get("disabled"), "log.accesslog.disabled", False),
    )


def _driver_params(driver: str, value: Any) -> dict[str, Any]:
    key = f"storage.{driver}"
    params = dict(_mapping(value, key))
    if driver == "filesystem":
        _warn_unknown(params, key, {"rootdirectory", "maxthreads"})
        root = _str(params.get("rootdirectory"), f"{key}.rootdirectory", DEFAULT_ROOT)
        if not root:
            raise ConfigError("must not be empty", key=f"{key}.rootdirectory")
        threads = _int(params.get("maxthreads"), f"{key}.maxthreads", _FS_DEFAULT_THREADS)
        if threads < _FS_MIN_THREADS:  # registry:2 raises it to the minimum too
            logger.warning("%s.maxthreads %d raised to %d", key, threads, _FS_MIN_THREADS)
            threads = _FS_MIN_THREADS
        params.update(rootdirectory=root, maxthreads=threads)
    elif driver == "s3":
        from cargohold.storage.s3params import KNOWN_KEYS, S3ParamError, parse_s3_params

        _warn_unknown(params, key, KNOWN_KEYS)
        try:
            parse_s3_params(params)
        except S3ParamError as exc:
            raise ConfigError(exc.message, key=f"{key}.{exc.key}") from exc
    else:
        _warn_unknown(params, key, set())
    return params


def _purging(value: Any) -> UploadPurging:
    """registry:2 purges stale uploads by default; a given section is read key by key, missing
    keys keeping the defaults (registry:2 instead panics on a missing age/interval/dryrun)."""
    key = "storage.maintenance.uploadpurging"
    section = _mapping(value, key)
    _warn_unknown(section, key, {"enabled", "age", "interval", "dryrun"})
    default = UploadPurging()
    purging = UploadPurging(
        enabled=_bool(section.get("enabled"), f"{key}.enabled", default.enabled),
        age=_duration(section.get("age"), f"{key}.age", default.age),
        interval=_duration(section.get("interval"), f"{key}.interval", default.interval),
        dryrun=_bool(section.get("dryrun"), f"{key}.dryrun", default.dryrun),
    )
    if purging.enabled and purging.interval <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.interval")
    if purging.enabled and purging.age < 0:
        raise ConfigError("must not be negative", key=f"{key}.age")
    return purging


def _storage(value: Any) -> StorageConfig:
    section = _mapping(value, "storage")
    drivers = sorted(str(k) for k in section if k not in _STORAGE_OPTIONS)
    if not drivers:
        raise ConfigError(
            f"no storage driver configured (expected one of {', '.join(_SUPPORTED_DRIVERS)})",
            key="storage",
        )
    if len(drivers) > 1:
        raise ConfigError(
            f"exactly one storage driver expected, got {', '.join(drivers)}", key="storage"
        )
    driver = drivers[0]
    if driver in _KNOWN_DRIVERS:
        raise _unsupported("storage", f"storage driver {driver!r}")
    if driver not in _SUPPORTED_DRIVERS:
        raise ConfigError(
            f"unknown storage driver {driver!r} (supported: {', '.join(_SUPPORTED_DRIVERS)})",
            key="storage",
        )

    delete = _mapping(section.get("delete"), "storage.delete")
    _warn_unknown(delete, "storage.delete", {"enabled"})
    redirect = _mapping(section.get("redirect"), "storage.redirect")
    _warn_unknown(redirect, "storage.redirect", {"disable", "expirydelay"})
    _duration(redirect.get("expirydelay"), "storage.redirect.expirydelay", 0.0)
    tag = _mapping(section.get("tag"), "storage.tag")
    _warn_unknown(tag, "storage.tag", {"concurrencylimit"})
    _int(tag.get("concurrencylimit"), "storage.tag.concurrencylimit", 0)

    cache = _mapping(section.get("cache"), "storage.cache")
    _warn_unknown(cache, "storage.cache", {"blobdescriptor", "layerinfo", "blobdescriptorsize"})
    # `layerinfo` is the older spelling, which registry:2 still reads.
    old = cache.get("blobdescriptor") is None and cache.get("layerinfo") is not None
    cache_field = "layerinfo" if old else "blobdescriptor"
    cache_key = f"storage.cache.{cache_field}"
    kind = _str(cache.get(cache_field), cache_key)
    if kind not in ("", "inmemory", "redis"):
        logger.warning("%s: unknown cache type %r, caching disabled", cache_key, kind)
        kind = ""
    _int(cache.get("blobdescriptorsize"), "storage.cache.blobdescriptorsize", 0)

    maintenance = _mapping(section.get("maintenance"), "storage.maintenance")
    _warn_unknown(maintenance, "storage.maintenance", {"uploadpurging", "readonly", "gc"})
    readonly = _mapping(maintenance.get("readonly"), "storage.maintenance.readonly")
    _warn_unknown(readonly, "storage.maintenance.readonly", {"enabled"})

    return StorageConfig(
        driver=driver,
        params=_driver_params(driver, section.get(driver)),
        delete_enabled=_bool(delete.get("enabled"), "storage.delete.enabled", False),
        redirect_disable=_bool(redirect.get("disable"), "storage.redirect.disable", False),
        readonly=_bool(readonly.get("enabled"), "storage.maintenance.readonly.enabled", False),
        purging=_purging(maintenance.get("uploadpurging")),
        gc=_gc(maintenance.get("gc")),
        cache_blobdescriptor=kind,
    )


def _http(value: Any) -> HttpConfig:
    section = _mapping(value, "http")
    _warn_unknown(section, "http", _HTTP_KEYS)
    features = {"letsencrypt": "Let's Encrypt"}
    for name, what in features.items():
        if _has_settings(section.get(name)):
            raise _unsupported(f"http.{name}", what)

    addr = _str(section.get("addr"), "http.addr") or ":5000"
    try:
        parse_addr(addr)
    except ValueError as exc:
        raise ConfigError(str(exc), key="http.addr") from exc
    net = _str(section.get("net"), "http.net") or "tcp"
    if net in ("unix", "unixpacket", "tcp4", "tcp6"):
        raise _unsupported("http.net", f"listening on {net!r}")
    if net != "tcp":
        raise ConfigError(f"expected tcp, got {net!r}", key="http.net")

    prefix = _str(section.get("prefix"), "http.prefix").strip("/")
    host = _str(section.get("host"), "http.host")
    if host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"expected an absolute URL like https://registry.example.com, got {host!r}",
                key="http.host",
            )

    headers = {
        str(name): _str_list(values, f"http.headers.{name}")
        for name, values in _mapping(section.get("headers"), "http.headers").items()
    }
    http2 = _mapping(section.get("http2"), "http.http2")
    _warn_unknown(http2, "http.http2", {"disabled"})
    return HttpConfig(
        addr=addr,
        prefix=f"/{prefix}" if prefix else "",
        host=host.rstrip("/"),
        secret=_str(section.get("secret"), "http.secret"),
        headers=headers,
        relativeurls=_bool(section.get("relativeurls"), "http.relativeurls", False),
        net=net,
        draintimeout=_duration(section.get("draintimeout"), "http.draintimeout", 0.0),
        http2_disabled=_bool(http2.get("disabled"), "http.http2.disabled", False),
        tls=_tls(section.get("tls")),
    )


def _regex_list(value: Any, key: str) -> list[str]:
    """Patterns are compiled with Python's re; Go's RE2 syntax is nearly a subset of it."""
    patterns = _str_list(value, key)
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            message = f"invalid regular expression {pattern!r}: {exc}"
            raise ConfigError(message, key=f"{key}[{i}]") from exc
    return patterns


def _platform_list(value: Any, key: str) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of {{architecture, os}}, got {value!r}", key=key)
    platforms = []
    for i, item in enumerate(value):
        entry = _mapping(item, f"{key}[{i}]")
        _warn_unknown(entry, f"{key}[{i}]", {"architecture", "os"})
        arch = _str(entry.get("architecture"), f"{key}[{i}].architecture")
        os_name = _str(entry.get("os"), f"{key}[{i}].os")
        if not arch or not os_name:
            raise ConfigError("needs both architecture and os", key=f"{key}[{i}]")
        platforms.append({"architecture": arch, "os": os_name})
    return platforms


def _validation(value: Any) -> ValidationConfig:
    section = _mapping(value, "validation")
    _warn_unknown(section, "validation", {"enabled", "disabled", "manifests"})
    disabled = _bool(section.get("disabled"), "validation.disabled", False)
    enabled = _bool(section.get("enabled"), "validation.enabled", False)
    if section.get("enabled") is False and not disabled:
        # registry:2 computes enabled = enabled || !disabled, so this alone changes nothing.
        logger.warning(
            "validation.enabled: false does not disable validation in registry:2; "
            "use validation.disabled: true"
        )
    manifests = _mapping(section.get("manifests"), "validation.manifests")
    _warn_unknown(manifests, "validation.manifests", {"urls", "indexes"})
    urls = _mapping(manifests.get("urls"), "validation.manifests.urls")
    _warn_unknown(urls, "validation.manifests.urls", {"allow", "deny"})
    indexes = _mapping(manifests.get("indexes"), "validation.manifests.indexes")
    _warn_unknown(indexes, "validation.manifests.indexes", {"platforms", "platformlist"})
    key = "validation.manifests.indexes.platforms"
    platforms = (_str(indexes.get("platforms"), key) or "all").lower()
    if platforms not in ("all", "none", "list"):
        raise ConfigError(f"expected all, none or list, got {platforms!r}", key=key)
    platformlist = _platform_list(
        indexes.get("platformlist"), "validation.manifests.indexes.platformlist"
    )
    if platforms == "list" and not platformlist:
        logger.warning("%s is 'list' but platformlist is empty: no platform is required", key)
    return ValidationConfig(
        disabled=disabled and not enabled,
        indexes_platforms=platforms,
        indexes_platformlist=platformlist,
        urls_allow=_regex_list(urls.get("allow"), "validation.manifests.urls.allow"),
        urls_deny=_regex_list(urls.get("deny"), "validation.manifests.urls.deny"),
    )


# --------------------------------------------------------------------------- tls, auth, access

_TLS_KEYS = frozenset(
    {"certificate", "key", "clientcas", "minimumtls", "ciphersuites", "letsencrypt"}
)
_TOKEN_KEYS = frozenset(
    {
        "realm", "service", "issuer", "rootcertbundle", "jwks", "autoredirect",
        "autoredirectpath", "signingalgorithms", "builtin",
    }
)  # fmt: skip
_RULE_KEYS = frozenset({"repositories", "actions", "users", "groups", "anonymous", "authenticated"})


def _tls(value: Any) -> TlsConfig | None:
    key = "http.tls"
    section = _mapping(value, key)
    _warn_unknown(section, key, _TLS_KEYS)
    if _has_settings(section.get("letsencrypt")):
        raise _unsupported(f"{key}.letsencrypt", "Let's Encrypt")
    certificate = _str(section.get("certificate"), f"{key}.certificate")
    private_key = _str(section.get("key"), f"{key}.key")
    clientcas = _str_list(section.get("clientcas"), f"{key}.clientcas")
    if not certificate and not private_key:
        if clientcas:
            raise ConfigError("needs http.tls.certificate and http.tls.key", key=f"{key}.clientcas")
        return None
    for name, path in (("certificate", certificate), ("key", private_key)):
        if not path:
            raise ConfigError("missing (TLS needs both certificate and key)", key=f"{key}.{name}")
    minimum = (_str(section.get("minimumtls"), f"{key}.minimumtls") or "tls1.2").lower()
    if minimum in ("tls1.0", "tls1.1"):
        logger.warning("%s.minimumtls: %s is insecure, using tls1.2", key, minimum)
        minimum = "tls1.2"
    if minimum not in TLS_VERSIONS:
        raise ConfigError(f"expected tls1.2 or tls1.3, got {minimum!r}", key=f"{key}.minimumtls")
    suites = _str_list(section.get("ciphersuites"), f"{key}.ciphersuites")
    for i, suite in enumerate(suites):
        if suite not in TLS12_CIPHER_SUITES and suite not in TLS13_CIPHER_SUITES:
            raise ConfigError(f"unknown cipher suite {suite!r}", key=f"{key}.ciphersuites[{i}]")
    return TlsConfig(certificate, private_key, clientcas, minimum, suites)


def _required(section: Mapping[str, Any], name: str, key: str, why: str) -> str:
    value = _str(section.get(name), f"{key}.{name}")
    if not value:
        raise ConfigError(f"missing; {why}", key=f"{key}.{name}")
    return value


def _auth(value: Any) -> AuthConfig:
    section = _mapping(value, "auth")
    kinds = sorted(str(k) for k in section)
    if not kinds:
        return AuthConfig()
    if len(kinds) > 1:
        raise ConfigError(f"exactly one auth type expected, got {', '.join(kinds)}", key="auth")
    kind = kinds[0]
    if kind == "silly":
        raise ConfigError(
            "accepts any credentials and is not offered; use htpasswd or token", key="auth.silly"
        )
    if kind == "htpasswd":
        key = "auth.htpasswd"
        entry = _mapping(section[kind], key)
        _warn_unknown(entry, key, {"realm", "path"})
        realm = _required(entry, "realm", key, "the realm clients are asked to log in to")
        path = _required(entry, "path", key, "the htpasswd file (cargohold htpasswd add FILE USER)")
        return AuthConfig(htpasswd=HtpasswdConfig(realm=realm, path=path))
    if kind == "token":
        return AuthConfig(token=_token(section[kind]))
    raise ConfigError(f"unknown auth type {kind!r} (supported: htpasswd, token)", key="auth")


def _token(value: Any) -> TokenConfig:
    key = "auth.token"
    section = _mapping(value, key)
    _warn_unknown(section, key, _TOKEN_KEYS)
    builtin = None if section.get("builtin") is None else _builtin_token(section["builtin"])
    algorithms = _str_list(section.get("signingalgorithms"), f"{key}.signingalgorithms")
    for i, alg in enumerate(algorithms):
        if alg not in TOKEN_ALGORITHMS:
            raise ConfigError(
                f"unsupported algorithm {alg!r} (expected one of {', '.join(TOKEN_ALGORITHMS)})",
                key=f"{key}.signingalgorithms[{i}]",
            )
    config = TokenConfig(
        realm=_str(section.get("realm"), f"{key}.realm"),
        service=_str(section.get("service"), f"{key}.service"),
        issuer=_str(section.get("issuer"), f"{key}.issuer"),
        rootcertbundle=_str(section.get("rootcertbundle"), f"{key}.rootcertbundle"),
        jwks=_str(section.get("jwks"), f"{key}.jwks"),
        autoredirect=_bool(section.get("autoredirect"), f"{key}.autoredirect", False),
        autoredirectpath=_str(section.get("autoredirectpath"), f"{key}.autoredirectpath")
        or "/auth/token",
        signingalgorithms=algorithms or list(TOKEN_ALGORITHMS),
        builtin=builtin,
    )
    if builtin is not None:  # cargohold's own token server: everything has a default
        config.service = config.service or "cargohold"
        config.issuer = config.issuer or "cargohold"
        return config
    _required(section, "realm", key, "the URL of the token server clients are sent to")
    _required(section, "service", key, "the service name tokens are issued for (their aud)")
    _required(section, "issuer", key, "the iss of valid tokens")
    if not config.rootcertbundle and not config.jwks:
        raise ConfigError(
            "missing; the certificates (or jwks) that token signatures are checked against",
            key=f"{key}.rootcertbundle",
        )
    return config


def _builtin_token(value: Any) -> BuiltinTokenConfig:
    key = "auth.token.builtin"
    section = _mapping(value, key)
    _warn_unknown(section, key, {"htpasswd", "key", "certificate", "expiration"})
    htpasswd = _required(section, "htpasswd", key, "the htpasswd file of the users who log in")
    signing_key = _required(section, "key", key, "where the signing key is kept")
    certificate = _str(section.get("certificate"), f"{key}.certificate")
    if not certificate:
        stem = signing_key[:-4] if signing_key.endswith(".key") else signing_key
        certificate = f"{stem}.crt"
    expiration = _duration(section.get("expiration"), f"{key}.expiration", 300.0)
    if expiration <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.expiration")
    return BuiltinTokenConfig(htpasswd, signing_key, certificate, expiration)


def _access(value: Any) -> AccessConfig | None:
    if value is None:
        return None
    section = _mapping(value, "access")
    for name in section:
        if name not in ("admins", "groups", "rules"):  # a typo here must not pass unnoticed
            raise ConfigError("unknown key (expected admins, groups, rules)", key=f"access.{name}")
    groups = {
        str(name): _str_list(members, f"access.groups.{name}")
        for name, members in _mapping(section.get("groups"), "access.groups").items()
    }
    rules_value = section.get("rules")
    if rules_value is not None and not isinstance(rules_value, list):
        raise ConfigError(f"expected a list of rules, got {rules_value!r}", key="access.rules")
    rules = [_access_rule(r, f"access.rules[{i}]", groups) for i, r in enumerate(rules_value or [])]
    return AccessConfig(_str_list(section.get("admins"), "access.admins"), groups, rules)


def _access_rule(value: Any, key: str, groups: Mapping[str, list[str]]) -> AccessRule:
    entry = _mapping(value, key)
    for name in entry:
        if name not in _RULE_KEYS:
            known = ", ".join(sorted(_RULE_KEYS))
            raise ConfigError(f"unknown key (expected {known})", key=f"{key}.{name}")
    repositories = _str_list(entry.get("repositories"), f"{key}.repositories")
    if not repositories or not all(repositories):
        raise ConfigError("expected repository patterns like team/**", key=f"{key}.repositories")
    actions: list[str] = []
    for i, action in enumerate(_str_list(entry.get("actions"), f"{key}.actions")):
        if action == "*":
            actions.extend(ACCESS_ACTIONS)
        elif action in ACCESS_ACTIONS:
            actions.append(action)
        else:
            raise ConfigError(
                f"expected pull, push, delete or *, got {action!r}", key=f"{key}.actions[{i}]"
            )
    if not actions:
        raise ConfigError("missing; some of pull, push, delete", key=f"{key}.actions")
    rule = AccessRule(
        repositories=repositories,
        actions=sorted(set(actions), key=ACCESS_ACTIONS.index),
        users=_str_list(entry.get("users"), f"{key}.users"),
        groups=_str_list(entry.get("groups"), f"{key}.groups"),
        anonymous=_bool(entry.get("anonymous"), f"{key}.anonymous", False),
        authenticated=_bool(entry.get("authenticated"), f"{key}.authenticated", False),
    )
    for i, group in enumerate(rule.groups):
        if group not in groups:
            raise ConfigError(f"no group {group!r} in access.groups", key=f"{key}.groups[{i}]")
    if not (rule.users or rule.groups or rule.anonymous or rule.authenticated):
        raise ConfigError("names nobody: set users, groups, anonymous or authenticated", key=key)
    if rule.anonymous and set(rule.actions) - {"pull"}:
        logger.warning("%s lets anonymous callers %s", key, ", ".join(rule.actions))
    return rule


def _redis(value: Any) -> RedisConfig | None:
    """registry:2's redis section; `tls` also takes a client certificate and server CAs."""
    if not _has_settings(value):
        return None
    section = _mapping(value, "redis")
    _warn_unknown(
        section,
        "redis",
        {"addr", "username", "password", "db", "dialtimeout", "readtimeout", "writetimeout"}
        | {"pool", "tls"},
    )
    addr = _str(section.get("addr"), "redis.addr")
    try:
        parse_addr(addr)
    except ValueError as exc:
        raise ConfigError(f"{exc} (expected host:port)", key="redis.addr") from exc
    pool = _mapping(section.get("pool"), "redis.pool")
    _warn_unknown(pool, "redis.pool", {"maxidle", "maxactive", "idletimeout"})
    tls = _mapping(section.get("tls"), "redis.tls")
    _warn_unknown(tls, "redis.tls", {"enabled", "certificate", "key", "clientcas"})
    config = RedisConfig(
        addr=addr,
        password=_str(section.get("password"), "redis.password"),
        username=_str(section.get("username"), "redis.username"),
        db=_int(section.get("db"), "redis.db", 0),
        dialtimeout=_duration(section.get("dialtimeout"), "redis.dialtimeout", 0.0),
        readtimeout=_duration(section.get("readtimeout"), "redis.readtimeout", 0.0),
        writetimeout=_duration(section.get("writetimeout"), "redis.writetimeout", 0.0),
        pool_maxidle=_int(pool.get("maxidle"), "redis.pool.maxidle", 0),
        pool_maxactive=_int(pool.get("maxactive"), "redis.pool.maxactive", 0),
        pool_idletimeout=_duration(pool.get("idletimeout"), "redis.pool.idletimeout", 0.0),
        tls_enabled=_bool(tls.get("enabled"), "redis.tls.enabled", False),
        tls_certificate=_str(tls.get("certificate"), "redis.tls.certificate"),
        tls_key=_str(tls.get("key"), "redis.tls.key"),
        tls_clientcas=_str_list(tls.get("clientcas"), "redis.tls.clientcas"),
    )
    if config.db < 0:
        raise ConfigError("must not be negative", key="redis.db")
    if bool(config.tls_certificate) != bool(config.tls_key):
        raise ConfigError("certificate and key go together", key="redis.tls")
    return config


def _debug(value: Any) -> DebugConfig:
    key = "http.debug"
    section = _mapping(value, key)
    _warn_unknown(section, key, {"addr", "prometheus"})
    addr = _str(section.get("addr"), f"{key}.addr")
    if addr:
        try:
            parse_addr(addr)
        except ValueError as exc:
            raise ConfigError(str(exc), key=f"{key}.addr") from exc
    prometheus = _mapping(section.get("prometheus"), f"{key}.prometheus")
    _warn_unknown(prometheus, f"{key}.prometheus", {"enabled", "path"})
    path = _str(prometheus.get("path"), f"{key}.prometheus.path") or "/metrics"
    if not path.startswith("/"):
        raise ConfigError(f"expected a path like /metrics, got {path!r}", key=f"{key}.prometheus")
    return DebugConfig(
        addr=addr,
        prometheus_enabled=_bool(prometheus.get("enabled"), f"{key}.prometheus.enabled", True),
        prometheus_path=path,
    )


def _gc(value: Any) -> GCConfig:
    key = "storage.maintenance.gc"
    section = _mapping(value, key)
    _warn_unknown(
        section, key, {"enabled", "interval", "graceperiod", "deleteuntagged", "dryrun", "settle"}
    )
    default = GCConfig()
    gc = GCConfig(
        enabled=_bool(section.get("enabled"), f"{key}.enabled", default.enabled),
        interval=_duration(section.get("interval"), f"{key}.interval", default.interval),
        graceperiod=_duration(
            section.get("graceperiod"), f"{key}.graceperiod", default.graceperiod
        ),
        deleteuntagged=_bool(section.get("deleteuntagged"), f"{key}.deleteuntagged", False),
        dryrun=_bool(section.get("dryrun"), f"{key}.dryrun", False),
        settle=_duration(section.get("settle"), f"{key}.settle", default.settle),
    )
    if gc.enabled and gc.interval <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.interval")
    if gc.graceperiod < 0 or gc.settle < 0:
        raise ConfigError("graceperiod and settle must not be negative", key=key)
    return gc


def _notifications(value: Any) -> NotificationsConfig:
    section = _mapping(value, "notifications")
    _warn_unknown(section, "notifications", {"endpoints", "events"})
    events = _mapping(section.get("events"), "notifications.events")
    _warn_unknown(events, "notifications.events", {"includereferences"})
    config = NotificationsConfig(
        include_references=_bool(
            events.get("includereferences"), "notifications.events.includereferences", False
        )
    )
    known = {"name", "disabled", "url", "headers", "timeout", "threshold", "backoff"}
    known |= {"ignoredmediatypes", "ignore"}
    raw_endpoints = section.get("endpoints")
    for i, entry in enumerate(_active_entries(raw_endpoints, "notifications.endpoints")):
        key = f"notifications.endpoints[{i}]"
        entry = _mapping(entry, key)
        _warn_unknown(entry, key, known)
        url = _str(entry.get("url"), f"{key}.url")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"expected an http(s) URL, got {url!r}", key=f"{key}.url")
        ignore = _mapping(entry.get("ignore"), f"{key}.ignore")
        _warn_unknown(ignore, f"{key}.ignore", {"mediatypes", "actions"})
        headers = {
            str(name): _str_list(values, f"{key}.headers.{name}")
            for name, values in _mapping(entry.get("headers"), f"{key}.headers").items()
        }
        # registry:2's EndpointConfig.defaults: zero or negative means the default.
        timeout = _duration(entry.get("timeout"), f"{key}.timeout", 0.0)
        threshold = _int(entry.get("threshold"), f"{key}.threshold", 0)
        backoff = _duration(entry.get("backoff"), f"{key}.backoff", 0.0)
        config.endpoints.append(
            NotificationEndpoint(
                name=_str(entry.get("name"), f"{key}.name") or f"endpoint-{i}",
                url=url,
                headers=headers,
                timeout=timeout if timeout > 0 else 1.0,
                threshold=threshold if threshold > 0 else 10,
                backoff=backoff if backoff > 0 else 1.0,
                ignored_mediatypes=_str_list(entry.get("ignoredmediatypes"), key)
                + _str_list(ignore.get("mediatypes"), f"{key}.ignore.mediatypes"),
                ignored_actions=_str_list(ignore.get("actions"), f"{key}.ignore.actions"),
            )
        )
    return config


def _retention(value: Any) -> RetentionConfig | None:
    """retention (cargohold). Keys may be written keeplast or keep_last (the former survives
    REGISTRY_* overrides, which split names on underscores)."""
    if value is None:
        return None
    section = _mapping(value, "retention")
    _warn_unknown(section, "retention", {"policies", "pullflushinterval"})
    config = RetentionConfig(
        pull_flush_interval=_duration(
            section.get("pullflushinterval"), "retention.pullflushinterval", 60.0
        )
    )
    if config.pull_flush_interval <= 0:
        raise ConfigError("must be a positive duration", key="retention.pullflushinterval")
    policies = section.get("policies")
    if policies is not None and not isinstance(policies, list):
        raise ConfigError(f"expected a list, got {policies!r}", key="retention.policies")
    aliases = {"keep_last": "keeplast", "keep_within": "keepwithin", "keep_tags": "keeptags"}
    aliases["delete_untagged"] = "deleteuntagged"
    for i, entry in enumerate(policies or []):
        key = f"retention.policies[{i}]"
        entry = {aliases.get(str(k), str(k)): v for k, v in _mapping(entry, key).items()}
        _warn_unknown(
            entry, key, {"repositories", "keeplast", "keepwithin", "keeptags", "deleteuntagged"}
        )
        repositories = _str_list(entry.get("repositories"), f"{key}.repositories")
        if not repositories:
            raise ConfigError("needs repositories (a glob such as team/* or *)", key=key)
        keep_last = None
        if entry.get("keeplast") is not None:
            keep_last = _int(entry.get("keeplast"), f"{key}.keep_last", 0)
            if keep_last < 0:
                raise ConfigError("must not be negative", key=f"{key}.keep_last")
        keep_within = None
        if entry.get("keepwithin") is not None:
            keep_within = _duration(entry.get("keepwithin"), f"{key}.keep_within", 0.0)
        keep_tags = None
        if entry.get("keeptags") is not None:
            patterns = _regex_list(entry.get("keeptags"), f"{key}.keep_tags")
            keep_tags = "|".join(f"(?:{p})" for p in patterns)
        config.policies.append(
            RetentionPolicy(
                repositories=repositories,
                keep_last=keep_last,
                keep_within=keep_within,
                keep_tags=keep_tags,
                delete_untagged=_bool(entry.get("deleteuntagged"), f"{key}.delete_untagged", False),
            )
        )
    return config


def _reject_unsupported_sections(raw: Mapping[str, Any]) -> None:
    """Sections that would change who may push or what happens on push: refuse, never ignore."""
    if _has_settings(raw.get("proxy")):
        raise _unsupported("proxy", "pull-through cache (proxy)")
    middleware = _mapping(raw.get("middleware"), "middleware")
    for kind, entries in middleware.items():
        if _active_entries(entries, f"middleware.{kind}"):
            raise _unsupported(f"middleware.{kind}", "middleware")
    policy = _mapping(raw.get("policy"), "policy")
    if _has_settings(policy.get("repository")):
        raise _unsupported("policy.repository", "repository class policy")
    for name in _IGNORED_SECTIONS:
        if raw.get(name) is not None:
            logger.debug("configuration section %s accepted and ignored", name)


def _build(raw: dict[str, Any]) -> Config:
    version = _version(raw)  # first: another version's keys would mean something else
    _warn_unknown(raw, "", _SECTIONS)
    _reject_unsupported_sections(raw)
    auth, access = _auth(raw.get("auth")), _access(raw.get("access"))
    if access is not None and not auth.enabled:
        raise ConfigError("needs auth (htpasswd or token) to tell who is asking", key="access")
    storage, redis = _storage(raw.get("storage")), _redis(raw.get("redis"))
    if storage.cache_blobdescriptor == "redis" and redis is None:
        raise ConfigError("redis needs a redis section with an addr", key="storage.cache")
    return Config(
        version=version,
        log=_log(raw),
        storage=storage,
        http=_http(raw.get("http")),
        validation=_validation(raw.get("validation")),
        raw=raw,
        auth=auth,
        access=access,
        redis=redis,
        debug=_debug(_mapping(raw.get("http"), "http").get("debug")),
        notifications=_notifications(raw.get("notifications")),
        retention=_retention(raw.get("retention")),
    )


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
    return _build(raw)


def default_config(root: str) -> Config:
    """The embedded default with storage under `root`, ignoring the environment.

    Unlike registry:2's example config, deleting manifests and blobs is enabled: a registry
    you run yourself should let you clean it up, and clients only delete when asked to.
    """
    return load_config(None, {}, default_root=root)
