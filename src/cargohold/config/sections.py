"""The section parsers: each section's field table, then the checks that span its keys.

A table (config/fields.py) decodes the keys and names them in errors; what is left here is what
a table cannot say: one key's meaning depending on another, lists of entries, and refusals of
what cargohold does not implement.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cargohold.config.fields import Field, Section
from cargohold.config.model import (
    ACCESS_ACTIONS,
    DEFAULT_BLOBDIRSIZE,
    LOG_LEVELS,
    TLS12_CIPHER_SUITES,
    TLS13_CIPHER_SUITES,
    TLS_VERSIONS,
    TOKEN_ALGORITHMS,
    AccessConfig,
    AccessRule,
    AuthConfig,
    BuiltinTokenConfig,
    Config,
    DebugConfig,
    GCConfig,
    HtpasswdConfig,
    HttpConfig,
    HttpLimits,
    ImmutableRule,
    LogConfig,
    MirrorConfig,
    MirrorsConfig,
    NotificationEndpoint,
    NotificationsConfig,
    PrefetchRule,
    QuotaRule,
    RedisConfig,
    RetentionConfig,
    RetentionPolicy,
    StorageConfig,
    TlsConfig,
    TokenConfig,
    UiConfig,
    UploadPurging,
    ValidationConfig,
)
from cargohold.config.values import (
    ConfigError,
    active_entries,
    boolean,
    byte_size,
    check_addr,
    duration,
    has_settings,
    headers,
    integer,
    mapping,
    optional,
    raw,
    regex_list,
    required,
    size,
    text,
    text_list,
    text_or_default,
    unsupported,
    warn_unknown,
)
from cargohold.storage import fsparams, memparams, s3params
from cargohold.storage.params import DriverParams, ParamError

logger = logging.getLogger("cargohold.config")

# registry:2's top-level keys (Configuration struct in configuration/configuration.go).
# fmt: off
SECTIONS = frozenset({
    "version", "log", "loglevel", "storage", "auth", "middleware", "reporting", "http",
    "notifications", "redis", "health", "catalog", "proxy", "compatibility", "validation",
    "policy", "access",  # access: cargohold's repository access policy (see _access)
})
# fmt: on
SECTIONS = SECTIONS | {"retention"}  # cargohold's retention policies (see _retention)
SECTIONS = SECTIONS | {"ui"}  # cargohold's web UI (see UI)
SECTIONS = SECTIONS | {"immutable", "quotas"}  # cargohold's governance rules (see _immutable)
SECTIONS = SECTIONS | {"mirrors"}  # cargohold's pull-through mirrors (see _mirrors)
# Sections that do not change what a client sees: accepted, and only mentioned at debug level.
_IGNORED_SECTIONS = ("health", "reporting", "compatibility", "catalog")
# Keys of `storage` that configure the registry rather than name a driver.
_STORAGE_OPTIONS = frozenset({"delete", "redirect", "cache", "maintenance", "tag"})
# Each driver's parameters are read beside the driver (cargohold.storage.*params).
_DRIVERS: dict[str, DriverParams] = {
    "filesystem": fsparams.PARAMS,
    "inmemory": memparams.PARAMS,
    "s3": s3params.PARAMS,
}
_SUPPORTED_DRIVERS = tuple(_DRIVERS)
_KNOWN_DRIVERS = frozenset({"s3-aws", "azure", "gcs", "swift", "oss"})


# -------------------------------------------------------------------------- version, log


def _version(raw_config: Mapping[str, Any]) -> str:
    value = raw_config.get("version")
    if value is None:
        raise ConfigError('missing; expected "0.1"', key="version")
    version = text(value, "version")
    if version != "0.1":
        raise ConfigError(f'unsupported version {version!r}; expected "0.1"', key="version")
    return version


LOG = Section(
    "log",
    LogConfig,
    (
        Field("level", raw, None),
        Field("formatter", text_or_default),
        Field("fields", mapping),
        Field("hooks", raw, None),  # refused below when an entry is active
        Field("reportcaller", boolean, False, keep=False),
        Field("accesslog.disabled", boolean),
        Field("audit.path", text, attr="audit_path"),  # cargohold: the JSON audit trail
    ),
)


def _log(raw_config: Mapping[str, Any]) -> LogConfig:
    values = LOG.read(raw_config.get("log"))
    level_value, level_key = values["level"], "log.level"
    if level_value in (None, "") and raw_config.get("loglevel") not in (None, ""):
        logger.warning("loglevel is deprecated; use log.level")
        level_value, level_key = raw_config["loglevel"], "loglevel"
    level = text(level_value, level_key, "info").lower() or "info"
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"expected one of {', '.join(LOG_LEVELS)}, got {level_value!r}", key=level_key
        )
    formatter = values["formatter"]
    if formatter == "logstash":
        logger.warning("log.formatter: logstash is written as plain json")
        formatter = "json"
    if formatter not in ("text", "json"):
        raise ConfigError(
            f"expected text, json or logstash, got {formatter!r}", key="log.formatter"
        )
    if active_entries(values["hooks"], "log.hooks"):
        raise unsupported("log.hooks", "log hooks")
    del values["hooks"]
    values.update(level=level, formatter=formatter)
    values["fields"] = {str(k): v for k, v in values["fields"].items()}
    return LogConfig(**values)


# -------------------------------------------------------------------------- storage


def _driver_params(driver: str, value: Any) -> dict[str, Any]:
    key = f"storage.{driver}"
    params = dict(mapping(value, key))
    reader = _DRIVERS[driver]
    warn_unknown(params, key, reader.known)
    try:
        return reader.parse(params, lambda name, message: _driver_warning(key, name, message))
    except ParamError as exc:
        raise ConfigError(exc.message, key=f"{key}.{exc.key}") from exc


def _driver_warning(key: str, name: str, message: str) -> None:
    logger.warning("%s.%s %s", key, name, message)


PURGING = Section(
    "storage.maintenance.uploadpurging",
    UploadPurging,
    (
        Field("enabled", boolean),
        Field("age", duration),
        Field("interval", duration),
        Field("dryrun", boolean),
    ),
)


def _purging(value: Any, key: str, default: Any = None) -> UploadPurging:
    """registry:2 purges stale uploads by default; a given section is read key by key, missing
    keys keeping the defaults (registry:2 instead panics on a missing age/interval/dryrun)."""
    purging = PURGING.build(value, key)
    if purging.enabled and purging.interval <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.interval")
    if purging.enabled and purging.age < 0:
        raise ConfigError("must not be negative", key=f"{key}.age")
    return purging


GC = Section(
    "storage.maintenance.gc",
    GCConfig,
    (
        Field("enabled", boolean),
        Field("interval", duration),
        Field("graceperiod", duration),
        Field("deleteuntagged", boolean),
        Field("dryrun", boolean),
        Field("settle", duration),
    ),
)


def _gc(value: Any, key: str, default: Any = None) -> GCConfig:
    gc = GC.build(value, key)
    if gc.enabled and gc.interval <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.interval")
    if gc.graceperiod < 0 or gc.settle < 0:
        raise ConfigError("graceperiod and settle must not be negative", key=key)
    return gc


STORAGE = Section(
    "storage",
    StorageConfig,
    (
        Field("delete.enabled", boolean, attr="delete_enabled"),
        Field("redirect.disable", boolean, attr="redirect_disable"),
        Field("redirect.expirydelay", duration, attr="redirect_expirydelay"),
        Field("tag.concurrencylimit", integer, 0, keep=False),
        Field("cache.blobdescriptor", raw, None),
        Field("cache.layerinfo", raw, None),  # the older spelling, which registry:2 still reads
        Field("cache.blobdescriptorsize", integer, 0, keep=False),
        Field("cache.blobdir", text, attr="cache_blobdir"),
        Field("cache.blobdirsize", byte_size, DEFAULT_BLOBDIRSIZE, attr="cache_blobdirsize"),
        Field("maintenance.readonly.enabled", boolean, attr="readonly"),
        Field("maintenance.uploadpurging", _purging, attr="purging"),
        Field("maintenance.gc", _gc, attr="gc"),
    ),
    check_unknown=False,  # the other keys name the driver
)


def _storage(value: Any) -> StorageConfig:
    section = mapping(value, "storage")
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
        raise unsupported("storage", f"storage driver {driver!r}")
    if driver not in _SUPPORTED_DRIVERS:
        raise ConfigError(
            f"unknown storage driver {driver!r} (supported: {', '.join(_SUPPORTED_DRIVERS)})",
            key="storage",
        )
    values = STORAGE.read(section)
    layerinfo = values.pop("cache_layerinfo")
    old = values["cache_blobdescriptor"] is None and layerinfo is not None
    cache_key = f"storage.cache.{'layerinfo' if old else 'blobdescriptor'}"
    kind = text(layerinfo if old else values["cache_blobdescriptor"], cache_key)
    if kind not in ("", "inmemory", "redis"):
        logger.warning("%s: unknown cache type %r, caching disabled", cache_key, kind)
        kind = ""
    values["cache_blobdescriptor"] = kind
    return StorageConfig(
        driver=driver, params=_driver_params(driver, section.get(driver)), **values
    )


# -------------------------------------------------------------------------- http


def _tls(value: Any, key: str, default: Any = None) -> TlsConfig | None:
    values = TLS.read(value, key)
    if has_settings(values["letsencrypt"]):
        raise unsupported(f"{key}.letsencrypt", "Let's Encrypt")
    certificate, private_key = values["certificate"], values["key"]
    clientcas = values["clientcas"]
    if not certificate and not private_key:
        if clientcas:
            raise ConfigError("needs http.tls.certificate and http.tls.key", key=f"{key}.clientcas")
        return None
    for name, path in (("certificate", certificate), ("key", private_key)):
        if not path:
            raise ConfigError("missing (TLS needs both certificate and key)", key=f"{key}.{name}")
    minimum = values["minimumtls"].lower()
    if minimum in ("tls1.0", "tls1.1"):
        logger.warning("%s.minimumtls: %s is insecure, using tls1.2", key, minimum)
        minimum = "tls1.2"
    if minimum not in TLS_VERSIONS:
        raise ConfigError(f"expected tls1.2 or tls1.3, got {minimum!r}", key=f"{key}.minimumtls")
    suites = values["ciphersuites"]
    for i, suite in enumerate(suites):
        if suite not in TLS12_CIPHER_SUITES and suite not in TLS13_CIPHER_SUITES:
            raise ConfigError(f"unknown cipher suite {suite!r}", key=f"{key}.ciphersuites[{i}]")
    return TlsConfig(certificate, private_key, clientcas, minimum, suites)


TLS = Section(
    "http.tls",
    TlsConfig,
    (
        Field("letsencrypt", raw, None),
        Field("certificate", text, ""),
        Field("key", text, ""),
        Field("clientcas", text_list),
        Field("minimumtls", text_or_default),
        Field("ciphersuites", text_list),
    ),
)


def _debug_addr(value: Any, key: str, default: Any) -> str:
    addr = text(value, key, default)
    if addr:
        check_addr(addr, key)
    return addr


def _metrics_path(value: Any, key: str, default: Any) -> str:
    path = text_or_default(value, key, default)
    if not path.startswith("/"):
        key = key.rpartition(".")[0]  # the message has always named the prometheus section
        raise ConfigError(f"expected a path like /metrics, got {path!r}", key=key)
    return path


DEBUG = Section(
    "http.debug",
    DebugConfig,
    (
        Field("addr", _debug_addr),
        Field("prometheus.enabled", boolean),
        Field("prometheus.path", _metrics_path),
    ),
)


def _listen_addr(value: Any, key: str, default: Any) -> str:
    addr = text_or_default(value, key, default)
    check_addr(addr, key)
    return addr


def _non_negative_duration(value: Any, key: str, default: Any) -> float:
    seconds = duration(value, key, default)
    if seconds < 0:
        raise ConfigError(f"must not be negative, got {value!r}", key=key)
    return seconds


def _non_negative_integer(value: Any, key: str, default: Any) -> int:
    number = integer(value, key, default)
    if number < 0:
        raise ConfigError(f"must not be negative, got {value!r}", key=key)
    return number


HTTP_LIMITS = Section(
    "http.limits",
    HttpLimits,
    (
        Field("headertimeout", _non_negative_duration),
        Field("idletimeout", _non_negative_duration),
        Field("maxheaderbytes", _non_negative_integer),
        Field("maxheaders", _non_negative_integer),
        Field("maxconnectionsperclient", _non_negative_integer),
        Field("loginfailures", _non_negative_integer),
        Field("loginwindow", _non_negative_duration),
    ),
)


def _http_limits(value: Any, key: str, default: Any = None) -> HttpLimits:
    return HTTP_LIMITS.build(value, key)


def _cidr_list(value: Any, key: str, default: Any = None) -> list[str]:
    import ipaddress

    networks = text_list(value, key)
    for i, network in enumerate(networks):
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as exc:
            message = f"expected an address or CIDR, got {network!r}"
            raise ConfigError(message, key=f"{key}[{i}]") from exc
    return networks


HTTP = Section(
    "http",
    HttpConfig,
    (
        Field("letsencrypt", raw, None, keep=False),  # refused in _http
        Field("addr", _listen_addr),
        Field("net", text_or_default),
        Field("prefix", text),
        Field("host", text),
        Field("headers", headers),
        Field("http2.disabled", boolean),
        Field("secret", text),
        Field("relativeurls", boolean),
        Field("draintimeout", duration),
        Field("tls", _tls),
        Field("limits", _http_limits),  # cargohold
        Field("trustedproxies", _cidr_list),  # cargohold
    ),
    also=frozenset({"debug"}),  # http.debug is Config.debug (DEBUG)
)


def _http(value: Any) -> HttpConfig:
    section = mapping(value, "http")
    if has_settings(section.get("letsencrypt")):
        raise unsupported("http.letsencrypt", "Let's Encrypt")
    values = HTTP.read(section)
    net = values["net"]
    if net in ("unix", "unixpacket", "tcp4", "tcp6"):
        raise unsupported("http.net", f"listening on {net!r}")
    if net != "tcp":
        raise ConfigError(f"expected tcp, got {net!r}", key="http.net")
    prefix = values["prefix"].strip("/")
    host = values["host"]
    if host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(
                f"expected an absolute URL like https://registry.example.com, got {host!r}",
                key="http.host",
            )
    values.update(prefix=f"/{prefix}" if prefix else "", host=host.rstrip("/"))
    return HttpConfig(**values)


# -------------------------------------------------------------------------- validation


def _platform_list(value: Any, key: str, default: Any = None) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list of {{architecture, os}}, got {value!r}", key=key)
    platforms = []
    for i, item in enumerate(value):
        entry = PLATFORM.read(item, f"{key}[{i}]")
        if not entry["architecture"] or not entry["os"]:
            raise ConfigError("needs both architecture and os", key=f"{key}[{i}]")
        platforms.append(entry)
    return platforms


PLATFORM = Section(
    "validation.manifests.indexes.platformlist[]",
    dict,  # entries stay plain {architecture, os} mappings
    (Field("architecture", text, ""), Field("os", text, "")),
)

VALIDATION = Section(
    "validation",
    ValidationConfig,
    (
        Field("disabled", boolean),
        Field("enabled", boolean, False),
        Field("manifests.urls.allow", regex_list, attr="urls_allow"),
        Field("manifests.urls.deny", regex_list, attr="urls_deny"),
        Field("manifests.indexes.platforms", text_or_default, attr="indexes_platforms"),
        Field("manifests.indexes.platformlist", _platform_list, attr="indexes_platformlist"),
    ),
)


def _validation(value: Any) -> ValidationConfig:
    values = VALIDATION.read(value)
    if mapping(value, "validation").get("enabled") is False and not values["disabled"]:
        # registry:2 computes enabled = enabled || !disabled, so this alone changes nothing.
        logger.warning(
            "validation.enabled: false does not disable validation in registry:2; "
            "use validation.disabled: true"
        )
    key = "validation.manifests.indexes.platforms"
    platforms = values["indexes_platforms"] = values["indexes_platforms"].lower()
    if platforms not in ("all", "none", "list"):
        raise ConfigError(f"expected all, none or list, got {platforms!r}", key=key)
    if platforms == "list" and not values["indexes_platformlist"]:
        logger.warning("%s is 'list' but platformlist is empty: no platform is required", key)
    enabled = values.pop("enabled")
    values["disabled"] = values["disabled"] and not enabled
    return ValidationConfig(**values)


# -------------------------------------------------------------------------- auth, access


HTPASSWD = Section(
    "auth.htpasswd",
    HtpasswdConfig,
    (
        Field("realm", required("the realm clients are asked to log in to")),
        Field("path", required("the htpasswd file (cargohold htpasswd add FILE USER)")),
    ),
)


def _auth(value: Any) -> AuthConfig:
    section = mapping(value, "auth")
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
        return AuthConfig(htpasswd=HTPASSWD.build(section[kind]))
    if kind == "token":
        return AuthConfig(token=_token(section[kind]))
    raise ConfigError(f"unknown auth type {kind!r} (supported: htpasswd, token)", key="auth")


def _builtin_token(value: Any, key: str, default: Any = None) -> BuiltinTokenConfig | None:
    if value is None:
        return None
    values = BUILTIN_TOKEN.read(value, key)
    if not values["certificate"]:
        signing_key = values["key"]
        stem = signing_key[:-4] if signing_key.endswith(".key") else signing_key
        values["certificate"] = f"{stem}.crt"
    if values["expiration"] <= 0:
        raise ConfigError("must be a positive duration", key=f"{key}.expiration")
    return BuiltinTokenConfig(**values)


BUILTIN_TOKEN = Section(
    "auth.token.builtin",
    BuiltinTokenConfig,
    (
        Field("htpasswd", required("the htpasswd file of the users who log in")),
        Field("key", required("where the signing key is kept")),
        Field("certificate", text, ""),
        Field("expiration", duration),
    ),
)


def _algorithms(value: Any, key: str, default: Any) -> list[str]:
    algorithms = text_list(value, key)
    for i, alg in enumerate(algorithms):
        if alg not in TOKEN_ALGORITHMS:
            raise ConfigError(
                f"unsupported algorithm {alg!r} (expected one of {', '.join(TOKEN_ALGORITHMS)})",
                key=f"{key}[{i}]",
            )
    return algorithms or list(default)


TOKEN = Section(
    "auth.token",
    TokenConfig,
    (
        Field("builtin", _builtin_token),
        Field("signingalgorithms", _algorithms),
        Field("realm", text, ""),
        Field("service", text, ""),
        Field("issuer", text, ""),
        Field("rootcertbundle", text),
        Field("jwks", text),
        Field("autoredirect", boolean),
        Field("autoredirectpath", text_or_default),
    ),
)


def _token(value: Any) -> TokenConfig:
    config = TOKEN.build(value)
    if config.builtin is not None:  # cargohold's own token server: everything has a default
        config.service = config.service or "cargohold"
        config.issuer = config.issuer or "cargohold"
        return config
    key = TOKEN.key
    for name, why in (
        ("realm", "the URL of the token server clients are sent to"),
        ("service", "the service name tokens are issued for (their aud)"),
        ("issuer", "the iss of valid tokens"),
    ):
        if not getattr(config, name):
            raise ConfigError(f"missing; {why}", key=f"{key}.{name}")
    if not config.rootcertbundle and not config.jwks:
        raise ConfigError(
            "missing; the certificates (or jwks) that token signatures are checked against",
            key=f"{key}.rootcertbundle",
        )
    return config


def _groups(value: Any, key: str, default: Any = None) -> dict[str, list[str]]:
    return {
        str(name): text_list(members, f"{key}.{name}")
        for name, members in mapping(value, key).items()
    }


def _entries(value: Any, key: str, default: Any = None) -> list[Any]:
    if value is not None and not isinstance(value, list):
        raise ConfigError(f"expected a list of rules, got {value!r}", key=key)
    return list(value or [])


ACCESS = Section(
    "access",
    AccessConfig,
    (
        Field("admins", text_list),
        Field("groups", _groups),
        Field("rules", _entries),
    ),
    strict=True,  # a typo here must not pass unnoticed
)

ACCESS_RULE = Section(
    "access.rules[]",
    AccessRule,
    (
        Field("repositories", text_list),
        Field("actions", text_list),
        Field("users", text_list),
        Field("groups", text_list),
        Field("anonymous", boolean),
        Field("authenticated", boolean),
    ),
    strict=True,
)


def _access(value: Any) -> AccessConfig | None:
    if value is None:
        return None
    values = ACCESS.read(value)
    groups = values["groups"]
    values["rules"] = [
        _access_rule(r, f"access.rules[{i}]", groups) for i, r in enumerate(values["rules"])
    ]
    return AccessConfig(**values)


def _access_rule(value: Any, key: str, groups: Mapping[str, list[str]]) -> AccessRule:
    values = ACCESS_RULE.read(value, key)
    repositories = values["repositories"]
    if not repositories or not all(repositories):
        raise ConfigError("expected repository patterns like team/**", key=f"{key}.repositories")
    actions: list[str] = []
    for i, action in enumerate(values["actions"]):
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
    values["actions"] = sorted(set(actions), key=ACCESS_ACTIONS.index)
    rule = AccessRule(**values)
    for i, group in enumerate(rule.groups):
        if group not in groups:
            raise ConfigError(f"no group {group!r} in access.groups", key=f"{key}.groups[{i}]")
    if not (rule.users or rule.groups or rule.anonymous or rule.authenticated):
        raise ConfigError("names nobody: set users, groups, anonymous or authenticated", key=key)
    if rule.anonymous and set(rule.actions) - {"pull"}:
        logger.warning("%s lets anonymous callers %s", key, ", ".join(rule.actions))
    return rule


# -------------------------------------------------------------------------- redis


def _redis_addr(value: Any, key: str, default: Any) -> str:
    addr = text(value, key)
    check_addr(addr, key, " (expected host:port)")
    return addr


REDIS = Section(
    "redis",
    RedisConfig,
    (
        Field("addr", _redis_addr, ""),
        Field("password", text),
        Field("username", text),
        Field("db", integer),
        Field("dialtimeout", duration),
        Field("readtimeout", duration),
        Field("writetimeout", duration),
        Field("pool.maxidle", integer),
        Field("pool.maxactive", integer),
        Field("pool.idletimeout", duration),
        Field("tls.enabled", boolean),
        Field("tls.certificate", text),
        Field("tls.key", text),
        Field("tls.clientcas", text_list),
    ),
)


def _redis(value: Any) -> RedisConfig | None:
    """registry:2's redis section; `tls` also takes a client certificate and server CAs."""
    if not has_settings(value):
        return None
    config = REDIS.build(value)
    if config.db < 0:
        raise ConfigError("must not be negative", key="redis.db")
    if bool(config.tls_certificate) != bool(config.tls_key):
        raise ConfigError("certificate and key go together", key="redis.tls")
    return config


