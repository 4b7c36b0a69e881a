"""``storage.inmemory`` parameters, beside the in-memory driver: it takes none (as registry:2's)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cargohold.storage.params import DriverParams, Warn


def parse_inmemory_params(params: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    """Whatever was given is kept (and warned about as unknown by config); nothing is read."""
    return dict(params)


PARAMS = DriverParams(frozenset(), parse_inmemory_params)
