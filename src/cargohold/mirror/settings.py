"""The mirror configuration: registry:2's ``proxy`` section and cargohold's ``mirrors`` list.

``proxy`` makes the whole registry a pull-through cache of one upstream, exactly as in
registry:2 (``remoteurl``, ``username``, ``password``, ``ttl``); it becomes a mirror with an
empty prefix. ``mirrors`` (cargohold) adds any number of upstreams, each under a name prefix,
beside ordinary repositories. Both share the optional keys below, so a root-level mirror can
be tuned the same way (registry:2 ignores keys it does not know in its own sections' maps, so
a file using them still loads there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cargohold.config import (
    ConfigError,
    _bool,
    _duration,
    _int,
    _mapping,
    _str,
    _str_list,
    _warn_unknown,
)

DEFAULT_TTL = 168 * 3600.0  # registry:2's proxy.ttl default
DEFAULT_CONNECTIONS = 16
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}

_COMMON_KEYS = frozenset({
    "remoteurl", "username", "password", "passwordfile", "ttl", "repositories", "cafile",
    "insecure", "tagfreshness", "maxconnections", "maxsize", "prefetch", "prefetchinterval",
    "timeout", "evictinterval",
})  # fmt: skip


@dataclass(frozen=True)
class PrefetchRule:
    """Keep ``repository`` (upstream name) in sync for every tag matching one of ``tags``."""

    repository: str
    tags: tuple[str, ...] = ("latest",)  # regular expressions, matched whole


@dataclass(frozen=True)
class MirrorConfig:
    prefix: str  # "" for registry:2's proxy: every repository is mirrored
    remoteurl: str
    username: str = ""
    password: str = ""
    ttl: float = DEFAULT_TTL  # 0: cached content never expires
    repositories: tuple[str, ...] = ()  # allow-list of upstream names (globs as in `access`)
    cafile: str = ""
    insecure: bool = False  # accept self-signed certificates
    tagfreshness: float = 0.0  # a tag checked upstream this recently is served without a HEAD
    maxconnections: int = DEFAULT_CONNECTIONS
    maxsize: int = 0  # bytes; 0: unbounded
    prefetch: tuple[PrefetchRule, ...] = ()
    prefetchinterval: float = 3600.0
    timeout: float = 30.0  # connecting and each read of the upstream
    # How often maxsize and ttl are enforced; an image pulled this recently is never evicted.
    evictinterval: float = 60.0

    @property
    def label(self) -> str:
        """The name metrics and logs use for this mirror."""
        return self.prefix or "proxy"


@dataclass
class MirrorsConfig:
    entries: list[MirrorConfig] = field(default_factory=list)

    @property
    def root(self) -> MirrorConfig | None:
        """The registry:2 ``proxy`` mirror, when the whole registry is one."""
        for m in self.entries:
            if m.prefix == "":
                return m
        return None


def parse_size(value: Any, key: str) -> int:
    """``512MiB``, ``20GB``, ``1.5g`` or a plain number of bytes."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if m is None:
        raise ConfigError(f"expected a size like '20GiB' or '512MB', got {value!r}", key=key)
    unit = (m.group(2) or "").lower()
    binary = "i" in unit
    letter = unit[:1]
    base = (1024 ** "bkmgt".index(letter) if letter != "b" else 1) if binary else _UNITS[letter]
    return int(float(m.group(1)) * base)


def _remoteurl(value: Any, key: str) -> str:
    url = _str(value, key).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"expected an http(s) URL, got {url!r}", key=key)
    return url