# -------------------------------------------------------------------------- notifications


def _positive_or(fallback: float) -> Any:
    """registry:2's EndpointConfig.defaults: zero or negative means the default."""

    def decode(value: Any, key: str, default: Any) -> Any:
        number = (duration if isinstance(fallback, float) else integer)(value, key, 0)
        return number if number > 0 else fallback

    return decode


ENDPOINT = Section(
    "notifications.endpoints[]",
    NotificationEndpoint,
    (
        Field("name", text, ""),
        Field("url", text, ""),
        Field("headers", headers),
        Field("timeout", _positive_or(1.0)),
        Field("threshold", _positive_or(10)),
        Field("backoff", _positive_or(1.0)),
        Field("ignoredmediatypes", text_list),
        Field("ignore.mediatypes", text_list),
        Field("ignore.actions", text_list, attr="ignored_actions"),
    ),
    also=frozenset({"disabled"}),
)

NOTIFICATIONS = Section(
    "notifications",
    NotificationsConfig,
    (
        Field("endpoints", raw, None),
        Field("events.includereferences", boolean, attr="include_references"),
    ),
)


def _notifications(value: Any) -> NotificationsConfig:
    values = NOTIFICATIONS.read(value)
    endpoints = active_entries(values.pop("endpoints"), "notifications.endpoints")
    config = NotificationsConfig(**values)
    for i, entry in enumerate(endpoints):
        key = f"notifications.endpoints[{i}]"
        fields = ENDPOINT.read(entry, key)
        url = fields["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"expected an http(s) URL, got {url!r}", key=f"{key}.url")
        fields["name"] = fields["name"] or f"endpoint-{i}"
        fields["ignored_mediatypes"] = fields.pop("ignoredmediatypes") + fields.pop(
            "ignore_mediatypes"
        )
        config.endpoints.append(NotificationEndpoint(**fields))
    return config


# -------------------------------------------------------------------------- retention


def _non_negative(value: Any, key: str, default: Any) -> int:
    number = integer(value, key, default)
    if number < 0:
        raise ConfigError("must not be negative", key=key)
    return number


def _keep_tags(value: Any, key: str, default: Any) -> str:
    return "|".join(f"(?:{p})" for p in regex_list(value, key))


# Keys may be written keeplast or keep_last: the former survives REGISTRY_* overrides (which
# split names on underscores), the latter is what messages name.
_RETENTION_ALIASES = {
    "keep_last": "keeplast",
    "keep_within": "keepwithin",
    "keep_tags": "keeptags",
    "delete_untagged": "deleteuntagged",
}

RETENTION_POLICY = Section(
    "retention.policies[]",
    RetentionPolicy,
    (
        Field("repositories", text_list),
        Field("keeplast", optional(_non_negative), 0, attr="keep_last", label="keep_last"),
        Field("keepwithin", optional(duration), 0.0, attr="keep_within", label="keep_within"),
        Field("keeptags", optional(_keep_tags), attr="keep_tags", label="keep_tags"),
        Field("deleteuntagged", boolean, attr="delete_untagged", label="delete_untagged"),
    ),
)


def _policies(value: Any, key: str, default: Any = None) -> list[RetentionPolicy]:
    if value is not None and not isinstance(value, list):
        raise ConfigError(f"expected a list, got {value!r}", key=key)
    policies = []
    for i, entry in enumerate(value or []):
        entry_key = f"{key}[{i}]"
        entry = {
            _RETENTION_ALIASES.get(str(k), str(k)): v for k, v in mapping(entry, entry_key).items()
        }
        values = RETENTION_POLICY.read(entry, entry_key)
        if not values["repositories"]:
            raise ConfigError("needs repositories (a glob such as team/* or *)", key=entry_key)
        policies.append(RetentionPolicy(**values))
    return policies


def _positive_duration(value: Any, key: str, default: Any) -> float:
    seconds = duration(value, key, default)
    if seconds <= 0:
        raise ConfigError("must be a positive duration", key=key)
    return seconds


RETENTION = Section(
    "retention",
    RetentionConfig,
    (
        Field("pullflushinterval", _positive_duration, attr="pull_flush_interval"),
        Field("policies", _policies),
    ),
)


def _retention(value: Any) -> RetentionConfig | None:
    """retention (cargohold): which tags of which repositories garbage collection may drop."""
    return None if value is None else RETENTION.build(value)


# -------------------------------------------------------------------------- ui


UI = Section(
    "ui",
    UiConfig,
    (Field("enabled", boolean), Field("sessionlifetime", _positive_duration)),
)


# -------------------------------------------------------------------------- governance

IMMUTABLE_RULE = Section(
    "immutable[]",
    ImmutableRule,
    (Field("repositories", text_list), Field("tags", regex_list)),
)


def _immutable(value: Any) -> list[ImmutableRule]:
    """immutable (cargohold): tags nobody may move or delete (registry/governance.py)."""
    rules = []
    for i, entry in enumerate(_entries(value, "immutable")):
        key = f"immutable[{i}]"
        values = IMMUTABLE_RULE.read(entry, key)
        repositories, tags = values["repositories"], values["tags"]
        if not repositories or not all(repositories):
            message = "expected repository globs like release/**"
            raise ConfigError(message, key=f"{key}.repositories")
        if not tags:
            message = "expected a regular expression such as ^v[0-9]"
            raise ConfigError(message, key=f"{key}.tags")
        joined = tags[0] if len(tags) == 1 else "|".join(f"(?:{t})" for t in tags)
        rules.append(ImmutableRule(tuple(repositories), joined))
    return rules


QUOTA_RULE = Section(
    "quotas[]",
    QuotaRule,
    (
        Field("repositories", text_list),
        Field("namespace", text_list),
        Field("size", size, None),  # no default: a quota without a size is an error
    ),
)


def _quotas(value: Any) -> list[QuotaRule]:
    """quotas (cargohold): bytes per repository, or per namespace (registry/quota.py)."""
    rules = []
    for i, entry in enumerate(_entries(value, "quotas")):
        key = f"quotas[{i}]"
        section = mapping(entry, key)
        if ("repositories" in section) == ("namespace" in section):
            raise ConfigError("needs either repositories or namespace (a glob)", key=key)
        values = QUOTA_RULE.read(section, key)
        which = "namespace" if "namespace" in section else "repositories"
        globs = values[which]
        if not globs or not all(globs):
            raise ConfigError("expected globs like team/*", key=f"{key}.{which}")
        rules.append(QuotaRule(tuple(globs), values["size"], which == "namespace"))
    return rules


# -------------------------------------------------------------------------- mirrors (proxy)

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_MIRROR_PREFIX = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


def _remoteurl(value: Any, key: str, default: Any = None) -> str:
    url = text(value, key).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"expected an http(s) URL, got {url!r}", key=key)
    return url


