"""Concurrent calls for one key that share one running call.

A pull storm's clients ask for the same few files and manifests at once, before any answer is
cached, and a login burst checks one password many times: one call runs per key and the others
await it. Callers await it through ``asyncio.shield``, so one that is cancelled leaves the
others their answer. What a caller does when a shared call fails is its own business (the
storage cache and the manifest store ask again themselves); the table only runs and forgets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def running(self, key: K) -> asyncio.Future[V] | None:
        """The call under way for ``key``, if any (await it shielded)."""
        return self._running.get(key)

    def start(self, key: K, call: Coroutine[Any, Any, V]) -> asyncio.Future[V]:
        task = asyncio.ensure_future(call)
        self._running[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return task

    def clear(self) -> None:
        """Forget the calls under way: a caller arriving after this starts its own call, since
        an answer already on its way may predate what made the caller clear the table."""
        self._running.clear()

    def _finished(self, key: K, task: asyncio.Future[V]) -> None:
        if self._running.get(key) is task:  # not a newer call for the key, after a clear()
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone (cancelled requests)
