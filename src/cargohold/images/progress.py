"""Progress for import and export: live bars on a terminal, plain log lines otherwise.

Moving a multi-gigabyte image takes long enough that a silent command looks hung, so on a
terminal every blob gets a bar with bytes, rate and time left (drawn by ``rich``). When stdout is
not a terminal (CI logs, pipes) bars would be noise: each step then prints one line when it
finishes, and a long one prints a line now and then with how far it got. Work happens in threads
(hashing, compressing) and in the event loop (uploads), so every method is thread-safe.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import Progress as RichProgress

PLAIN_REPORT_INTERVAL = 10.0  # seconds between "still going" lines for one long step


def human_size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def short_digest(digest: str) -> str:
    alg, _, hexpart = digest.partition(":")
    return f"{alg}:{hexpart[:12]}" if hexpart else digest


class Task:
    """One step with a byte count (a blob being verified, uploaded, fetched or written)."""

    def __init__(self, progress: Progress, label: str, total: int | None) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.last_report = self.started
        self.rich_id: Any = None
        self.finished = False

    def advance(self, n: int) -> None:
        self.progress._advance(self, n)

    def finish(self, note: str = "") -> None:
        self.progress._finish(self, note)


class Progress:
    """Factory of :class:`Task`; ``mode`` is ``rich``, ``plain`` or ``quiet``."""

    def __init__(self, mode: str | None = None, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        if mode is None:
            mode = "rich" if self.stream.isatty() else "plain"
        self._rich: RichProgress | None = None
        if mode == "rich":
            self._console = Console(file=self.stream)
            self._rich = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
        self.mode = mode
        self._lock = threading.Lock()
        self._started = False

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.start()
            self._started = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._rich is not None and self._started:
            self._rich.stop()
            self._started = False

    # -- tasks -------------------------------------------------------------------------------

    def task(self, label: str, total: int | None) -> Task:
        task = Task(self, label, total)
        if self._rich is not None:
            with self._lock:
                task.rich_id = self._rich.add_task(label, total=total)
        return task

    def _advance(self, task: Task, n: int) -> None:
        with self._lock:
            task.done += n
            if self._rich is not None:
                self._rich.update(task.rich_id, advance=n)
                return
            if self.mode != "plain":
                return
            now = time.monotonic()
            if now - task.last_report >= PLAIN_REPORT_INTERVAL:
                task.last_report = now
                self._line(f"  {task.label}: {self._numbers(task, now)}")

    def _finish(self, task: Task, note: str) -> None:
        with self._lock:
            if task.finished:
                return
            task.finished = True
            if self._rich is not None:
                total = task.total if task.total is not None else task.done
                self._rich.update(
                    task.rich_id,
                    total=total,
                    completed=total,
                    description=f"{task.label} {note}".rstrip(),
                )
                return
            if self.mode == "plain":
                now = time.monotonic()
                suffix = f" {note}" if note else ""
                self._line(f"{task.label}{suffix}: {self._numbers(task, now, final=True)}")

    @staticmethod
    def _numbers(task: Task, now: float, final: bool = False) -> str:
        elapsed = max(now - task.started, 1e-6)
        rate = task.done / elapsed
        if final:
            return f"{human_size(task.done)} in {elapsed:.1f}s ({human_size(rate)}/s)"
        text = human_size(task.done)
        if task.total:
            pct = 100.0 * task.done / task.total
            text = f"{text} of {human_size(task.total)} ({pct:.0f}%)"
            if rate > 0:
                text += f", {human_size(rate)}/s, {(task.total - task.done) / rate:.0f}s left"
        return text

    # -- messages ----------------------------------------------------------------------------

    def info(self, message: str) -> None:
        """A line of the log (plain) or printed above the bars (rich); nothing when quiet."""
        if self.mode == "quiet":
            return
        with self._lock:
            if self._rich is not None:
                self._console.print(message, markup=False, highlight=False)
            else:
                self._line(message)

    def result(self, message: str) -> None:
        """The summary: printed in every mode, quiet included, since it is the command's answer."""
        with self._lock:
            if self._rich is not None:
                self._console.print(message, markup=False, highlight=False)
            else:
                self._line(message)

    def warn(self, message: str) -> None:
        with self._lock:
            if self._rich is not None:
                self._console.print(f"warning: {message}", markup=False, highlight=False)
            else:
                print(f"warning: {message}", file=sys.stderr, flush=True)

    def _line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