def _readable(value: Any, key: str, default: Any = "") -> str:
    path = text(value, key)
    if path:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", key=key) from exc
    return path


def _text_tuple(value: Any, key: str, default: Any = ()) -> tuple[str, ...]:
    return tuple(text_list(value, key))


def _at_least(minimum: float, decode: Any) -> Any:
    def check(value: Any, key: str, default: Any) -> Any:
        result = decode(value, key, default)
        if result < minimum:
            raise ConfigError(f"must be at least {minimum:g}", key=key)
        return result

    return check


def _regexes(value: Any, key: str, default: Any = None) -> tuple[str, ...]:
    return tuple(regex_list(value, key)) or ("latest",)


PREFETCH_RULE = Section(
    "prefetch[]",
    PrefetchRule,
    (
        Field("repository", required("the upstream repository to keep in sync")),
        Field("tags", _regexes),
    ),
)


def _prefetch(value: Any, key: str, default: Any = None) -> tuple[PrefetchRule, ...]:
    if value is not None and not isinstance(value, list):
        raise ConfigError("expected a list of {repository, tags}", key=key)
    return tuple(PREFETCH_RULE.build(e, f"{key}[{i}]") for i, e in enumerate(value or []))


# registry:2's proxy has remoteurl, username, password and ttl; the rest are cargohold's, and a
# mirrors entry has them all plus its prefix.
_MIRROR_FIELDS = (
    Field("remoteurl", required("the upstream registry's URL")),
    Field("username", text),
    Field("password", text),
    Field("passwordfile", text, ""),
    Field("ttl", _at_least(0, duration)),
    Field("repositories", _text_tuple),
    Field("cafile", _readable),
    Field("insecure", boolean),
    Field("tagfreshness", _at_least(0, duration)),
    Field("maxconnections", _at_least(1, integer)),
    Field("maxsize", byte_size),
    Field("prefetch", _prefetch),
    Field("prefetchinterval", _at_least(1, duration)),
    Field("timeout", _at_least(0.001, duration)),
    Field("evictinterval", _at_least(1, duration)),
)
PROXY = Section("proxy", MirrorConfig, _MIRROR_FIELDS)
MIRROR = Section("mirrors[]", MirrorConfig, (Field("prefix", text), *_MIRROR_FIELDS))


