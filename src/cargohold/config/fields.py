"""The declarative field table: each key of a section written once, with its decoder.

A :class:`Section` lists the keys registry:2 (or cargohold) reads under one dotted key. Reading
it does what every section parser used to do by hand: check the section is a mapping, warn about
(or, when ``strict``, refuse) keys it does not know at every level, decode each key with the
row's decoder (whose errors name the full dotted key), and fill in the default. The default is
the row's own when given, else the model dataclass's, so it is written once either way.

Nested keys are dotted in the row (``pool.maxidle``); the mapping on the way (``pool``) is
checked and its unknown keys warned about as the section's are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from cargohold.config.values import ConfigError, Decoder, mapping, warn_unknown

T = TypeVar("T")


class _Unset:
    """A row without a default of its own: the model's is used."""


MISSING: Any = _Unset()


@dataclass(frozen=True)
class Field:
    """One key of a section.

    ``attr`` is the model's attribute (default: the key with dots as underscores); ``keep=False``
    rows are checked and dropped (keys registry:2 has that change nothing here). ``label``
    replaces the key in messages where the documented spelling differs from the YAML one.
    """

    key: str
    decode: Decoder
    default: Any = MISSING
    attr: str = ""
    keep: bool = True
    label: str = ""

    @property
    def name(self) -> str:
        return self.attr or self.key.replace(".", "_")


@dataclass(frozen=True)
class Section(Generic[T]):
    """The table of one section: its dotted key, the model it fills, and its rows.

    ``also`` are further keys known at the top that the section's parser reads by hand (lists
    of entries, driver names...); ``check_unknown=False`` leaves the top level unchecked (the
    storage section, whose other keys name drivers).
    """

    key: str
    model: type[T]
    fields: tuple[Field, ...]
    also: frozenset[str] = frozenset()
    strict: bool = False
    check_unknown: bool = True

    def read(self, value: Any, key: str | None = None) -> dict[str, Any]:
        """Decode every row of `value` (the section as YAML left it) into {attr: value}.

        `key` replaces the section's key for entries of a list (``access.rules[2]``).
        """
        key = self.key if key is None else key
        section = mapping(value, key)
        self._check_keys(section, key, "", self.check_unknown)
        defaults = _model_defaults(self.model)
        values: dict[str, Any] = {}
        for row in self.fields:
            *parents, last = row.key.split(".")
            node = section
            for depth in range(len(parents)):
                node = mapping(node.get(parents[depth]), _join(key, parents[: depth + 1]))
            default = row.default if row.default is not MISSING else defaults.get(row.name)
            label = _join(key, [row.label]) if row.label else _join(key, [*parents, last])
            decoded = row.decode(node.get(last), label, default)
            if row.keep:
                values[row.name] = decoded
        return values

    def build(self, value: Any, key: str | None = None, **extra: Any) -> T:
        """The model filled from `value`; `extra` are attributes the parser worked out itself."""
        return self.model(**self.read(value, key), **extra)

    def _check_keys(self, node: dict[str, Any], key: str, prefix: str, check: bool) -> None:
        rows = [r.key[len(prefix) :] for r in self.fields if r.key.startswith(prefix)]
        known = {r.split(".")[0] for r in rows} | (self.also if not prefix else set())
        if check:
            for name in node:
                if name in known:
                    continue
                if self.strict:
                    expected = ", ".join(sorted(known))
                    raise ConfigError(f"unknown key (expected {expected})", key=f"{key}.{name}")
                warn_unknown({name: None}, key, known)
        for child in sorted({r.split(".")[0] for r in rows if "." in r}):
            if child in node:
                value = mapping(node[child], f"{key}.{child}")
                self._check_keys(value, f"{key}.{child}", f"{prefix}{child}.", True)


def _join(key: str, parts: Iterable[str]) -> str:
    return ".".join([key, *parts]) if key else ".".join(parts)


def _model_defaults(model: type[Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    if not dataclasses.is_dataclass(model):
        return defaults
    for item in dataclasses.fields(model):
        if item.default is not dataclasses.MISSING:
            defaults[item.name] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            defaults[item.name] = item.default_factory()
    return defaults
