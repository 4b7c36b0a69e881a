"""Scopes and grants: what a request asks for and what a bearer token allows.

Kept apart from :mod:`cargohold.auth.tokens` so that a registry without token auth never
imports PyJWT and cryptography (about 15 MiB of resident memory in every worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message says why (never the token)."""


@dataclass(frozen=True)
class Scope:
    """``type:name:actions``, e.g. ``repository:team/app:pull,push`` or ``registry:catalog:*``."""

    type: str
    name: str
    actions: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        kind, sep, rest = text.partition(":")
        name, sep2, actions = rest.rpartition(":")
        if not (sep and sep2 and kind and name):
            return None
        return cls(kind, name, tuple(dict.fromkeys(a for a in actions.split(",") if a)))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Scopes from ``scope`` parameters (each may hold several, space-separated), merged."""
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for value in values:
        for part in value.split():
            scope = Scope.parse(part)
            if scope is not None:
                merged.setdefault((scope.type, scope.name), {}).update(dict.fromkeys(scope.actions))
    return [Scope(kind, name, tuple(actions)) for (kind, name), actions in merged.items()]


class Grants:
    """What a token allows: actions per (type, name)."""

    def __init__(self, entries: Iterable[tuple[str, str, Iterable[str]]] = ()) -> None:
        self._map: dict[tuple[str, str], frozenset[str]] = {}
        for kind, name, actions in entries:
            key = (kind, name)
            self._map[key] = self._map.get(key, frozenset()) | frozenset(actions)

    @classmethod
    def from_claim(cls, claim: Any) -> Grants:
        if claim is None:
            return cls()
        if not isinstance(claim, list):
            raise InvalidToken("access claim is not a list")
        entries = []
        for item in claim:
            if not isinstance(item, dict):
                raise InvalidToken("access claim entry is not an object")
            kind, name, actions = item.get("type"), item.get("name"), item.get("actions") or []
            if not isinstance(kind, str) or not isinstance(name, str):
                raise InvalidToken("access claim entry without type or name")
            if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
                raise InvalidToken("access claim actions are not a list of strings")
            entries.append((kind, name, actions))
        return cls(entries)

    def actions(self, kind: str, name: str) -> frozenset[str]:
        granted = self._map.get((kind, name), frozenset())
        if "*" in granted:
            return granted | {"pull", "push", "delete", "*"}
        return granted

    def to_claim(self) -> list[dict[str, Any]]:
        return [
            {"type": kind, "name": name, "actions": sorted(actions)}
            for (kind, name), actions in self._map.items()
            if actions
        ]
