"""The audit trail: who pushed, moved, deleted or was refused what, one JSON line each.

Everything goes through the ``cargohold.audit`` logger that refusals have always used: each record
carries its facts as ``record.audit`` (a dict) next to the human-readable message, so the ordinary
log keeps its text lines, and ``log.audit.path`` (cargohold) adds a handler that writes the dict
alone, as one JSON object per line, to a file (appended to, never truncated: every worker opens it
with ``O_APPEND``, so whole lines from several processes never interleave) or, with ``-`` or
``stdout``, to standard output::

    {"time": "2026-12-03T10:31:02.512Z", "action": "push", "outcome": "ok", "user": "ci",
     "addr": "10.0.0.7", "repository": "team/app", "reference": "v1.2", "digest": "sha256:..."}

``action`` is one of ``push``, ``tag-move`` (a push that moved an existing tag: ``previous`` is
where it pointed), ``delete``, ``upload`` (refused blobs only), ``mount`` (refused mounts),
``login`` and ``access``; ``outcome`` is ``ok``, ``denied`` (403),
``unauthorized`` (401), ``locked-out`` (429) or the error code of another refusal; ``reason``
says why. Credentials never reach a record: no header is recorded, paths are recorded without
their query string, and reasons are built from fixed text and names.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO, Any

audit = logging.getLogger("cargohold.audit")

STDOUT = ("-", "stdout")


def record(
    action: str,
    outcome: str,
    *,
    user: str | None,
    addr: str | None,
    repository: str = "",
    reference: str = "",
    level: int = logging.INFO,
    message: str | None = None,
    **facts: Any,
) -> None:
    """Log one audit record; ``message`` is the text line (default: built from the facts)."""
    entry: dict[str, Any] = {
        "action": action,
        "outcome": outcome,
        "user": user,
        "addr": addr,
        "repository": repository,
        "reference": reference,
    }
    entry.update((k, v) for k, v in facts.items() if v not in (None, ""))
    if message is None:
        message = " ".join(f"{k}={v}" for k, v in entry.items() if v not in (None, ""))
    audit.log(level, "%s", message, extra={"audit": entry})


class JsonLines(logging.Handler):
    """Writes the ``audit`` dict of each record as one JSON line (records without one: skipped)."""

    def __init__(self, path: str) -> None:
        super().__init__(logging.INFO)
        self.path = path
        self._stream: IO[str] | None = None
        self._fd: int | None = None
        if path not in STDOUT:
            # O_APPEND: every write lands at the end, whole, whichever worker writes it.
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def emit(self, record: logging.LogRecord) -> None:
        entry = getattr(record, "audit", None)
        if not isinstance(entry, dict):
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = json.dumps(
            {"time": f"{stamp}.{int(record.msecs):03d}Z", **entry}, separators=(", ", ": ")
        )
        try:
            if self._fd is not None:
                os.write(self._fd, (line + "\n").encode())
            else:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except OSError:
            self.handleError(record)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


def setup(path: str) -> None:
    """Send audit records to ``path`` (a file, or ``-``/``stdout``) besides the ordinary log.

    Replaces the handler of an earlier call (a reload that changes the path). Raises OSError
    when the file cannot be opened."""
    handler = JsonLines(path) if path else None
    for old in [h for h in audit.handlers if isinstance(h, JsonLines)]:
        audit.removeHandler(old)
        old.close()
    if handler is not None:
        audit.addHandler(handler)
        if audit.level == logging.NOTSET or audit.level > logging.INFO:
            audit.setLevel(logging.INFO)  # the trail is complete whatever log.level says
