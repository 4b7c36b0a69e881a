"""Acting while a server is held at a named pause point (``CARGOHOLD_PAUSE_AT=<point>:<fifo>``,
see ``cargohold.faults.pause_point``): the race a test needs happens every time, not by luck."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.waiting import eventually


@contextmanager
def held(fifo: Path, timeout: float = 60) -> Iterator[None]:
    """Enter once the server waits at its point (its process, event loop and all); on leaving,
    let it go on. The FIFO opens for writing only once the server has it open for reading."""
    writer: list[int] = []

    def waiting() -> bool:
        try:
            writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: nobody reads it yet
            return False
        return True

    try:
        eventually(waiting, timeout=timeout)
        yield
    finally:
        for fd in writer:
            os.close(fd)  # go on