def _mirror(section: Section[MirrorConfig], value: Any, key: str) -> MirrorConfig:
    values = section.read(value, key)
    values["remoteurl"] = _remoteurl(values["remoteurl"], f"{key}.remoteurl")
    passwordfile = values.pop("passwordfile")
    if passwordfile:
        if values["password"]:
            raise ConfigError("password and passwordfile exclude each other", key=key)
        try:
            with open(passwordfile, encoding="utf-8") as fh:
                values["password"] = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", key=f"{key}.passwordfile") from exc
    values.setdefault("prefix", "")
    return MirrorConfig(**values)


def _mirrors(raw_config: Mapping[str, Any]) -> MirrorsConfig:
    """registry:2's ``proxy`` (the whole registry mirrors one upstream) and cargohold's
    ``mirrors`` (upstreams under name prefixes, beside ordinary repositories)."""
    out = MirrorsConfig()
    proxy = mapping(raw_config.get("proxy"), "proxy")
    if any(v not in (None, "") for v in proxy.values()):
        out.entries.append(_mirror(PROXY, proxy, "proxy"))
    entries = raw_config.get("mirrors")
    if entries is None:
        return out
    if not isinstance(entries, list):
        raise ConfigError("expected a list of mirrors", key="mirrors")
    seen: list[str] = []
    for i, entry in enumerate(entries):
        key = f"mirrors[{i}]"
        prefix = text(mapping(entry, key).get("prefix"), f"{key}.prefix").strip("/")
        if not prefix or _MIRROR_PREFIX.match(prefix) is None:
            raise ConfigError(
                "a repository-name prefix is required (e.g. 'hub'); use the proxy section "
                "to mirror at the root",
                key=f"{key}.prefix",
            )
        if out.root is not None:
            raise ConfigError("cannot be combined with proxy (which mirrors every name)", key=key)
        for other in seen:
            if prefix == other or prefix.startswith(other + "/") or other.startswith(prefix + "/"):
                raise ConfigError(f"overlaps the prefix {other!r}", key=f"{key}.prefix")
        seen.append(prefix)
        mirror = _mirror(MIRROR, entry, key)
        out.entries.append(MirrorConfig(**{**mirror.__dict__, "prefix": prefix}))
    return out




