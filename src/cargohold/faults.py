"""Fault injection for the crash tests: ``CARGOHOLD_CRASH_AT=<point>:<n>`` kills the process
(``os._exit(137)``, as abrupt as ``kill -9``: no ``finally``, no flush) the ``n``-th time the
named point is reached (``n`` defaults to 1). The named points sit between the steps of every
multi-file operation listed in ``docs/ordering.md``; the tests kill the server at each one and
then require ``cargohold fsck`` to find the store clean.

``CARGOHOLD_PAUSE_AT=<point>:<fifo>`` holds the process at a named point instead, for a test
that must act exactly between two steps (remove a file after it was found and before it is
opened): see :func:`pause_point`.

The variables are read once, at import; unset, each point is one comparison.
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


PAUSE_ENV = "CARGOHOLD_PAUSE_AT"
_pause_point, _, _pause_fifo = (os.environ.get(PAUSE_ENV) or "").partition(":")


def pause_point(name: str) -> None:
    """Hold the whole process here (the event loop too) each time the point is reached, when
    the environment names it: open the FIFO for reading, whose open for writing then returns
    in the test (the process is here), and read it to its end (the test closes it: go on)."""
    if name != _pause_point or not _pause_fifo:
        return
    with open(_pause_fifo, "rb") as fifo:
        fifo.read()
