"""What every driver's parameter module shares: the error, the decoders, the entry config reads.

Each driver's ``storage.<driver>`` parameters are read beside the driver (``fsparams``,
``memparams``, ``s3params``), in modules that import nothing but the standard library and this
one, so that loading a configuration never imports a driver (or aiobotocore). The config
package imports them, never the other way round: config -> storage parameter modules is the one
direction, and a new driver adds its parameter module and one line to config's driver table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ParamError(ValueError):
    """A bad driver parameter; config reports it as ``storage.<driver>.<key>: <message>``."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


Warn = Callable[[str, str], None]  # (key, message): a problem the driver works around


@dataclass(frozen=True)
class DriverParams:
    """A driver's parameter reader: the keys it knows and how it validates them.

    ``parse`` returns the parameters the driver will be given (normalised: defaults filled in)
    and raises :class:`ParamError`; keys outside ``known`` are warned about by the caller.
    """

    known: frozenset[str]
    parse: Callable[[Mapping[str, Any], Warn], dict[str, Any]]


def text(params: Mapping[str, Any], key: str, default: str = "") -> str:
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ParamError(key, f"expected a string, got {value!r}")


def flag(params: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean, or a string Go's strconv.ParseBool accepts (registry:2 takes both)."""
    value = params.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "t", "true"):
            return True
        if lowered in ("0", "f", "false"):
            return False
    raise ParamError(key, f"expected a boolean, got {value!r}")


def integer(
    params: Mapping[str, Any],
    key: str,
    default: int,
    low: int | None = None,
    high: int | None = None,
) -> int:
    value = params.get(key)
    if value is None:
        number = default
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
        number = int(value)
    else:
        raise ParamError(key, f"expected an integer, got {value!r}")
    if low is not None and high is not None and not low <= number <= high:
        raise ParamError(key, f"must be between {low} and {high}, got {number}")
    return number


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


def duration(
    params: Mapping[str, Any], key: str, default: float, low: float, high: float
) -> float:
    """Seconds, from a Go duration (``500ms``, ``1m``) or a plain number of seconds, within
    ``[low, high]``. Both spellings are taken because YAML and ``REGISTRY_*`` overrides hand a
    bare ``30`` over as a number."""
    value = params.get(key)
    if value is None:
        seconds = default
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value.strip())
        except ValueError as exc:
            raise ParamError(key, str(exc)) from None
    else:
        raise ParamError(key, f"expected a duration like '5s' or '500ms', got {value!r}")
    if not low <= seconds <= high:
        raise ParamError(key, f"must be between {low:g}s and {high:g}s, got {value!r}")
    return seconds


def parse_duration(text: str) -> float:
    """Parse a Go duration (`168h`, `1h30m`, `1.5s`, `250ms`, `-1m`, `0`) into seconds.

    It lives here, not in the config package, so that driver parameter modules can read
    durations without importing config (config imports them); config re-exports it.

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
