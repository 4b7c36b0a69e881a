"""The decoders a field table names, and the errors they raise.

Every decoder has the shape ``decode(value, key, default)``: ``value`` is what YAML (after the
``REGISTRY_*`` overrides) left at the dotted ``key``, ``None`` when absent, and the result is
the typed value or ``default``. The key is passed in only so that a ConfigError names it: that is
how every message of a wrong type comes to name the key it is about without the section
parsers writing it again.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from cargohold.storage.params import parse_duration as parse_duration  # re-exported

logger = logging.getLogger("cargohold.config")

Decoder = Callable[[Any, str, Any], Any]


class ConfigError(Exception):
    """A configuration problem that must stop the start; the message names the key."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


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


# -- decoders: (value, key, default) -> typed value


def mapping(value: Any, key: str, default: Any = None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    raise ConfigError(f"expected a mapping, got {value!r}", key=key)


def boolean(value: Any, key: str, default: Any) -> bool:
    if value is None:
        return bool(default)
    if isinstance(value, bool):
        return value
    raise ConfigError(f"expected a boolean, got {value!r}", key=key)


def text(value: Any, key: str, default: Any = "") -> str:
    """Scalars become their text, as yaml.v2 does when the Go field is a string."""
    if value is None:
        return "" if default is None else str(default)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ConfigError(f"expected a string, got {value!r}", key=key)


def text_or_default(value: Any, key: str, default: Any) -> str:
    """A string where empty means the default too (registry:2's `if x == "" { x = ... }`)."""
    return text(value, key) or str(default)


_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]i?B?|B)?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``10GiB``, ``500MB``, ``1.5TiB``, ``2048``: bytes (KiB etc. powers of 1024, KB of 1000)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid size {text!r} (expected e.g. 10GiB, 500MB or 1048576)")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    if unit == "B":
        return int(number)
    power = "KMGTP".index(unit[0]) + 1
    return int(number * (1024 if "I" in unit else 1000) ** power)


def size(value: Any, key: str, default: Any) -> int:
    """A positive size (quotas): ``10GiB``, ``500MB`` or a number of bytes."""
    try:
        number = parse_size(text(value, key, "" if default is None else str(default)))
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from exc
    if number <= 0:
        raise ConfigError("must be a positive size such as 10GiB", key=key)
    return number


def integer(value: Any, key: str, default: Any) -> int:
    if value is None:
        return int(default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    raise ConfigError(f"expected an integer, got {value!r}", key=key)


def text_list(value: Any, key: str, default: Any = None) -> list[str]:
    """A list of strings; a single string is taken as a one-element list."""
    if value is None:
        return list(default or ())
    if isinstance(value, list):
        return [text(item, f"{key}[{i}]") for i, item in enumerate(value)]
    return [text(value, key)]


def duration(value: Any, key: str, default: Any) -> float:
    if value is None:
        return float(default)
    if not isinstance(value, str):
        raise ConfigError(f"expected a duration like '24h' or '30m', got {value!r}", key=key)
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ConfigError(str(exc), key=key) from exc


def raw(value: Any, key: str, default: Any) -> Any:
    """The value as YAML left it, for keys whose reading depends on another key."""
    return default if value is None else value


def headers(value: Any, key: str, default: Any = None) -> dict[str, list[str]]:
    """http.headers-style maps: each name to a list of values (a single string is one)."""
    return {
        str(name): text_list(values, f"{key}.{name}")
        for name, values in mapping(value, key).items()
    }


def regex_list(value: Any, key: str, default: Any = None) -> list[str]:
    """Patterns are compiled with Python's re; Go's RE2 syntax is nearly a subset of it."""
    patterns = text_list(value, key)
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            message = f"invalid regular expression {pattern!r}: {exc}"
            raise ConfigError(message, key=f"{key}[{i}]") from exc
    return patterns


def required(why: str) -> Decoder:
    """A string that must be given; the message says what it is for."""

    def decode(value: Any, key: str, default: Any) -> str:
        result = text(value, key)
        if not result:
            raise ConfigError(f"missing; {why}", key=key)
        return result

    return decode


def optional(decode: Decoder) -> Decoder:
    """`decode`, except that an absent key stays None (retention's keep_* are off when unset)."""

    def decode_optional(value: Any, key: str, default: Any) -> Any:
        return None if value is None else decode(value, key, default)

    return decode_optional


# -- helpers the section parsers share


def has_settings(value: Any) -> bool:
    """True when anything under `value` is set: `tls: {}` or `certificate: ""` is not."""
    if isinstance(value, dict):
        return any(has_settings(v) for v in value.values())
    if isinstance(value, list):
        return any(has_settings(v) for v in value)
    return bool(value)


def active_entries(value: Any, key: str) -> list[Any]:
    """Entries of a list (endpoints, hooks, middleware) not marked `disabled: true`."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"expected a list, got {value!r}", key=key)
    return [e for e in value if not (isinstance(e, dict) and e.get("disabled") is True)]


def warn_unknown(section: Mapping[Any, Any], key: str, known: set[str] | frozenset[str]) -> None:
    for name in section:
        if name not in known:
            logger.warning("unknown configuration key %s ignored", f"{key}.{name}" if key else name)


def unsupported(key: str, what: str) -> ConfigError:
    return ConfigError(f"{what} is not supported yet", key=key)


def check_addr(addr: str, key: str, hint: str = "") -> None:
    """A listen/dial address must split as parse_addr splits it; the message names the key."""
    try:
        parse_addr(addr)
    except ValueError as exc:
        raise ConfigError(f"{exc}{hint}", key=key) from exc


def byte_size(value: Any, key: str, default: Any = 0) -> int:
    """A size that may be zero (mirrors' ``maxsize``): ``512MiB``, ``20GB``, ``1.5g`` or bytes."""
    if value is None:
        return int(default or 0)
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = parse_size(str(value))
        except ValueError as exc:
            raise ConfigError(str(exc), key=key) from exc
    if number < 0:
        raise ConfigError("must not be negative", key=key)
    return number