def _prefetch(value: Any, key: str) -> tuple[PrefetchRule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("expected a list of {repository, tags}", key=key)
    rules = []
    for i, entry in enumerate(value):
        k = f"{key}[{i}]"
        item = _mapping(entry, k)
        _warn_unknown(item, k, {"repository", "tags"})
        repository = _str(item.get("repository"), f"{k}.repository")
        if not repository:
            raise ConfigError("is required", key=f"{k}.repository")
        tags = tuple(_str_list(item.get("tags"), f"{k}.tags")) or ("latest",)
        for t in tags:
            try:
                re.compile(t)
            except re.error as exc:
                raise ConfigError(f"invalid regular expression: {exc}", key=f"{k}.tags") from exc
        rules.append(PrefetchRule(repository, tags))
    return tuple(rules)


def _entry(section: Mapping[str, Any], key: str, prefix: str) -> MirrorConfig:
    password = _str(section.get("password"), f"{key}.password")
    passwordfile = _str(section.get("passwordfile"), f"{key}.passwordfile")
    if passwordfile:
        if password:
            raise ConfigError("password and passwordfile exclude each other", key=key)
        try:
            with open(passwordfile, encoding="utf-8") as fh:
                password = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", key=f"{key}.passwordfile") from exc
    cafile = _str(section.get("cafile"), f"{key}.cafile")
    if cafile:
        try:
            with open(cafile, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc}", key=f"{key}.cafile") from exc
    config = MirrorConfig(
        prefix=prefix,
        remoteurl=_remoteurl(section.get("remoteurl"), f"{key}.remoteurl"),
        username=_str(section.get("username"), f"{key}.username"),
        password=password,
        ttl=_duration(section.get("ttl"), f"{key}.ttl", DEFAULT_TTL),
        repositories=tuple(_str_list(section.get("repositories"), f"{key}.repositories")),
        cafile=cafile,
        insecure=_bool(section.get("insecure"), f"{key}.insecure", False),
        tagfreshness=_duration(section.get("tagfreshness"), f"{key}.tagfreshness", 0.0),
        maxconnections=_int(
            section.get("maxconnections"), f"{key}.maxconnections", DEFAULT_CONNECTIONS
        ),
        maxsize=parse_size(section.get("maxsize"), f"{key}.maxsize"),
        prefetch=_prefetch(section.get("prefetch"), f"{key}.prefetch"),
        prefetchinterval=_duration(
            section.get("prefetchinterval"), f"{key}.prefetchinterval", 3600.0
        ),
        timeout=_duration(section.get("timeout"), f"{key}.timeout", 30.0),
        evictinterval=_duration(section.get("evictinterval"), f"{key}.evictinterval", 60.0),
    )
    if config.maxconnections < 1:
        raise ConfigError("must be at least 1", key=f"{key}.maxconnections")
    if config.tagfreshness < 0 or config.ttl < 0:
        raise ConfigError("durations must not be negative", key=key)
    if config.evictinterval < 1:
        raise ConfigError("must be at least 1s", key=f"{key}.evictinterval")
    if config.prefetch and config.prefetchinterval < 1:
        raise ConfigError("must be at least 1s", key=f"{key}.prefetchinterval")
    return config


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PREFIX = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


def parse_mirrors(raw: Mapping[str, Any]) -> MirrorsConfig:
    """The ``proxy`` section (registry:2) and the ``mirrors`` list (cargohold), validated."""
    out = MirrorsConfig()
    proxy = _mapping(raw.get("proxy"), "proxy")
    if any(v not in (None, "") for v in proxy.values()):
        _warn_unknown(proxy, "proxy", _COMMON_KEYS)
        if not proxy.get("remoteurl"):
            raise ConfigError("is required when the proxy section is set", key="proxy.remoteurl")
        out.entries.append(_entry(proxy, "proxy", ""))
    mirrors = raw.get("mirrors")
    if mirrors is None:
        return out
    if not isinstance(mirrors, list):
        raise ConfigError("expected a list of mirrors", key="mirrors")
    seen: set[str] = set()
    for i, entry in enumerate(mirrors):
        key = f"mirrors[{i}]"
        section = _mapping(entry, key)
        _warn_unknown(section, key, _COMMON_KEYS | {"prefix"})
        prefix = _str(section.get("prefix"), f"{key}.prefix").strip("/")
        if not prefix or _PREFIX.match(prefix) is None:
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
        seen.add(prefix)
        out.entries.append(_entry(section, key, prefix))
    return out
