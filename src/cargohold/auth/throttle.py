"""Failed-login throttling: after ``limit`` failures within ``window`` seconds for one
(user, client address), further attempts are refused (429 with ``Retry-After``) until the
oldest of those failures is ``window`` seconds old. Counted per process: with N workers an
attacker gets at most N times the limit, still far too few guesses to matter.
"""

from __future__ import annotations

import math
import time
from collections import deque

DEFAULT_LIMIT = 5
DEFAULT_WINDOW = 60.0
MAX_KEYS = 50_000


class Throttle:
    def __init__(self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: tuple[str, str]) -> int | None:
        """Seconds to wait before ``key`` may try again, or None when it may try now."""
        now = time.monotonic()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return None
        return max(1, math.ceil(times[-self.limit] + self.window - now))

    def failure(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        if len(self._failures) >= MAX_KEYS:
            for old in list(self._failures):
                self._recent(old, now)
            if len(self._failures) >= MAX_KEYS:
                self._failures.clear()
        times = self._failures.setdefault(key, deque(maxlen=self.limit))
        times.append(now)

    def success(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)
