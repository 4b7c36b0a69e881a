"""registry:2's ``storage.filesystem`` parameters, beside the filesystem driver.

Names, defaults and limits are registry:2's (``registry/storage/driver/filesystem``): the root
directory, and ``maxthreads``, which registry:2 raises to its minimum rather than refusing;
plus cargohold's ``fsync`` (README: "Durability"), which registry:2 would reject as unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cargohold.storage.params import DriverParams, ParamError, Warn, flag, integer, text

DEFAULT_ROOTDIRECTORY = "/var/lib/registry"
MIN_THREADS, DEFAULT_THREADS = 25, 100


def parse_filesystem_params(params: Mapping[str, Any], warn: Warn) -> dict[str, Any]:
    """The parameters with ``rootdirectory`` (str), ``maxthreads`` (int) and ``fsync`` (bool)
    always set."""
    root = text(params, "rootdirectory", DEFAULT_ROOTDIRECTORY)
    if not root:
        raise ParamError("rootdirectory", "must not be empty")
    threads = integer(params, "maxthreads", DEFAULT_THREADS)
    if threads < MIN_THREADS:  # registry:2 raises it to the minimum too
        warn("maxthreads", f"{threads} raised to {MIN_THREADS}")
        threads = MIN_THREADS
    fsync = flag(params, "fsync", False)
    return {**params, "rootdirectory": root, "maxthreads": threads, "fsync": fsync}


PARAMS = DriverParams(
    frozenset({"rootdirectory", "maxthreads", "fsync"}), parse_filesystem_params
)
