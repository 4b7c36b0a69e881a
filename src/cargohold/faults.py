"""Fault injection for the crash tests: ``CARGOHOLD_CRASH_AT=<point>:<n>`` kills the process
(``os._exit(137)``, as abrupt as ``kill -9``: no ``finally``, no flush) the ``n``-th time the
named point is reached (``n`` defaults to 1). The named points sit between the steps of every
multi-file operation listed in ``docs/ordering.md``; the tests kill the server at each one and
then require ``cargohold fsck`` to find the store clean.

The variable is read once, at import; when it is unset :func:`crash_point` is one comparison.
"""

from __future__ import annotations

import os
import sys

ENV = "CARGOHOLD_CRASH_AT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, count = value.partition(":")
    try:
        return point, max(int(count or "1"), 1)
    except ValueError:
        return point, 1


_target = _parse(os.environ.get(ENV))
_hits = 0


def crash_point(name: str) -> None:
    """Die here when the environment asks for it (see the module docstring)."""
    global _hits
    if _target is None or _target[0] != name:
        return
    _hits += 1
    if _hits >= _target[1]:
        sys.stderr.write(f"cargohold: {ENV}: crashing at {name} (hit {_hits})\n")
        sys.stderr.flush()
        os._exit(137)