# -------------------------------------------------------------------------- the whole file


def _reject_unsupported_sections(raw_config: Mapping[str, Any]) -> None:
    """Sections that would change who may push or what happens on push: refuse, never ignore."""
    middleware = mapping(raw_config.get("middleware"), "middleware")
    for kind, entries in middleware.items():
        if active_entries(entries, f"middleware.{kind}"):
            raise unsupported(f"middleware.{kind}", "middleware")
    policy = mapping(raw_config.get("policy"), "policy")
    if has_settings(policy.get("repository")):
        raise unsupported("policy.repository", "repository class policy")
    for name in _IGNORED_SECTIONS:
        if raw_config.get(name) is not None:
            logger.debug("configuration section %s accepted and ignored", name)


def build(raw_config: dict[str, Any]) -> Config:
    """Validate the merged dict (file + overrides) into a Config; raises ConfigError."""
    version = _version(raw_config)  # first: another version's keys would mean something else
    warn_unknown(raw_config, "", SECTIONS)
    _reject_unsupported_sections(raw_config)
    auth, access = _auth(raw_config.get("auth")), _access(raw_config.get("access"))
    if access is not None and not auth.enabled:
        raise ConfigError("needs auth (htpasswd or token) to tell who is asking", key="access")
    storage, redis = _storage(raw_config.get("storage")), _redis(raw_config.get("redis"))
    if storage.cache_blobdescriptor == "redis" and redis is None:
        raise ConfigError("redis needs a redis section with an addr", key="storage.cache")
    return Config(
        version=version,
        log=_log(raw_config),
        storage=storage,
        http=_http(raw_config.get("http")),
        validation=_validation(raw_config.get("validation")),
        raw=raw_config,
        auth=auth,
        access=access,
        redis=redis,
        debug=DEBUG.build(mapping(raw_config.get("http"), "http").get("debug")),
        notifications=_notifications(raw_config.get("notifications")),
        retention=_retention(raw_config.get("retention")),
        ui=UI.build(raw_config.get("ui")),
        immutable=_immutable(raw_config.get("immutable")),
        quotas=_quotas(raw_config.get("quotas")),
        mirrors=_mirrors(raw_config),
    )
